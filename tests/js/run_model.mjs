// Run a bundle's own runtime on the CPU path under Node: sentences (text bundles) or the bundle's
// samples (image bundles), printing the output and the encoded input as JSON.
//   node run_model.mjs BUNDLE_DIR INPUT.json
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, inputPath] = process.argv.slice(2);
const load = (name) => import(pathToFileURL(path.join(path.resolve(dir), name)).href);
const { tensorTable } = await load('bundle_loader.js');
const { CpuBackend } = await load('backend_cpu.js');
const { GRAPHS } = await load('graphs.js');
const { WordPieceTokenizer } = await load('tokenizer.js');
const { preprocessImages } = await load('images.js');
globalThis.atob ??= (b) => Buffer.from(b, 'base64').toString('binary');
const { sampleToImage } = await load('images.js');

const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
const shards = new Map(manifest.shards.map((s) => [s.file, new Uint8Array(readFileSync(path.join(dir, s.file)))]));
const tensors = tensorTable(manifest, shards);
const model = manifest.model;
let x;
if (model.architecture === 'bert') {
  const tokenizer = WordPieceTokenizer.fromTokenizerJson(JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')),
    model.tokenizer.max_length);
  x = tokenizer.batch(JSON.parse(readFileSync(inputPath, 'utf8')));
} else {
  const samples = JSON.parse(readFileSync(path.join(dir, 'samples.json'), 'utf8'));
  x = preprocessImages(samples.map(sampleToImage), model.preprocess);
}
const result = await GRAPHS[model.architecture](new CpuBackend(manifest, tensors), model, x);
process.stdout.write(JSON.stringify({ output: Array.from(result.data), rows: result.rows, cols: result.cols,
  ids: x.ids ? Array.from(x.ids) : null, mask: x.mask ? Array.from(x.mask) : null, seq: x.seq ?? null }));
