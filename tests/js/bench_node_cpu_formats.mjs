// The CPU path's formats side by side under Node: BERT bundles (e.g. float32, int8, int4, int2 of
// one model), each loaded through its own folder's node.js on the CPU path, timed interleaved
// (bundle A, B, C, D, A, B, ...) so a shared machine's load changes hit every format alike.
//   node bench_node_cpu_formats.mjs REQUEST.json  ->  one JSON object on the last stdout line
// REQUEST: {bundles: [{name, dir}], shapes: [[batch, tokens], ...], threads: [1, 2], repeats, warmup}
// Per threads x shape x bundle: the median and minimum of process()'s own run_ms, the backend kind.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { repeats = 15, warmup = 2, threads: threadCounts = [1] } = request;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

/** `batch` texts of exactly `tokens` tokens each, whole words of the vocab (as bench_node_model.mjs). */
function texts(dir, batch, tokens) {
  const words = readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n').filter((w) => /^[a-z]+$/.test(w));
  return Array.from({ length: batch }, (_, b) => Array.from({ length: tokens - 2 },
    (_, i) => words[(b * 7919 + i * 104729) % words.length]).join(' '));
}

const out = { node: process.versions.node, runs: [] };
for (const threads of threadCounts) {
  const models = [];
  for (const { name, dir } of request.bundles) {
    const node = await import(pathToFileURL(path.resolve(dir, 'node.js')).href);
    const model = await node.loadBundle(dir, { hardware: 'cpu', threads });
    models.push({ name, dir, model });
  }
  for (const [batch, tokens] of request.shapes) {
    const inputs = models.map((m) => texts(m.dir, batch, tokens));
    const times = models.map(() => []);
    for (let i = 0; i < warmup; i++) for (const [j, m] of models.entries()) await m.model.process(inputs[j]);
    for (let r = 0; r < repeats; r++) {
      for (const [j, m] of models.entries()) times[j].push((await m.model.process(inputs[j])).timings.run_ms);
    }
    for (const [j, m] of models.entries()) {
      const row = { threads: m.model.backend.threads, batch, tokens, name: m.name, kind: m.model.backend.kind ?? 'js',
        median_ms: median(times[j]), min_ms: Math.min(...times[j]), runs: times[j].length };
      out.runs.push(row);
      process.stderr.write(`[node] ${row.threads}t ${batch}x${tokens} ${m.name} (${row.kind}): ${row.median_ms.toFixed(1)} ms (min ${row.min_ms.toFixed(1)})\n`);
    }
  }
  for (const m of models) m.model.backend.destroy?.();
}
process.stdout.write(`\n${JSON.stringify(out)}\n`, () => process.exit(0));
