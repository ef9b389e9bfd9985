// Run a bundle's own JS runtime under Node (no browser): decode every tensor and run the CPU
// path on the inputs given, so Python can compare both with numpy.
//   node node_runtime.mjs BUNDLE_DIR REQUEST.json  ->  JSON on stdout
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [bundleDir, requestPath] = process.argv.slice(2);
const request = JSON.parse(readFileSync(requestPath, 'utf8'));
const load = (name) => import(pathToFileURL(path.join(path.resolve(bundleDir), name)).href);
const { tensorTable, sha256Hex } = await load('bundle_loader.js');
const { decodeTensor } = await load('decode.js');
const { CpuBackend } = await load('backend_cpu.js');
const { GRAPHS } = await load('graphs.js');
const { toMatrix } = await load('inputs.js');
const { chooseProfiles, detectProfile } = await load('variants.js');

const manifest = JSON.parse(readFileSync(path.join(bundleDir, 'manifest.json'), 'utf8'));
const shards = new Map();
for (const shard of manifest.shards) {
  const bytes = new Uint8Array(readFileSync(path.join(bundleDir, shard.file)));
  if (await sha256Hex(bytes) !== shard.sha256) throw new Error(`${shard.file}: sha256 mismatch`);
  shards.set(shard.file, bytes);
}
const tensors = tensorTable(manifest, shards);
const out = { tensors: {}, outputs: null, choices: [] };
for (const [name, tensor] of tensors) out.tensors[name] = Array.from(decodeTensor(tensor, manifest.formats));
if (request.inputs) {
  const x = toMatrix(request.inputs, manifest.model.input_size);
  const result = await GRAPHS[manifest.model.architecture](new CpuBackend(manifest, tensors), manifest.model, x);
  out.outputs = Array.from(result.data);
}
for (const c of request.choices ?? []) {
  const requested = c.profile ?? detectProfile(c.userAgent, manifest.profiles);
  const choice = chooseProfiles(manifest.profiles, requested, c.limits);
  out.choices.push({ requested, candidates: choice.candidates.map((p) => p.variant), fallback: choice.fallback });
}
process.stdout.write(JSON.stringify(out));
