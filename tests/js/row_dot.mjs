// ops_cpu.linear on one row of x (rowDot: packed words read inside the dot product) against the same
// product through the row decoder (two identical rows of x take the decode-a-row path), for every
// matrix of a bundle: prints JSON {tensor: [max |difference|, columns compared, fused]}.
//   node row_dot.mjs BUNDLE_DIR
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = path.resolve(process.argv[2]);
const load = (name) => import(pathToFileURL(path.join(dir, name)).href);
const { tensorTable } = await load('bundle_loader.js');
const { linear, rowDot } = await load('ops_cpu.js');
const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
const shards = new Map(manifest.shards.map((s) => [s.file, new Uint8Array(readFileSync(path.join(dir, s.file)))]));
const tensors = tensorTable(manifest, shards);
let seed = 7;
const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 - 0.5; };
const out = {};
for (const [name, tensor] of tensors) {
  if (tensor.entry.shape.length !== 2) continue;
  const { rows, k } = tensor.entry.matrix;
  const x = Float32Array.from({ length: k }, random);
  const one = linear(x, 1, tensor, null, 'none', manifest.formats);
  const two = linear(Float32Array.from([...x, ...x]), 2, tensor, null, 'none', manifest.formats);
  let worst = 0;
  for (let j = 0; j < rows; j++) worst = Math.max(worst, Math.abs(one[j] - two[j]), Number.isNaN(one[j]) ? Infinity : 0);
  out[name] = [worst, rows, rowDot(tensor, manifest.formats) !== null];
}
process.stdout.write(JSON.stringify(out));
