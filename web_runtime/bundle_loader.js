// Fetch a bundle: the manifest, then every weight shard with progress events, each verified
// against the manifest's sha256 before a single byte of it is used.

import { ARCHITECTURES, architectureOf, tokenizerFile } from './architectures.js';
import { openWeightCache } from './weight_cache.js';

export const SUPPORTED_SCHEMA = 2; // 2: shaders map kernel keys to shader_files, each distinct WGSL once

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
  checkManifest(manifest, String(manifestUrl));
  return manifest;
}

// The manifest's schema (ulpq_build/bundle.py writes it): the fields this runtime reads, with their
// types; each architecture's own model fields are in its row (architectures.js). A schema is a type
// name, [schema] (an array of it), {'*': schema} (an object of it) or an object of fields (a '?'
// suffix marks an optional one). Extra fields are allowed (newer writers).
const ENTRY_FILE = { file: 'file', bytes: 'uint', sha256: 'sha256' };
const MANIFEST_SCHEMA = {
  schema_version: 'uint',
  model: { name: 'string', architecture: 'string', output: 'string' },
  'quantization?': { default: { format: 'string' } },
  formats: { '*': { name: 'string', bits: 'uint' } },
  profiles: [{ name: 'string', variant: 'string', workgroup_size: 'uint', user_agent: 'string', limits: { '*': 'number' },
    required_limits: { '*': 'number' } }],
  tensors: [{ name: 'string', shape: ['uint'], format: 'string',
    parts: { '*': { file: 'file', offset: 'uint', length: 'uint', dtype: 'string' } } }],
  shards: [ENTRY_FILE],
  shaders: [{ key: 'string', profile: 'string', file: 'file' }],
  shader_files: [ENTRY_FILE],
  files: [ENTRY_FILE],
  matmul: { gemv_max_rows: 'uint', gemm_large_rows: 'uint' },
};
const TYPES = {
  string: (v) => typeof v === 'string' || 'a string',
  number: (v) => (typeof v === 'number' && Number.isFinite(v)) || 'a finite number',
  uint: (v) => (Number.isSafeInteger(v) && v >= 0) || 'a non-negative integer',
  bool: (v) => v === null || typeof v === 'boolean' || 'true, false or null',
  object: (v) => (v !== null && typeof v === 'object' && !Array.isArray(v)) || 'an object',
  sha256: (v) => (typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)) || 'a sha256 (64 lowercase hex digits)',
  // Bundle files stay inside the bundle: relative names, no '..', no scheme, no query.
  file: (v) => (typeof v === 'string' && /^[A-Za-z0-9_][A-Za-z0-9._/-]*$/.test(v) && !v.split('/').includes('..'))
    || 'a file name inside the bundle (letters, digits, . _ - /, no ..)',
};

function show(value) {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

function checkShape(value, schema, where, fail) {
  if (typeof schema === 'string') {
    const verdict = TYPES[schema](value);
    if (verdict !== true) fail(where, `must be ${verdict}, not ${show(value)}`);
    return;
  }
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) fail(where, `must be an array, not ${show(value)}`);
    value.forEach((item, i) => checkShape(item, schema[0], `${where}[${i}]`, fail));
    return;
  }
  if (TYPES.object(value) !== true) fail(where, `must be an object, not ${show(value)}`);
  if ('*' in schema) {
    for (const [key, item] of Object.entries(value)) checkShape(item, schema['*'], `${where}.${key}`, fail);
    return;
  }
  for (const [field, sub] of Object.entries(schema)) {
    const optional = field.endsWith('?');
    const key = optional ? field.slice(0, -1) : field;
    if (!(key in value)) {
      if (optional) continue;
      fail(`${where}.${key}`, 'is missing');
    }
    checkShape(value[key], sub, `${where}.${key}`, fail);
  }
}

const ELEMENT_BYTES = { uint32: 4, float32: 4, float16: 2, uint8: 1 };

/**
 * Check a parsed manifest against MANIFEST_SCHEMA and its internal references (each tensor part
 * inside a listed shard, in a known dtype); a BundleError names the first field that fails.
 */
export function checkManifest(manifest, source = 'manifest.json') {
  const fail = (field, problem) => {
    throw new BundleError(`${source}: manifest field ${field} ${problem}; rebuild the bundle with ulpq_build`);
  };
  if (TYPES.object(manifest) !== true) {
    throw new BundleError(`${source}: the manifest must be a JSON object, not ${show(manifest)}; rebuild the bundle with ulpq_build`);
  }
  if (manifest.schema_version !== SUPPORTED_SCHEMA) {
    throw new BundleError(`${source}: schema_version ${show(manifest.schema_version)}, this runtime reads ${SUPPORTED_SCHEMA}; `
      + 'rebuild the bundle with the ulpq_build version that ships this runtime');
  }
  checkShape(manifest, MANIFEST_SCHEMA, 'manifest', fail);
  const arch = architectureOf(manifest.model);
  if (!arch) fail('manifest.model.architecture', `is '${manifest.model.architecture}', unknown to this runtime (it runs ${Object.keys(ARCHITECTURES).join(', ')})`);
  checkShape(manifest.model, arch.manifest, 'manifest.model', fail);
  if (manifest.quantization && !(manifest.quantization.default.format in manifest.formats)) {
    fail('manifest.quantization.default.format', `names '${manifest.quantization.default.format}', which manifest.formats lacks`);
  }
  if (Object.values(manifest.formats).some((f) => f.levels === 'codebook')) {
    const tables = manifest.codebooks?.tables;
    if (!Array.isArray(tables) || tables.length !== 512 || !tables.every((v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32)) {
      fail('manifest.codebooks.tables', 'must hold the 512 u32 codebook table entries its codebook formats decode with');
    }
  }
  const shardBytes = new Map(manifest.shards.map((s) => [s.file, s.bytes]));
  manifest.tensors.forEach((tensor, i) => {
    if (!(tensor.format in manifest.formats)) fail(`manifest.tensors[${i}].format`, `names '${tensor.format}', which manifest.formats lacks`);
    for (const [name, part] of Object.entries(tensor.parts)) {
      const where = `manifest.tensors[${i}].parts.${name}`;
      if (!shardBytes.has(part.file)) fail(`${where}.file`, `names '${part.file}', which manifest.shards lacks`);
      if (part.offset + part.length > shardBytes.get(part.file)) {
        fail(`${where}.length`, `reaches byte ${part.offset + part.length}, past the end of ${part.file} (${shardBytes.get(part.file)} bytes)`);
      }
      const size = ELEMENT_BYTES[part.dtype];
      if (!size) fail(`${where}.dtype`, `is '${part.dtype}', unknown to this runtime (it reads ${Object.keys(ELEMENT_BYTES).join(', ')})`);
      if (part.offset % size || part.length % size) fail(`${where}.offset`, `is not aligned to its ${size}-byte ${part.dtype} values`);
    }
  });
  // several kernel keys may share one file (profiles that render the same WGSL); every file is named by a key
  const shaderFiles = new Set(manifest.shader_files.map((f) => f.file));
  manifest.shaders.forEach((shader, i) => {
    if (!shaderFiles.has(shader.file)) fail(`manifest.shaders[${i}].file`, `names '${shader.file}', which manifest.shader_files lacks`);
  });
  const named = new Set(manifest.shaders.map((s) => s.file));
  manifest.shader_files.forEach((f, i) => {
    if (!named.has(f.file)) fail(`manifest.shader_files[${i}].file`, `names '${f.file}', which no entry of manifest.shaders uses`);
  });
  if (arch.tokenizer && !tokenizerFile(arch, manifest.files.map((f) => f.file))) {
    fail('manifest.files', `lists neither ${arch.tokenizer.files.join(' nor ')} (a ${arch.input} model needs one)`);
  }
  return manifest;
}

// IntegrityErrors raised by fetchVerifiedText, per bundle folder, so the API layer can report the
// real cause of a failed load even where a caller (a backend trying its variants) wrapped it.
const integrityFailures = new Map();
const folderOf = (baseUrl) => new URL('.', baseUrl).href;

/** The last IntegrityError raised for a file of the bundle at `baseUrl` (forgotten once taken), or null. */
export function takeIntegrityFailure(baseUrl) {
  const key = folderOf(baseUrl);
  const err = integrityFailures.get(key) ?? null;
  integrityFailures.delete(key);
  return err;
}

/** Fetch a text file of the bundle (a shader) and check it against its sha256. */
export async function fetchVerifiedText(baseUrl, file, expectedSha) {
  const bytes = new Uint8Array(await (await fetchOk(new URL(file, baseUrl))).arrayBuffer());
  const actual = await sha256Hex(bytes);
  if (actual !== expectedSha) {
    const err = new IntegrityError(`${file}: sha256 mismatch (expected ${String(expectedSha).slice(0, 12)}..., got ${actual.slice(0, 12)}...); the file was changed after the build; rebuild or re-upload the bundle`);
    integrityFailures.set(folderOf(baseUrl), err);
    throw err;
  }
  return new TextDecoder().decode(bytes);
}

/** Download one shard into a buffer of the manifest's size, reporting each chunk through `progress(n)`. */
async function downloadShard(shard, baseUrl, progress) {
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
    progress(value.length);
  }
  if (filled !== bytes.length) {
    throw new IntegrityError(`${shard.file}: ${filled} bytes received, the manifest lists ${shard.bytes}; the upload is incomplete`);
  }
  return bytes;
}

/**
 * Every shard, from the weight cache (weight_cache.js) where it holds a copy that still matches
 * the manifest's sha256, else from the network; returns Map(file -> Uint8Array) of verified bytes.
 * onProgress gets {phase: 'weights', file, loaded, total, source: 'cache' | 'network'} (the first
 * event, before any file, has file null and no source), then {phase: 'verified', file: null,
 * loaded, total, cache: {status: 'on' | 'off' | 'unavailable', cacheBytes, networkBytes, notes}}.
 * options.cache false: neither read nor write the cache.
 * @param {(event: import('./types/ulpq.js').LoadProgress) => void} [onProgress]
 */
export async function fetchShards(manifest, baseUrl, onProgress = () => {}, { cache = true } = {}) {
  const total = manifest.shards.reduce((sum, s) => sum + s.bytes, 0);
  let loaded = 0;
  const tally = { cache: 0, network: 0 };
  const out = new Map();
  const store = await openWeightCache(baseUrl, cache);
  onProgress({ phase: 'weights', file: null, loaded, total });
  for (const shard of manifest.shards) {
    let bytes = await store.read(shard);
    if (bytes && bytes.length !== shard.bytes) {
      await store.discard(shard, `had ${bytes.length} bytes, the manifest lists ${shard.bytes}`);
      bytes = null;
    } else if (bytes && (await sha256Hex(bytes)) !== shard.sha256) {
      await store.discard(shard, 'did not match the manifest\'s sha256');
      bytes = null;
    }
    const source = bytes ? 'cache' : 'network';
    const report = (n) => {
      loaded += n;
      tally[source] += n;
      onProgress({ phase: 'weights', file: shard.file, loaded, total, source });
    };
    if (bytes) {
      report(bytes.length);
    } else {
      bytes = await downloadShard(shard, baseUrl, report);
      const actual = await sha256Hex(bytes);
      if (actual !== shard.sha256) {
        throw new IntegrityError(`${shard.file}: sha256 mismatch (expected ${shard.sha256.slice(0, 12)}..., got ${actual.slice(0, 12)}...); the shard was modified or corrupted, rebuild or re-upload the bundle`);
      }
      store.write(shard, bytes); // only verified bytes are cached
    }
    out.set(shard.file, bytes);
  }
  await store.finish(manifest);
  const summary = { status: store.status, cacheBytes: tally.cache, networkBytes: tally.network, notes: store.notes };
  onProgress({ phase: 'verified', file: null, loaded, total, cache: summary });
  return out;
}

const VIEWS = { uint32: Uint32Array, float32: Float32Array, float16: Uint16Array, uint8: Uint8Array };

/** Map(tensor name -> {entry, parts: {name: {bytes, values}}}) over the verified shard bytes. */
export function tensorTable(manifest, shardBytes) {
  const table = new Map();
  // codebook formats (ulpq_build/vq/) decode through the bundle's one set of tables, shared by all
  const books = manifest.codebooks ? Uint32Array.from(manifest.codebooks.tables) : null;
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
    if (manifest.formats[entry.format].levels === 'codebook') {
      if (!books) throw new BundleError(`tensor ${entry.name}: format ${entry.format} needs the manifest's codebooks; rebuild the bundle with ulpq_build`);
      parts.codebook = { bytes: new Uint8Array(books.buffer), values: books, shared: true };
    }
    table.set(entry.name, { entry, parts });
  }
  return table;
}
