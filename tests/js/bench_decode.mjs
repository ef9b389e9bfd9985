// Time decoder bundles' generate() under Node through the bundle's own node.js (Dawn where the npm
// package `webgpu` finds an adapter, else the CPU path), for scripts/bench_gpu_decode.py.
//   node bench_decode.mjs REQUEST.json  ->  one JSON object on the last stdout line
// REQUEST: {bundles: [{name, dir}], prompt_ids, new_tokens, repeats, hardware, copy_bytes}
// Per bundle: load/init times; a greedy check (the manifest's verification prompt, 32 tokens, against
// its numpy tokens); then `repeats` greedy generations of new_tokens after prompt_ids (the first
// of them warms the plans up and is reported apart), each with its prefill ms and decode tokens/s.
// Once, on the first WebGPU device: the copy bandwidth (copyBufferToBuffer of copy_bytes, median
// of 10 after 3 warm-ups, timed to queue.onSubmittedWorkDone).
// With `profile: true`, per WebGPU bundle also: the round trip of an empty submit and a 4-byte
// read-back (the sync every greedy token pays), and one decode step with every dispatch timed
// (ULPQ_GPU_TIMING: each dispatch in its own pass between timestamps), summed by kernel.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { repeats = 5, hardware = 'webgpu', new_tokens: newTokens = 128, copy_bytes: copyBytes = 1 << 30, profile = false } = request;
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

async function copyBandwidth(device) {
  const size = Math.min(copyBytes, device.limits.maxBufferSize);
  const a = device.createBuffer({ size, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const b = device.createBuffer({ size, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const times = [];
  for (let i = 0; i < 13; i++) {
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(a, 0, b, 0, size);
    const t = performance.now();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
    if (i >= 3) times.push(performance.now() - t);
  }
  a.destroy();
  b.destroy();
  const ms = median(times);
  return { bytes: size, ms, copied_gb_per_s: size / ms / 1e6, traffic_gb_per_s: (2 * size) / ms / 1e6 };
}

async function roundTrip(device) {
  const src = device.createBuffer({ size: 4, usage: GPUBufferUsage.COPY_SRC });
  const dst = device.createBuffer({ size: 4, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
  const times = [];
  for (let i = 0; i < 53; i++) {
    const t = performance.now();
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(src, 0, dst, 0, 4);
    device.queue.submit([encoder.finish()]);
    await dst.mapAsync(GPUMapMode.READ);
    dst.unmap();
    if (i >= 3) times.push(performance.now() - t);
  }
  src.destroy();
  dst.destroy();
  return { median_ms: median(times), min_ms: Math.min(...times) };
}

/** One decode step with every dispatch timed, on a fresh load with timestamps on. */
async function stepProfile(node, dir) {
  globalThis.ULPQ_GPU_TIMING = true;
  const model = await node.loadBundle(dir, { hardware });
  try {
    if (!model.backend.timing) return { error: 'the adapter has no timestamp-query' };
    await model.generate(request.prompt_ids, { maxNewTokens: 4 });
    const dispatches = model.backend.lastTiming;
    const byKernel = {};
    for (const d of dispatches) {
      const k = `${d.kind}:${d.key}`;
      byKernel[k] ??= { count: 0, us: 0 };
      byKernel[k].count++;
      byKernel[k].us += d.us;
    }
    const total = dispatches.reduce((s, d) => s + d.us, 0);
    return { dispatches: dispatches.length, total_us: total, by_kernel: byKernel };
  } finally {
    globalThis.ULPQ_GPU_TIMING = false;
    await model.dispose();
  }
}

// each bundle runs under its own runtime (node.js beside it): bench_gpu_decode --before-runtime
// times one bundle under two runtimes, so a module imported once would time both under the first
const runtimeOf = (dir) => import(pathToFileURL(path.resolve(path.join(dir, 'node.js'))).href);
const out = { node: process.versions.node, webgpu: (await runtimeOf(request.bundles[0].dir)).nodeWebgpu, copy: null, bundles: [] };
for (const { name, dir, features = null } of request.bundles) {
  const entry = { name };
  out.bundles.push(entry);
  let model = null;
  try {
    const t0 = performance.now();
    // `features`: the optional WebGPU features the runtime may use (e.g. [] = the base kernels only)
    globalThis.ULPQ_GPU_FEATURES = features ?? undefined;
    const node = await runtimeOf(dir);
    model = await node.loadBundle(dir, { hardware });
    globalThis.ULPQ_GPU_FEATURES = undefined;
    entry.features = model.variant?.features ?? null;
    entry.open_ms = performance.now() - t0;
    Object.assign(entry, { load_ms: model.timings.load_ms, init_ms: model.timings.init_ms, path: model.backend.path,
      variant: model.variant?.name ?? null, notes: [...model.notes] });
    if (model.backend.path === 'webgpu') {
      entry.gpu_memory = model.backend.memoryBytes();
      entry.cache_slots = model.decoder?.capacity ?? null;
      if (!out.copy) out.copy = await copyBandwidth(model.backend.device);
    }
    const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    const check = manifest.verification;
    const got = await model.generate(check.prompt_ids, { maxNewTokens: check.greedy_tokens.length || 32 });
    entry.matches_reference = JSON.stringify(got.tokenIds) === JSON.stringify(check.greedy_tokens);
    entry.runs = [];
    for (let i = 0; i < repeats + 1; i++) {
      const t = performance.now();
      const r = await model.generate(request.prompt_ids, { maxNewTokens: newTokens });
      entry.runs.push({ wall_ms: performance.now() - t, prefill_ms: r.timings.prefill_ms, decode_ms: r.timings.decode_ms,
        decode_steps: r.timings.decode_steps, tokens_per_second: r.timings.tokens_per_second, finish: r.finishReason });
    }
    entry.first = entry.runs.shift();
    entry.tokens_per_second = median(entry.runs.map((r) => r.tokens_per_second));
    entry.ms_per_token = 1000 / entry.tokens_per_second;
    entry.prefill_ms = median(entry.runs.map((r) => r.prefill_ms));
    if (profile && model.backend.path === 'webgpu') {
      entry.round_trip = await roundTrip(model.backend.device);
      await model.dispose();
      model = null;
      entry.step_profile = await stepProfile(node, dir);
    }
  } catch (err) {
    entry.error = `${err.name}: ${err.message}`;
  } finally {
    await model?.dispose();
  }
}
process.stdout.write(`\n${JSON.stringify(out)}\n`);
