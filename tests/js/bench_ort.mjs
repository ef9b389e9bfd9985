// The peer for the whole-model benchmark: ONNX Runtime (onnxruntime-node, found through NODE_PATH)
// running exported BERT models, by default on its WebGPU execution provider.
//   node bench_ort.mjs REQUEST.json  ->  one JSON object on the last stdout line
// REQUEST: {models: [{name, file}], shapes: [[batch, tokens], ...], repeats, warmup, warmup_s, ep,
//           keep_outputs: [[batch, tokens], ...], ids: {'BxT': [[token ids of row 0], ...]}}
// The token ids come from the caller, the same ones it gives torch and the ones the runtime's
// tokenizer makes of its texts.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');
const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { repeats = 30, warmup = 3, warmup_s: warmupSeconds = 0, ep = 'webgpu', keep_outputs: keep = [] } = request;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

function feeds(batch, tokens) {
  const n = batch * tokens;
  const ids = BigInt64Array.from(request.ids[`${batch}x${tokens}`].flat(), BigInt);
  if (ids.length !== n) throw new Error(`ids for ${batch}x${tokens}: ${ids.length} values`);
  return {
    input_ids: new ort.Tensor('int64', ids, [batch, tokens]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [batch, tokens]),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [batch, tokens]),
  };
}

const out = { node: process.versions.node, ort: ort.env?.versions?.node ?? require('onnxruntime-node/package.json').version, ep, models: [] };
for (const { name, file } of request.models) {
  const entry = { name, shapes: [] };
  out.models.push(entry);
  try {
    let t = performance.now();
    const session = await ort.InferenceSession.create(file, { executionProviders: [ep], graphOptimizationLevel: 'all' });
    entry.create_ms = performance.now() - t;
    for (const [batch, tokens] of request.shapes) {
      const shape = { batch, tokens };
      entry.shapes.push(shape);
      try {
        const input = feeds(batch, tokens);
        t = performance.now();
        const first = await session.run(input);
        shape.first_ms = performance.now() - t;
        const output = first[session.outputNames[0]];
        if (keep.some(([b, s]) => b === batch && s === tokens)) {
          const cols = output.dims.at(-1);
          shape.output = Array.from({ length: batch }, (_, r) => Array.from(output.data.subarray(r * cols, (r + 1) * cols)));
        }
        // as bench_node_model.mjs: at least `warmup` runs and `warmup_s` seconds of them
        const warmStart = performance.now();
        let warmRuns = 0;
        while (warmRuns < warmup || (performance.now() - warmStart < 1000 * warmupSeconds && warmRuns < 5000)) { await session.run(input); warmRuns++; }
        shape.warmup_runs = warmRuns;
        const runs = [];
        for (let i = 0; i < repeats; i++) {
          t = performance.now();
          await session.run(input);
          runs.push(performance.now() - t);
        }
        Object.assign(shape, { median_ms: median(runs), min_ms: Math.min(...runs), runs: runs.length });
      } catch (err) {
        shape.error = `${err.name}: ${err.message}`.split('\n')[0];
      }
      process.stderr.write(`[ort] ${name} ${batch}x${tokens}: ${shape.error ?? `${shape.median_ms?.toFixed(2)} ms (first ${shape.first_ms?.toFixed(1)})`}\n`);
    }
    await session.release?.();
  } catch (err) {
    entry.error = `${err.name}: ${err.message}`.split('\n')[0];
    process.stderr.write(`[ort] ${name}: ${entry.error}\n`);
  }
}
process.stdout.write(`\n${JSON.stringify(out)}\n`, () => process.exit(0));  // exit once flushed
