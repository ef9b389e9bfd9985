// Decode speed of a decoder bundle on the CPU path, with the bundle's own runtime (loadBundle then
// generate(), greedy, fixed prompt ids). The same function runs under Node (this file as a script)
// and in a browser page (scripts/bench_cpu_decode.py serves it beside the bundles and imports it).
//   node bench_decoder_cpu.mjs REQUEST.json -> JSON on stdout, one entry per request run
//   REQUEST: {runs: [{bundle (folder; in a page: URL of its manifest.json), load: loadBundle's options,
//             promptIds, maxNewTokens, warmup, repeats, profile}]}
// A run: `warmup` untimed generations, `repeats` timed ones (prefill ms, decode tokens/s each), then
// with `profile` (one-thread wasm only) one more with the backend timing each kernel call of the
// decode steps: ms per step spent in products (gemm_*), in the other kernels, and the rest (the
// step's wall time minus both: JS outside the kernels, copies, scheduling).

export async function benchDecode(loadBundle, run) {
  const model = await loadBundle(run.bundle, run.load);
  try {
    const options = { maxNewTokens: run.maxNewTokens, temperature: 0 };
    for (let i = 0; i < run.warmup; i++) await model.generate(run.promptIds, options);
    const prefill = [];
    const tps = [];
    let last = null;
    for (let i = 0; i < run.repeats; i++) {
      last = await model.generate(run.promptIds, options);
      prefill.push(last.timings.prefill_ms);
      tps.push(last.timings.tokens_per_second);
    }
    const backend = model.backend;
    let profile = null;
    if (run.profile && 'profile' in backend && backend.threads === 1) {
      const spent = new Map();
      const r = await model.generate(run.promptIds, {
        ...options,
        // the prefill's kernels are not a decode step's: counting starts at the first token
        onToken: ({ index }) => { if (index === 0) { spent.clear(); backend.profile = spent; } },
      });
      backend.profile = null;
      const steps = r.timings.decode_steps;
      let products = 0;
      let other = 0;
      for (const [fn, ms] of spent) if (fn.startsWith('gemm_')) products += ms; else other += ms;
      const stepMs = r.timings.decode_ms / steps;
      profile = { step_ms: stepMs, products_ms: products / steps, other_kernels_ms: other / steps,
        rest_ms: stepMs - (products + other) / steps };
    }
    return { prefill_ms: prefill, tokens_per_second: tps, tokens: last?.tokenIds ?? [], decode_steps: last?.timings.decode_steps,
      kind: backend.kind ?? 'js', threads: backend.threads, notes: model.notes ?? last?.notes ?? [], profile };
  } finally {
    await model.dispose();
  }
}

const inNode = typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';
if (inNode && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href) {
  const { readFileSync } = await import('node:fs');
  const path = await import('node:path');
  const { pathToFileURL } = await import('node:url');
  const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const out = [];
  for (const run of request.runs) {
    const dir = path.resolve(run.bundle);
    const { loadBundle } = await import(pathToFileURL(path.join(dir, 'node.js')).href);
    try {
      out.push(await benchDecode(loadBundle, { ...run, bundle: dir }));
    } catch (err) {
      out.push({ error: { name: err.name, message: err.message } });
    }
  }
  process.stdout.write(JSON.stringify(out));
}
