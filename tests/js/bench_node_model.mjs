// Time whole BERT bundles under Node through the bundle's own node.js (Dawn where the npm package
// `webgpu` finds an adapter, else the CPU path): per bundle, the load and init times, then per
// batch x tokens shape the first run at that new shape and the median of the steady runs.
//   node bench_node_model.mjs REQUEST.json  ->  one JSON object on the last stdout line
// REQUEST: {bundles: [{name, dir}], shapes: [[batch, tokens], ...], repeats, warmup, warmup_s, hardware,
//           keep_outputs: [[batch, tokens], ...]}   (the outputs kept are compared by the caller)
// Token counts are exact: each text is (tokens - 2) words that are whole entries of the vocab, and
// the tokenizer adds [CLS] and [SEP]. run_ms is the runtime's own process() timing without
// tokenization; wall_ms is the whole process() call. After each shape, one more new shape two tokens
// shorter (the next sentence a page meets): its first run and steady median (`near`), and for both
// first runs what the WebGPU backend had to make: a new layout, larger buffers, or nothing.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { repeats = 30, warmup = 3, warmup_s: warmupSeconds = 0, hardware = 'auto', keep_outputs: keep = [] } = request;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

/** `batch` texts of exactly `tokens` tokens each, built from whole words of the bundle's vocab. */
function texts(words, batch, tokens) {
  return Array.from({ length: batch }, (_, b) => Array.from({ length: tokens - 2 },
    (_, i) => words[(b * 7919 + i * 104729) % words.length]).join(' '));
}

function vocabWords(dir) {
  const lines = readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n');
  return lines.filter((w) => /^[a-z]+$/.test(w));
}

const node = await import(pathToFileURL(path.resolve(request.runtime ?? path.join(request.bundles[0].dir, 'node.js'))).href);
const out = { node: process.versions.node, webgpu: node.nodeWebgpu, bundles: [] };
for (const { name, dir, features = null } of request.bundles) {
  const entry = { name, shapes: [] };
  out.bundles.push(entry);
  try {
    const t0 = performance.now();
    // `features`: the optional WebGPU features the runtime may use (e.g. [] = the base kernels only)
    globalThis.ULPQ_GPU_FEATURES = features ?? undefined;
    const model = await node.loadBundle(dir, { hardware, profile: request.profile ?? null });
    globalThis.ULPQ_GPU_FEATURES = undefined;
    entry.features = model.variant?.features ?? null;
    entry.open_ms = performance.now() - t0;
    Object.assign(entry, { load_ms: model.timings.load_ms, init_ms: model.timings.init_ms, variant: model.variant?.name ?? null,
      path: model.backend.path, notes: [...model.notes], init_parts: model.backend.initTimings ?? null,
      pipeline_ready_ms: model.backend.pipelineReadyMs ?? null });
    const words = vocabWords(dir);
    for (const [batch, tokens] of request.shapes) {
      const shape = { batch, tokens };
      entry.shapes.push(shape);
      try {
        const input = texts(words, batch, tokens);
        // what a first run had to make: 'layout' (a new one), 'grown' (larger buffers for a layout
        // made before: new buffers and bind groups), 'none' (it ran on GPU objects made before)
        const counts = () => { const st = model.backend.stats; return st?.layoutsBuilt === undefined ? null : [st.layoutsBuilt, st.layoutsGrown]; };
        const made = (before) => { const now = counts(); if (!before || !now) return null; return now[0] > before[0] ? 'layout' : now[1] > before[1] ? 'grown' : 'none'; };
        let built = counts();
        let t = performance.now();
        const first = await model.process(input);
        shape.first_ms = performance.now() - t;
        shape.first_made = made(built);
        shape.first_run_ms = first.timings.run_ms;
        if (first.tokens.some((n) => n !== tokens)) throw new Error(`texts gave ${first.tokens} tokens, not ${tokens}`);
        shape.path = first.path;
        if (keep.some(([b, s]) => b === batch && s === tokens)) shape.output = first.output;
        // at least `warmup` runs and `warmup_s` seconds of them: on the H200 every kernel ran 2-10x slow for
        // 0.1-0.4 s after a setup (docs/benchmarks.md), longer than 30 runs of a small shape take
        const warmStart = performance.now();
        let warmRuns = 0;
        while (warmRuns < warmup || (performance.now() - warmStart < 1000 * warmupSeconds && warmRuns < 5000)) { await model.process(input); warmRuns++; }
        shape.warmup_runs = warmRuns;
        const run = [];
        const wall = [];
        for (let i = 0; i < repeats; i++) {
          t = performance.now();
          const r = await model.process(input);
          wall.push(performance.now() - t);
          run.push(r.timings.run_ms);
        }
        Object.assign(shape, { median_ms: median(run), median_wall_ms: median(wall), min_ms: Math.min(...run), runs: run.length });
        if (tokens > 4) {
          const near = texts(words, batch, tokens - 2);
          built = counts();
          t = performance.now();
          await model.process(near);
          const nearFirst = performance.now() - t;
          const nearMade = made(built);
          const nearRuns = [];
          for (let i = 0; i < Math.min(repeats, 10); i++) {
            t = performance.now();
            await model.process(near);
            nearRuns.push(performance.now() - t);
          }
          shape.near = { tokens: tokens - 2, first_ms: nearFirst, made: nearMade, median_wall_ms: median(nearRuns) };
          await model.process(input); // back to the shape itself (its plan is kept)
        }
      } catch (err) {
        shape.error = `${err.name}: ${err.message}`.split('\n')[0];
      }
      process.stderr.write(`[node] ${name} ${batch}x${tokens}: ${shape.error ?? `${shape.median_ms?.toFixed(2)} ms (first ${shape.first_ms?.toFixed(1)})`}\n`);
    }
    entry.notes = [...model.notes];
    model.backend.destroy?.();
  } catch (err) {
    entry.error = `${err.name}: ${err.message}`.split('\n')[0];
    process.stderr.write(`[node] ${name}: ${entry.error}\n`);
  }
}
// exit only once the JSON is flushed: a pipe takes 64 KiB at a time and process.exit drops the rest
process.stdout.write(`\n${JSON.stringify(out)}\n`, () => process.exit(0));
