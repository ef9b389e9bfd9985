// generate.js's token choice under Node, for tests/test_decoder_bundle.py to compare with its numpy
// reimplementation.  node sampling.mjs REQUEST.json -> JSON on stdout
//   request: {cases: [{logits, temperature, topK, topP, us}]} -> candidates (ids, probs) and the
//            token each u draws; rng: {seed, n} -> the PRNG's first n numbers; greedy: [logits] ->
//            argmax each; counts: {logits, options, seed, draws} -> how often pickToken chose each id;
//            options: [options] -> checkGenerateOptions' result or error
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const gen = await import(pathToFileURL(path.join(here, '../../web_runtime/generate.js')).href);
const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const cases = (request.cases ?? []).map((c) => {
  const logits = Float32Array.from(c.logits);
  const found = gen.candidates(logits, c);
  return { ids: Array.from(found.ids), probs: Array.from(found.probs), picks: c.us.map((u) => gen.draw(found, u)) };
});
const rng = request.rng ? (() => { const r = gen.createRng(request.rng.seed); return Array.from({ length: request.rng.n }, r); })() : null;
const greedy = (request.greedy ?? []).map((logits) => gen.pickToken(Float32Array.from(logits), { temperature: 0, topK: 0, topP: 1 },
  () => { throw new Error('greedy drew a random number'); }));
let counts = null;
if (request.counts) {
  const { logits, options, seed, draws } = request.counts;
  const random = gen.createRng(seed);
  const x = Float32Array.from(logits);
  counts = new Array(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[gen.pickToken(x, options, random)] += 1;
}
const options = (request.options ?? []).map((o) => {
  try {
    const { onToken, signal, ...rest } = gen.checkGenerateOptions(o);
    return { ok: rest };
  } catch (err) {
    return { error: { name: err.name, message: err.message } };
  }
});
process.stdout.write(JSON.stringify({ cases, rng, greedy, counts, options }));
