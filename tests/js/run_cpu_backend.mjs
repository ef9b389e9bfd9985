// Run a bundle's model on the CPU backend that cpu_select.js picks, under Node:
//   node run_cpu_backend.mjs BUNDLE_DIR REQUEST.json
// REQUEST: {options: {cpu: 'wasm'|'js', threads}, sentences?, rows?, repeats?, hideSimd?, profile?}. Text bundles take
// `sentences`, image bundles run their samples, MLP bundles take `rows`. Prints JSON: output,
// rows, cols, ids, mask, seq, notes, threads, path, run_ms (every repeat), memory, and with `profile` the
// wasm backend's per-operator ms of the last repeat (backend.profile).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, requestPath] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestPath, 'utf8'));
const load = (name) => import(pathToFileURL(path.join(path.resolve(dir), name)).href);
const { tensorTable } = await load('bundle_loader.js');
const { createCpuBackend } = await load('cpu_select.js');
const { GRAPHS } = await load('graphs.js');
const { toMatrix } = await load('inputs.js');
const { WordPieceTokenizer } = await load('tokenizer.js');
const { preprocessImages, sampleToImage } = await load('images.js');
globalThis.atob ??= (b) => Buffer.from(b, 'base64').toString('binary');

const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
const shards = new Map(manifest.shards.map((s) => [s.file, new Uint8Array(readFileSync(path.join(dir, s.file)))]));
const tensors = tensorTable(manifest, shards);
const model = manifest.model;
let x;
if (model.architecture === 'bert') {
  const tokenizer = WordPieceTokenizer.fromTokenizerJson(JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
    model.tokenizer.max_length);
  x = tokenizer.batch(request.sentences);
} else if (model.architecture === 'vit') {
  const samples = JSON.parse(readFileSync(path.join(dir, 'samples.json'), 'utf8'));
  x = preprocessImages(samples.map(sampleToImage), model.preprocess);
} else {
  x = toMatrix(request.rows, model.input_size);
}
if (request.hideSimd) {
  // an engine without wasm SIMD: the probe module fails to validate
  const validate = WebAssembly.validate;
  WebAssembly.validate = (bytes) => (bytes.length < 64 ? false : validate(bytes));
}
const { backend, notes } = await createCpuBackend(manifest, tensors, request.options ?? {});
// parts moved into the wasm memory are read from there (the shards are free to go)
const partsInWasm = backend.memory ? [...tensors.values()].every((t) => Object.values(t.parts).every(
  (p) => p.values.buffer === backend.memory.buffer && p.bytes.buffer === backend.memory.buffer)) : false;
const runMs = [];
let result;
const repeats = request.repeats ?? 1;
for (let i = 0; i < repeats; i++) {
  if (request.profile && i === repeats - 1) backend.profile = new Map();
  const t0 = performance.now();
  result = await GRAPHS[model.architecture](backend, model, x);
  runMs.push(performance.now() - t0);
}
backend.destroy?.();
process.stdout.write(JSON.stringify({ output: Array.from(result.data), rows: result.rows, cols: result.cols,
  ids: x.ids ? Array.from(x.ids) : null, mask: x.mask ? Array.from(x.mask) : null, seq: x.seq ?? null,
  notes, threads: backend.threads, kind: backend.kind ?? 'js', path: backend.path, run_ms: runMs,
  memory: backend.memoryBytes ?? null, parts_in_wasm: partsInWasm,
  profile: backend.profile ? Object.fromEntries(backend.profile) : null }));
