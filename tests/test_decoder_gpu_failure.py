"""A GPU failure in the middle of a generation (issue 14, WebGPU decoders), in Chromium: the device lost
(destroyed from onToken after a few tokens), an out-of-memory error reported for a pass, a submit that
throws. With hardware 'auto' generate() runs the generation again from the start on the CPU path with
the same seed: numpy's greedy tokens, the same sampled tokens as a CPU-path model with that seed,
onToken hears every index once, the result says path 'cpu' with a note and the console has a warning.
With hardware 'webgpu' it rejects with GpuUnavailable naming the failure.

Chromium's adapter is SwiftShader, a CPU implementation, where 'auto' generates on the CPU path from
the start; the page here wraps the adapter so that it reads as a GPU (its info and isFallbackAdapter
only), so 'auto' takes WebGPU as it would on a real GPU."""

from __future__ import annotations

import pytest
from test_decoder_qkv_split import optimal_site  # noqa: F401 (the fixture: an int4-optimal Llama bundle)

from ulpq_build.browser_check import fixed_input
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.serve import BundleServer

STEPS = 10  # new tokens per generation: past the failure, short on SwiftShader
SAMPLING = {"maxNewTokens": STEPS, "temperature": 0.9, "topK": 40, "topP": 0.9, "seed": 7}
GREEDY = {"maxNewTokens": STEPS}
FAIL_AT = 3  # onToken of this index breaks the GPU: the generation fails in the next pass

RUN = """async ({ ids, hardware, inject, at, options }) => {
  const ulpq = await import(new URL('./ulpq.js', location.href).href);
  const gpu = navigator.gpu;
  const requestAdapter = gpu.requestAdapter.bind(gpu);
  // the adapter reads as a GPU (SwiftShader is a CPU implementation, where 'auto' generates on the CPU path)
  gpu.requestAdapter = async (o) => {
    const adapter = await requestAdapter(o);
    return adapter && new Proxy(adapter, { get(target, key) {
      if (key === 'info') return { vendor: 'test', architecture: '', device: '', description: 'an adapter that reads as a GPU' };
      if (key === 'isFallbackAdapter') return false;
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    } });
  };
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => { warnings.push(args.join(' ')); warn(...args); };
  const attempt = async (fn) => {
    try { return { value: await fn() }; } catch (err) { return { error: { name: err.name, message: err.message } }; }
  };
  const brief = (r) => ({ tokenIds: r.tokenIds, path: r.path, notes: r.notes, seed: r.seed });
  const breakGpu = (m) => {
    const device = m.backend.device;
    if (inject === 'lost') device.destroy();
    if (inject === 'oom') {  // the next pass's out-of-memory scope reports an error (scopes stay balanced)
      const pop = device.popErrorScope.bind(device);
      let once = true;
      device.popErrorScope = async () => {
        const error = await pop();
        if (once) { once = false; return { message: 'out of memory (injected)' }; }
        return error;
      };
    }
    if (inject === 'submit') device.queue.submit = () => { throw new Error('submit failed (injected)'); };
  };
  try {
    // the cpu profile's kernels (SwiftShader runs them fastest); the path choice is 'auto''s own
    const m = await ulpq.loadBundle('./manifest.json', { hardware, poison: true, profile: 'cpu' });
    const clean = await attempt(async () => brief(await m.generate(ids, options)));
    const heard = [];
    const broken = await attempt(async () => brief(await m.generate(ids, { ...options, onToken: ({ token, index }) => {
      heard.push([index, token]);
      if (index === at) breakGpu(m);
    } })));
    const after = await attempt(async () => brief(await m.generate(ids, options)));
    const cpuModel = await ulpq.loadBundle('./manifest.json', { hardware: 'cpu' });
    const cpu = brief(await cpuModel.generate(ids, options));
    return { clean, broken, after, cpu, heard, warnings };
  } finally {
    gpu.requestAdapter = requestAdapter;
    console.warn = warn;
  }
}"""


@pytest.fixture(scope="module")
def page(optimal_site):  # noqa: F811
    root, folder = optimal_site
    server = BundleServer(root, 0).start_in_background()
    session = launch("chromium")
    try:
        bundle = load_bundle(folder)
        _, payload, expected, _ = fixed_input(bundle)
        url = f"{server.url}{folder.name}/index.html?run=0"

        def run(hardware, inject, options):
            session.goto(url)
            return session.evaluate(RUN, {"ids": payload["prompt_ids"], "hardware": hardware, "inject": inject,
                                          "at": FAIL_AT, "options": options})

        yield run, payload["prompt_ids"], [int(t) for t in expected][:STEPS]
    finally:
        session.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("inject, options", [("lost", GREEDY), ("oom", SAMPLING), ("submit", GREEDY)],
                         ids=["device-lost-greedy", "out-of-memory-sampled", "failed-submit-greedy"])
def test_auto_generates_again_on_the_cpu_path(page, inject, options):
    run, _, expected = page
    got = run("auto", inject, options)
    assert "value" in got["clean"] and got["clean"]["value"]["path"] == "webgpu", got["clean"]  # the GPU ran first
    assert "value" in got["broken"], got["broken"]
    broken = got["broken"]["value"]
    assert broken["path"] == "cpu", broken
    want = expected if options.get("temperature", 0) == 0 else got["cpu"]["tokenIds"]
    if options.get("temperature", 0) == 0:
        assert got["clean"]["value"]["tokenIds"] == expected  # numpy's greedy tokens on WebGPU too
    assert broken["tokenIds"] == want and got["cpu"]["tokenIds"][:len(want)] == want
    assert broken["seed"] == options.get("seed", broken["seed"])
    note = f"WebGPU generation failed after {FAIL_AT + 1} token(s)"
    assert any(n.startswith(note) and "CPU path with the same seed" in n for n in broken["notes"]), broken["notes"]
    assert any(note in w for w in got["warnings"]), got["warnings"]
    if inject == "lost":  # said so, whether the pass or the device's lost promise reported it first
        assert any(n.startswith(f"{note} (the GPU device was lost") for n in broken["notes"]), broken["notes"]
    # onToken heard each index once, in order, with the tokens the result holds
    assert got["heard"] == [[i, t] for i, t in enumerate(broken["tokenIds"])], got["heard"]
    assert "value" in got["after"] and got["after"]["value"]["path"] == "cpu" and got["after"]["value"]["tokenIds"] == want


def test_webgpu_rejects_with_the_failure(page):
    run, _, expected = page
    got = run("webgpu", "lost", GREEDY)
    assert "value" in got["clean"] and got["clean"]["value"]["tokenIds"] == expected, got["clean"]
    error = got["broken"].get("error")
    assert error and error["name"] == "GpuUnavailable", got["broken"]
    assert f"WebGPU generation failed after {FAIL_AT + 1} token(s)" in error["message"], error
    assert "the GPU device was lost" in error["message"], error
    assert got["heard"] == [[i, t] for i, t in enumerate(expected[:FAIL_AT + 1])], got["heard"]
    assert not got["warnings"] or not any("generated again" in w for w in got["warnings"])
