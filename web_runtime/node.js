// Node.js as a target: `import { loadBundle } from './node.js'` in Node >= 20 runs the same runtime
// as the browser page. Importing this module
//   - lets fetch() read `file:` URLs and plain paths from disk (a streamed Response, 404 for a
//     missing file), so the loader's size and sha256 checks run unchanged; http(s) stays with
//     Node's own fetch;
//   - exposes WebGPU as navigator.gpu when the npm package `webgpu` (Dawn) can be imported (from
//     node_modules beside the script or bundle, or a folder on NODE_PATH), else leaves it absent
//     so the runtime takes its CPU path; ULPQ_NODE_WEBGPU=0 leaves it absent on purpose;
//   - accepts a bundle folder, a manifest path or a file: URL wherever the browser API takes a
//     manifest URL, and says in every result's notes why Dawn found no adapter, when it found none.
// Everything ulpq.js exports is exported from here too.

import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

// --- fetch for files -------------------------------------------------------------------------

const CONTENT_TYPES = { '.json': 'application/json', '.wgsl': 'text/plain', '.txt': 'text/plain', '.js': 'text/javascript' };

/** URL for a fetch argument when it names a file (file: URL or a path), else null. */
function fileTarget(input) {
  const text = input instanceof URL ? input.href : typeof input === 'string' ? input : input?.url;
  if (typeof text !== 'string') return null;
  if (/^[a-z][a-z0-9+.-]*:/i.test(text) && !/^[a-z]:[\\/]/i.test(text)) {
    return text.toLowerCase().startsWith('file:') ? new URL(text) : null;
  }
  return pathToFileURL(path.resolve(text));
}

function errorResponse(status, statusText) {
  return new Response(`${status} ${statusText}`, { status, statusText });
}

async function fetchFile(url) {
  const file = fileURLToPath(url);
  let info;
  try {
    info = await stat(file);
  } catch (err) {
    return err.code === 'EACCES' ? errorResponse(403, 'Forbidden') : errorResponse(404, 'Not Found');
  }
  if (!info.isFile()) return errorResponse(404, 'Not Found (a folder, not a file)');
  const body = Readable.toWeb(createReadStream(file));
  const type = CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream';
  return new Response(body, { status: 200, statusText: 'OK', headers: { 'content-length': String(info.size), 'content-type': type } });
}

const networkFetch = globalThis.fetch;
if (!(/** @type {{ulpqFiles?: boolean}} */ (globalThis.fetch))?.ulpqFiles) {
  const fetchWithFiles = async (input, init) => {
    const url = fileTarget(input);
    return url ? fetchFile(url) : networkFetch(input, init);
  };
  fetchWithFiles.ulpqFiles = true;
  globalThis.fetch = fetchWithFiles;
}

// Relative manifest URLs resolve against the working folder, as a page's resolve against its address.
if (!globalThis.location) {
  Object.defineProperty(globalThis, 'location', {
    value: { href: pathToFileURL(`${process.cwd()}${path.sep}`).href }, configurable: true, writable: true,
  });
}

// --- WebGPU through Dawn ---------------------------------------------------------------------

/** What happened to WebGPU here: {dawn: bool, adapter: string|null, reason: string|null}. */
export const nodeWebgpu = { dawn: false, adapter: null, reason: null };

function webgpuEntry() {
  // this module may itself come over http (verify's node driver imports a served bundle's copy)
  const here = import.meta.url.startsWith('file:') ? path.dirname(fileURLToPath(import.meta.url)) : null;
  const folders = [...(process.env.NODE_PATH ?? '').split(path.delimiter).filter(Boolean)];
  for (const start of [here, process.cwd()].filter(Boolean)) {
    for (let dir = start; ; dir = path.dirname(dir)) {
      folders.push(path.join(dir, 'node_modules'), path.join(dir, '.node', 'node_modules'));
      if (path.dirname(dir) === dir) break;
    }
  }
  for (const folder of folders) {
    try {
      return createRequire(path.join(folder, 'noop.js')).resolve('webgpu', { paths: [folder] });
    } catch { /* not in this folder */ }
  }
  return null;
}

/** Mesa's version from a lavapipe ICD's library, e.g. '22.3.6', or null. */
function lavapipeMesaVersions() {
  const chosen = (process.env.VK_DRIVER_FILES ?? process.env.VK_ICD_FILENAMES ?? '').split(':').filter(Boolean);
  const icds = chosen.length ? chosen : ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d'].flatMap((dir) => {
    try { return readdirSync(dir).map((f) => path.join(dir, f)); } catch { return []; }
  });
  const versions = [];
  for (const icd of icds.filter((f) => /lvp/.test(path.basename(f)))) {
    try {
      const lib = JSON.parse(readFileSync(icd, 'utf8')).ICD.library_path;
      const text = readFileSync(path.isAbsolute(lib) ? lib : path.join(path.dirname(icd), lib)).toString('latin1');
      const match = text.match(/Mesa (\d+\.\d+(?:\.\d+)?)/);
      if (match) versions.push(match[1]);
    } catch { /* unreadable ICD: nothing to say about it */ }
  }
  return versions;
}

/** Why Dawn returned no adapter, in Dawn's words (from a child process: it prints them natively). */
function noAdapterReason(entry) {
  const probe = `const {create,globals}=await import(${JSON.stringify(pathToFileURL(entry).href)});`
    + 'Object.assign(globalThis,globals);await create([]).requestAdapter();';
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', timeout: 60_000 });
  const said = `${child.stdout ?? ''}\n${child.stderr ?? ''}`.split('\n')
    .filter((line) => /Warning|Error|required|not supported/i.test(line) && !/XDG_RUNTIME_DIR/.test(line))
    .map((line) => line.trim()).slice(0, 3).join('; ');
  const mesa = lavapipeMesaVersions();
  const old = mesa.find((v) => Number(v.split('.')[0]) < 25);
  let why = said || 'no Vulkan driver that Dawn accepts';
  if (/ArrayDynamicIndexing/.test(said) || old) {
    why = `${old ? `Mesa ${old} lavapipe (Debian 12's)` : 'the Vulkan driver'} lacks shaderUniform*ArrayDynamicIndexing`
      + ` (Dawn: ${said || 'adapter refused'}); install Mesa >= 25 (scripts/setup.sh unpacks bookworm-backports' lavapipe into .mesa/) or run on a GPU`;
  }
  return `Dawn found no adapter: ${why}`;
}

async function exposeDawn() {
  if (process.env.ULPQ_NODE_WEBGPU === '0') {
    nodeWebgpu.reason = 'WebGPU left out on request (ULPQ_NODE_WEBGPU=0)';
    return null;
  }
  const entry = webgpuEntry();
  if (!entry) {
    nodeWebgpu.reason = "the npm package 'webgpu' (Dawn) is not installed (scripts/setup.sh puts it in .node/; NODE_PATH may name its node_modules)";
    return null;
  }
  // Dawn's Vulkan loader complains on every start without a runtime folder of its own.
  if (!process.env.XDG_RUNTIME_DIR || !existsSync(process.env.XDG_RUNTIME_DIR)) {
    process.env.XDG_RUNTIME_DIR = mkdtempSync(path.join(os.tmpdir(), 'ulpq-xdg-'));
  }
  let dawn;
  try {
    dawn = await import(pathToFileURL(entry).href);
  } catch (err) {
    nodeWebgpu.reason = `the npm package 'webgpu' at ${entry} did not load (${err.message.split('\n')[0]})`;
    return null;
  }
  Object.assign(globalThis, dawn.globals);
  // Dawn's own switches, space-separated, as the npm package's create() takes them: benchmarks set
  // ULPQ_DAWN_FLAGS='disable-dawn-features=timestamp_quantization' for timestamps to the nanosecond
  // (Dawn rounds them to 65.5 us by default, too coarse to time one dispatch).
  const gpu = dawn.create((process.env.ULPQ_DAWN_FLAGS ?? '').split(/\s+/).filter(Boolean));
  nodeWebgpu.dawn = true;
  const adapter = await gpu.requestAdapter();
  if (adapter) {
    const info = adapter.info ?? {};
    nodeWebgpu.adapter = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'adapter';
  } else {
    nodeWebgpu.reason = noAdapterReason(entry);
  }
  return gpu;
}

const gpu = await exposeDawn();
const userAgent = `Node.js/${process.versions.node}${nodeWebgpu.dawn ? ' Dawn' : ''}`;
if (!globalThis.navigator) {
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent }, configurable: true, writable: true });
}
if (gpu) Object.defineProperty(globalThis.navigator, 'gpu', { value: gpu, configurable: true, writable: true });

// --- the browser API, with paths --------------------------------------------------------------

const ulpq = await import('./ulpq.js');
export * from './ulpq.js';

/** A bundle folder, manifest path or URL -> the manifest's URL. */
export function manifestUrlOf(where) {
  if (where instanceof URL) return where;
  const text = String(where);
  const url = fileTarget(text);
  if (!url) return new URL(text);
  const file = fileURLToPath(url);
  let isFolder = text.endsWith('/') || text.endsWith(path.sep);
  try { isFolder = isFolder || statSync(file).isDirectory(); } catch { /* missing: the loader reports it */ }
  return isFolder ? pathToFileURL(path.join(file, 'manifest.json')) : url;
}

export class UlpqModel extends ulpq.UlpqModel {
  constructor(manifestUrl, options = {}) {
    super(manifestUrlOf(manifestUrl), options);
  }

  async initialize() {
    await super.initialize();
    if (this.backend?.path !== 'webgpu' && nodeWebgpu.reason && this.options.hardware !== 'cpu') this.notes.push(nodeWebgpu.reason);
    return this;
  }
}

/** Fetch, verify and initialize a bundle (a folder, manifest path, file: or http(s) URL) in one call. */
export async function loadBundle(where, options = {}) {
  return new UlpqModel(where, options).initialize();
}

/** createBertModel's modelId: a bundle folder (path or URL) or its manifest. */
function modelManifest(modelId) {
  const id = String(modelId ?? '.');
  return fileTarget(id) || id.endsWith('.json') ? id : `${id.replace(/\/?$/, '/')}manifest.json`;
}

export function createBertModel(hardware, { modelId, quantization = null, ...options } = /** @type {import('./types/ulpq.js').FactoryOptions} */ ({})) {
  return new UlpqModel(modelManifest(modelId), { ...options, hardware, expected: quantization });
}

export function createVitModel(hardware, { modelId, quantization = null, ...options } = /** @type {import('./types/ulpq.js').FactoryOptions} */ ({})) {
  return new UlpqModel(modelManifest(modelId), { ...options, hardware, expected: quantization });
}

export const createModel = createBertModel;
