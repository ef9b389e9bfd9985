// Weight shards kept in the browser's Cache API between visits, so a second visit downloads no
// weight bytes. Why the Cache API and not OPFS: it is in every engine's secure contexts (OPFS
// writes need a worker in Safari), and an entry is written whole or not at all.
//
// Keys are synthetic URLs that are never requested from a server:
//   <bundle folder>/.ulpq-weights/<sha256 of the shard>
// The sha256 in the key means a rebuilt bundle (new bytes, new sha256) never meets an old entry;
// the folder in the key means one bundle's entries are never used for another (a copy of a
// bundle with a tampered shard still fails its own check) and clearCache(bundle) can find them.
// The loader (bundle_loader.js fetchShards) checks a cached entry against the manifest's sha256
// again on every read and hands this module only bytes it has verified.

export const CACHE_NAME = 'ulpq-weights-v1';
const KEY_FOLDER = '.ulpq-weights/';

const folderOf = (url) => new URL('.', url).href;
const keyFor = (folder, sha256) => `${folder}${KEY_FOLDER}${sha256}`;

// One console warning per kind per page: a page that loads ten models is told once.
const warned = new Set();
function warnOnce(kind, message) {
  if (warned.has(kind)) return;
  warned.add(kind);
  console.warn(`ulpq: ${message}`);
}

/** Why this environment has no Cache API to use, in words for a note. */
function missingReason() {
  if (globalThis.isSecureContext === false) {
    return 'this page is not a secure context (https:// or http://127.0.0.1 / localhost), where browsers offer no Cache API';
  }
  return 'this JavaScript environment has no Cache API (Node.js, or a browser without it)';
}

/**
 * The cache of one bundle folder for one load. status: 'on' (the Cache API is used), 'off'
 * (the caller passed cache: false) or 'unavailable' (no Cache API, or it would not open; the
 * reason is in notes). Failures inside never throw: a cache that does not work is a note and
 * a download, never a failed load.
 */
class WeightCache {
  #cache = null;
  #folder;
  #writes = [];
  #writable = true;

  constructor(folder, status, cache = null) {
    this.#folder = folder;
    this.status = status;
    this.#cache = cache;
    this.notes = [];
  }

  /** The cached bytes of `shard` (not yet verified: the caller checks them), or null. */
  async read(shard) {
    if (!this.#cache) return null;
    try {
      const response = await this.#cache.match(keyFor(this.#folder, shard.sha256));
      return response ? new Uint8Array(await response.arrayBuffer()) : null;
    } catch (err) {
      this.notes.push(`reading ${shard.file} from the weight cache did not work (${err?.name ?? 'Error'}: ${err?.message ?? err}); downloaded it`);
      return null;
    }
  }

  /** A cached entry that did not match the manifest: delete it (the caller downloads the shard). */
  async discard(shard, why) {
    this.notes.push(`the cached copy of ${shard.file} ${why}; deleted it and downloaded the shard again`);
    try {
      await this.#cache.delete(keyFor(this.#folder, shard.sha256));
    } catch { /* the download's write replaces it anyway */ }
  }

  /** Store verified bytes (in the background; finish() waits). A full quota stops further writes. */
  write(shard, bytes) {
    if (!this.#cache || !this.#writable) return;
    const response = new Response(bytes, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length) } });
    const key = keyFor(this.#folder, shard.sha256);
    this.#writes.push(this.#cache.put(key, response).then(() => key, (err) => {
      if (!this.#writable) return;
      this.#writable = false;
      const quota = err?.name === 'QuotaExceededError';
      const what = quota ? 'the browser\'s storage quota is full (QuotaExceededError)'
        : `the Cache API refused the write (${err?.name ?? 'Error'}: ${err?.message ?? err})`;
      const note = `weights not cached: ${what}; ${shard.file} and later shards will be downloaded again on the next visit`;
      this.notes.push(note);
      warnOnce(quota ? 'quota' : 'write', note);
      return null;
    }));
  }

  /** Wait for the writes, then drop this folder's entries that the manifest no longer lists (an old build's). */
  async finish(manifest) {
    const written = (await Promise.all(this.#writes)).filter(Boolean);
    this.#writes = [];
    if (!this.#cache) return;
    // A write the browser accepted but did not keep is said, not assumed away: WebKitGTK's
    // ephemeral (automation) sessions resolve such puts and drop the entry.
    for (const key of written) {
      if (!(await this.#cache.match(key).catch(() => null))) {
        const note = 'the browser accepted the weights into its Cache API but did not keep them; they will be downloaded again on the next visit';
        this.notes.push(note);
        warnOnce('dropped', note);
        break;
      }
    }
    const current = new Set(manifest.shards.map((s) => keyFor(this.#folder, s.sha256)));
    const prefix = `${this.#folder}${KEY_FOLDER}`;
    try {
      for (const request of await this.#cache.keys()) {
        if (request.url.startsWith(prefix) && !current.has(request.url)) await this.#cache.delete(request);
      }
    } catch { /* stale entries only cost space; clearCache() removes them */ }
  }
}

/**
 * The weight cache for the bundle whose manifest is at `baseUrl`. `enabled` false gives status
 * 'off'. file: URLs (Node reading a bundle from disk) are never cached: there is no download to
 * save (status 'unavailable', no note).
 */
export async function openWeightCache(baseUrl, enabled = true) {
  const folder = folderOf(baseUrl);
  if (!enabled) return new WeightCache(folder, 'off');
  if (!/^https?:$/.test(new URL(folder).protocol)) return new WeightCache(folder, 'unavailable');
  let why;
  if (!globalThis.caches) {
    why = missingReason();
  } else {
    try {
      return new WeightCache(folder, 'on', await globalThis.caches.open(CACHE_NAME));
    } catch (err) { // Firefox private windows, storage disabled by the user
      why = `the Cache API would not open (${err?.name ?? 'Error'}: ${err?.message ?? err})`;
    }
  }
  const store = new WeightCache(folder, 'unavailable');
  const note = `weight cache unavailable: ${why}; weights are downloaded on every load`;
  store.notes.push(note);
  warnOnce('unavailable', note);
  return store;
}

/**
 * Delete cached weights: every entry of this runtime's cache, or only those of the bundle folder
 * `folderUrl` (an absolute URL ending in '/'). Resolves to the number of entries deleted (0 where
 * there is no Cache API).
 */
export async function clearWeightCache(folderUrl = null) {
  if (!globalThis.caches || !(await caches.has(CACHE_NAME))) return 0;
  if (folderUrl === null) {
    const count = (await (await caches.open(CACHE_NAME)).keys()).length;
    await caches.delete(CACHE_NAME);
    return count;
  }
  const cache = await caches.open(CACHE_NAME);
  const prefix = `${folderUrl}${KEY_FOLDER}`;
  let count = 0;
  for (const request of await cache.keys()) {
    if (request.url.startsWith(prefix)) {
      await cache.delete(request);
      count += 1;
    }
  }
  return count;
}
