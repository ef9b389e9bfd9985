// Fetch a bundle: the manifest, then every weight shard with progress events, each verified
// against the manifest's sha256 before a single byte of it is used.

export const SUPPORTED_SCHEMA = 1;

export class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

export class IntegrityError extends BundleError {
  constructor(message) { super(message); this.name = 'IntegrityError'; }
}

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) {
    throw new BundleError('cannot verify the bundle: SubtleCrypto needs a secure context (https:// or http://127.0.0.1)');
  }
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new BundleError(`${url}: request failed (${err.message})`);
  }
  if (!response.ok) throw new BundleError(`${url}: HTTP ${response.status} ${response.statusText}`);
  return response;
}

export async function fetchManifest(manifestUrl) {
  const response = await fetchOk(manifestUrl);
  let manifest;
  try {
    manifest = await response.json();
  } catch (err) {
    throw new BundleError(`${manifestUrl}: not valid JSON (${err.message})`);
  }
  if (manifest.schema_version !== SUPPORTED_SCHEMA) {
    throw new BundleError(`${manifestUrl}: schema_version ${manifest.schema_version}, this runtime reads ${SUPPORTED_SCHEMA}; rebuild the bundle`);
  }
  return manifest;
}

/** Fetch a text file of the bundle (a shader) and check it against its sha256. */
export async function fetchVerifiedText(baseUrl, file, expectedSha) {
  const bytes = new Uint8Array(await (await fetchOk(new URL(file, baseUrl))).arrayBuffer());
  const actual = await sha256Hex(bytes);
  if (actual !== expectedSha) {
    throw new IntegrityError(`${file}: sha256 mismatch (expected ${expectedSha.slice(0, 12)}..., got ${actual.slice(0, 12)}...); the file was changed after the build; rebuild or re-upload the bundle`);
  }
  return new TextDecoder().decode(bytes);
}

/**
 * Download every shard, reporting {phase, file, loaded, total} to onProgress, and return
 * Map(file -> Uint8Array) of verified bytes.
 */
export async function fetchShards(manifest, baseUrl, onProgress = () => {}) {
  const total = manifest.shards.reduce((sum, s) => sum + s.bytes, 0);
  let loaded = 0;
  const out = new Map();
  onProgress({ phase: 'weights', file: null, loaded, total });
  for (const shard of manifest.shards) {
    const response = await fetchOk(new URL(shard.file, baseUrl));
    const bytes = new Uint8Array(shard.bytes);
    let filled = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > bytes.length) {
        throw new IntegrityError(`${shard.file}: larger than the ${shard.bytes} bytes the manifest lists; rebuild or re-upload the bundle`);
      }
      bytes.set(value, filled);
      filled += value.length;
      loaded += value.length;
      onProgress({ phase: 'weights', file: shard.file, loaded, total });
    }
    if (filled !== bytes.length) {
      throw new IntegrityError(`${shard.file}: ${filled} bytes received, the manifest lists ${shard.bytes}; the upload is incomplete`);
    }
    const actual = await sha256Hex(bytes);
    if (actual !== shard.sha256) {
      throw new IntegrityError(`${shard.file}: sha256 mismatch (expected ${shard.sha256.slice(0, 12)}..., got ${actual.slice(0, 12)}...); the shard was modified or corrupted, rebuild or re-upload the bundle`);
    }
    out.set(shard.file, bytes);
  }
  onProgress({ phase: 'verified', file: null, loaded, total });
  return out;
}

const VIEWS = { uint32: Uint32Array, float32: Float32Array, float16: Uint16Array, uint8: Uint8Array };

/** Map(tensor name -> {entry, parts: {name: {bytes, values}}}) over the verified shard bytes. */
export function tensorTable(manifest, shardBytes) {
  const table = new Map();
  for (const entry of manifest.tensors) {
    const parts = {};
    for (const [name, ref] of Object.entries(entry.parts)) {
      const shard = shardBytes.get(ref.file);
      const bytes = shard.subarray(ref.offset, ref.offset + ref.length);
      const View = VIEWS[ref.dtype];
      if (!View) throw new BundleError(`tensor ${entry.name}: part ${name} has dtype ${ref.dtype}, unknown to this runtime`);
      const values = new View(shard.buffer, shard.byteOffset + ref.offset, ref.length / View.BYTES_PER_ELEMENT);
      parts[name] = { bytes, values };
    }
    table.set(entry.name, { entry, parts });
  }
  return table;
}
