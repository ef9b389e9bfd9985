// Where a run's GPU time goes: loads a BERT bundle under Node + Dawn with the backend's timing mode
// (each dispatch in its own pass between timestamp queries), runs each batch x tokens shape a few
// times, and prints per operator kind the dispatch count and median GPU microseconds per run.
//   node profile_node_model.mjs BUNDLE_DIR 1x128 8x18 ...  ->  JSON on the last stdout line
// Timing mode adds a pass boundary per dispatch, so its total exceeds a real run's; it answers
// "which kernels", not "how fast".
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, ...shapes] = process.argv.slice(2);
globalThis.ULPQ_GPU_TIMING = process.env.ULPQ_GPU_TIMING !== '0';  // ULPQ_GPU_TIMING=0: plain runs (first-run cost only)
const node = await import(pathToFileURL(path.resolve(dir, 'node.js')).href);
const model = await node.loadBundle(path.resolve(dir), { hardware: 'webgpu' });
const words = readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n').filter((w) => /^[a-z]+$/.test(w));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const out = { timing: model.backend.timing, shapes: {} };
for (const shape of shapes) {
  const [batch, tokens] = shape.split('x').map(Number);
  const texts = Array.from({ length: batch }, (_, b) => Array.from({ length: tokens - 2 }, (_, i) => words[(b * 31 + i * 7) % words.length]).join(' '));
  const runs = [];
  const wall = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    await model.process(texts);
    wall.push(performance.now() - t0);
    if (i === 0) process.stderr.write(`[profile] ${shape}: first run ${wall[0].toFixed(2)} ms, of which building the plan ${model.backend.stats.lastBuildMs?.toFixed(2)} ms\n`);
    runs.push(model.backend.lastTiming ?? []);
  }
  const byKind = {};
  runs.slice(2).forEach((steps, r) => {
    for (const s of steps) {
      const k = `${s.kind} ${s.key.split('.').slice(0, 3).join('.')}`;
      byKind[k] ??= { count: 0, us: [] };
      if (r === 0) byKind[k].count++;
      byKind[k].us[r] = (byKind[k].us[r] ?? 0) + s.us;
    }
  });
  const rows = Object.entries(byKind).map(([k, v]) => ({ op: k, dispatches: v.count, us: +median(v.us).toFixed(1) }))
    .sort((a, b) => b.us - a.us);
  out.shapes[shape] = { total_us: +rows.reduce((s, r) => s + r.us, 0).toFixed(1), ops: rows };
  process.stderr.write(`[profile] ${shape}: ${out.shapes[shape].total_us} us of kernels\n`);
  for (const r of rows.slice(0, 8)) process.stderr.write(`    ${r.op.padEnd(60)} x${r.dispatches}  ${r.us} us\n`);
}
process.stdout.write(`\n${JSON.stringify(out)}\n`, () => process.exit(0));  // exit once flushed
