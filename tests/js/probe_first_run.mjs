// Where a first run at a new structure goes (issue 10: "the first run at a new shape within 2x of a
// steady run"; docs/benchmarks.md, "First runs at new shapes"). Per bundle, under Node + Dawn (the
// bundle's own node.js; scripts/gpu_bench_setup.sh sets up the lent GPU machine):
//   1. each shape in turn (SHAPES, default 1x8,1x128,8x18,8x128): its first run (wall ms; the
//      backend's build ms and the GPU objects it made) and its steady median;
//   2. every layout but one dropped (the backend's own eviction), then each shape again: a first run
//      whose JS and pipelines are warm but whose plan, layout and bind groups are new;
//   3. the plans dropped, the layouts kept: a first run that only records and adopts;
//   4. the WebGPU calls a new layout makes, alone: us per createBindGroup, createBuffer, ...
//   node probe_first_run.mjs BUNDLE_DIR [BUNDLE_DIR...]  ->  JSON on the last stdout line
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dirs = process.argv.slice(2);
const shapes = (process.env.SHAPES ?? '1x8,1x128,8x18,8x128').split(',').map((s) => s.split('x').map(Number));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const node = await import(pathToFileURL(path.resolve(dirs[0], 'node.js')).href);
const out = [];
for (const dir of dirs) {
  const model = await node.loadBundle(path.resolve(dir), { hardware: 'webgpu' });
  const be = model.backend;
  const words = readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n').filter((w) => /^[a-z]+$/.test(w));
  const texts = (b, t) => Array.from({ length: b }, (_, i) => Array.from({ length: t - 2 }, (_, j) => words[(i * 7919 + j * 104729) % words.length]).join(' '));
  const snap = () => ({ ...be.stats });
  const delta = (a, b) => Object.fromEntries(['layoutsBuilt', 'layoutsGrown', 'buffersCreated', 'bindGroupsCreated']
    .map((k) => [k, (b[k] ?? 0) - (a[k] ?? 0)]));
  const first = async (b, t) => {
    const input = texts(b, t);
    const s0 = snap();
    const t0 = performance.now();
    await model.process(input);
    const ms = performance.now() - t0;
    return { ms: +ms.toFixed(2), build_ms: +(be.stats.lastBuildMs ?? 0).toFixed(2), made: delta(s0, snap()) };
  };
  const steady = async (b, t) => {
    const input = texts(b, t);
    const xs = [];
    for (let i = 0; i < 9; i++) { const t0 = performance.now(); await model.process(input); xs.push(performance.now() - t0); }
    return +median(xs).toFixed(2);
  };
  const entry = { dir, init_ms: model.timings.init_ms, init_parts: be.initTimings, plans: be.plans.size, phases: {} };
  const phase = async (name, before) => {
    const rows = {};
    for (const [b, t] of shapes) {
      if (before) await before(b, t);
      const f = await first(b, t);
      rows[`${b}x${t}`] = { ...f, steady_ms: await steady(b, t) };
    }
    entry.phases[name] = rows;
  };
  await phase('new');
  const limits = { ...be.limits };
  // drop every other layout: a limit of one, then a run of a shape of another structure
  await phase('new_buffers', async (b, t) => {
    be.limits.layouts = 1;
    const [ob, ot] = b === 1 && t === 8 ? [8, 128] : [1, 8];
    await model.process(texts(ob, ot));
    be.limits.layouts = limits.layouts;
    be.plans.clear();
  });
  await phase('plans_only', async () => { be.plans.clear(); });
  // the API calls a new layout makes, alone: per pipeline, us per getBindGroupLayout(0), per
  // createBindGroup (layout fetched once) and per createBuffer
  const dev = be.device;
  const U = GPUBufferUsage;
  const big = dev.createBuffer({ size: 1 << 20, usage: U.STORAGE | U.COPY_DST });
  const uni = dev.createBuffer({ size: 256, usage: U.UNIFORM | U.COPY_DST });
  const time = (n, f) => { const t0 = performance.now(); for (let i = 0; i < n; i++) f(i); return +(((performance.now() - t0) * 1000) / n).toFixed(1); };
  entry.micro = {};
  for (const [key, { shader, pipeline }] of [...be.pipelines].slice(0, 6)) {
    const bgl = pipeline.getBindGroupLayout(0);
    const entries = Object.entries(shader.bindings).map(([name, binding]) => ({ binding, resource: { buffer: name === 'params' ? uni : big } }));
    try {
      entry.micro[key.slice(0, 60)] = {
        bindings: entries.length,
        get_layout_us: time(300, () => pipeline.getBindGroupLayout(0)),
        bind_group_us: time(300, () => dev.createBindGroup({ layout: bgl, entries })),
        bind_group_fresh_layout_us: time(300, () => dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries })),
      };
    } catch (e) { entry.micro[key.slice(0, 60)] = String(e); }
  }
  entry.micro.create_buffer_us = time(200, () => dev.createBuffer({ size: 1 << 20, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST }).destroy());
  entry.micro.write_buffer_us = time(200, () => dev.queue.writeBuffer(uni, 0, new Uint8Array(256)));
  out.push(entry);
  process.stderr.write(`${JSON.stringify(entry)}\n`);
}
process.stdout.write(`\n${JSON.stringify(out)}\n`, () => process.exit(0));
