"""Decoder bundles on WebGPU (issue 14, part 3): `bundle` ships the decoder WGSL (rmsnorm/layernorm, the
rotary or plain cache append, prefill and split decode attention, the gate product, argmax), and the
runtime's generate() runs on the GPU with the KV cache kept there: in Chromium (SwiftShader) and
Firefox (lavapipe), headless, the 32 greedy tokens of every bundle (random llama-style GQA and GPT-2
models at float32, int8, int4; a Qwen2 with biases and a tied head at int4) equal numpy's over the
bundle's weights, with GPU outputs poisoned before each pass; a long prompt (prefill as GEMM), seeded
sampling (the logits read back, drawn in JS) and the end of the cache match the reference too; and a
steady generation creates no GPU object: one submit and one compute pass per token, 4 bytes read
back per greedy token."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ulpq_build import decoder_reference as dr
from ulpq_build.architectures import decoder_common as dc
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.serve import BundleServer

from test_decoder_bundle import FORMATS, VOCAB, _build, _configs, _mulberry32, _reference_candidates, _reference_draw

BUNDLES = [(name, fmt) for name in ("llama-gqa-untied", "gpt2") for fmt in FORMATS] + [("qwen2-gqa-tied-bias", "int4")]
BROWSERS = [("chromium", "chrome-256"), ("firefox", "firefox-128")]
LONG_PROMPT = [(7 * i + 3) % VOCAB for i in range(40)]  # 40 rows: past the GEMV threshold (8), the prefill runs GEMMs
SAMPLING = {"maxNewTokens": 16, "temperature": 0.9, "topK": 40, "topP": 0.9, "seed": 7}

WAIT_READY = """async () => {
  for (let i = 0; i < 6000; i++) {
    const d = window.ulpqDemo;
    if (d && d.status !== 'loading') return { status: d.status, error: d.error };
    await new Promise((r) => setTimeout(r, 100));
  }
  return { status: 'timeout' };
}"""

# Every generation a bundle is checked with; `extra`: the long prompt, sampling and the cache's end too.
GENERATE = """async ({ ids, long, sampling, end, extra }) => {
  const model = window.ulpqDemo.model;
  const run = async (prompt, options) => {
    try {
      const r = await model.generate(prompt, options);
      return { tokenIds: r.tokenIds, path: r.path, variant: r.variant && r.variant.name, notes: r.notes,
               finishReason: r.finishReason, timings: r.timings };
    } catch (err) { return { error: `${err.name}: ${err.message}` }; }
  };
  const out = { greedy: await run(ids, { maxNewTokens: 32 }) };
  if (extra) {
    out.long = await run(long, { maxNewTokens: 16 });
    out.sampling = await run(ids, sampling);
    out.end = await run(end, { maxNewTokens: 32 });
    out.again = await run(ids, { maxNewTokens: 32 });  // after the others: the cache is reused from slot 0
  }
  return out;
}"""

# Wraps the device's object factories, the queue, pass starts and buffer maps during a second
# greedy generation (the first built the prefill and decode-step plans).
COUNT = """async ({ ids }) => {
  const model = window.ulpqDemo.model;
  await model.generate(ids, { maxNewTokens: 32 });
  const device = model.backend.device;
  const counts = {};
  const mapped = [];
  const restore = [];
  const wrap = (obj, name, key = name, record = null) => {
    const original = obj[name];
    obj[name] = function (...args) { counts[key] = (counts[key] ?? 0) + 1; record?.(args); return original.apply(this, args); };
    restore.push(() => { obj[name] = original; });
  };
  for (const name of ['createBuffer', 'createBindGroup', 'createBindGroupLayout', 'createComputePipeline',
    'createComputePipelineAsync', 'createShaderModule', 'createCommandEncoder', 'createTexture', 'createQuerySet']) wrap(device, name);
  wrap(device.queue, 'submit');
  wrap(device.queue, 'writeBuffer');
  wrap(GPUCommandEncoder.prototype, 'beginComputePass');
  wrap(GPUBuffer.prototype, 'mapAsync', 'mapAsync', (args) => mapped.push(args[2]));
  let r;
  try {
    r = await model.generate(ids, { maxNewTokens: 32 });
  } finally {
    restore.forEach((f) => f());
  }
  return { counts, mapped, tokenIds: r.tokenIds, path: r.path, steps: r.timings.decode_steps,
           stats: model.backend.stats, memory: model.backend.memoryBytes() };
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder-webgpu-site")
    models = tmp_path_factory.mktemp("decoder-webgpu-models")
    configs = _configs()
    bundles = {}
    for name, fmt in BUNDLES:
        folder = models / name
        if not folder.exists():
            _build(folder, *configs[name])
        out = root / f"{name}-{fmt}"
        assert cli_main(["bundle", "--model", str(folder), "--out", str(out), *FORMATS[fmt]]) == 0
        bundles[name, fmt] = out
    server = BundleServer(root, 0).start_in_background()
    yield server, bundles
    server.shutdown()
    server.server_close()


def _open(session, url):
    session.goto(url)
    state = session.evaluate(WAIT_READY)
    assert state["status"] == "ready", state


def _sampled(model, weights, ids, options) -> list[int]:
    """generate()'s seeded sampling over numpy's logits (float32, as the runtime holds them)."""
    random = _mulberry32(options["seed"])
    logits, cache = dr.prefill(model, weights, np.array([ids]))
    row, tokens = logits[0, -1], []
    for _ in range(options["maxNewTokens"]):
        tokens.append(_reference_draw(_reference_candidates(row.astype(np.float32), options["temperature"],
                                                            options["topK"], options["topP"]), next(random)))
        step, cache = dr.step(model, weights, [tokens[-1]], cache)
        row = step[0]
    return tokens


def test_bundles_ship_the_decoder_shaders(served):
    server, bundles = served
    for (name, fmt), folder in bundles.items():
        m = json.loads((folder / "manifest.json").read_text())
        model = m["model"]
        keys = {s["key"] for s in m["shaders"]}
        assert (folder / "shaders").is_dir() and m["shader_files"]
        for profile, roles in model["op_kernels"].items():
            assert set(roles) >= {"norm", "cache_append", "attention_prefill", "attention_decode", "attention_combine",
                                  "argmax", "argmax_parts", "argmax_finish", "rows"}, roles
            assert set(roles.values()) <= keys
            assert roles["cache_append"].startswith("rotary_cache" if name != "gpt2" else "append_cache")
            for layer in model["layers"]:
                if "gate" in layer:  # SwiGLU: the gate product plain, silu in the `gated` kernel
                    assert "activation-none" in layer["gate"]["kernels"][profile]["gemv"]
                    assert roles["gate"].startswith("gated.activation-silu")
                else:
                    assert "activation-gelu_tanh" in layer["fc"]["kernels"][profile]["gemv"]


@pytest.mark.parametrize("browser, variant", BROWSERS, ids=[b for b, _ in BROWSERS])
def test_browsers_generate_the_reference_tokens_on_webgpu(served, browser, variant):
    """Every bundle: 32 greedy tokens identical to numpy's, on WebGPU, outputs poisoned. Two of them
    also: a 40-token prompt, seeded sampling, a generation that ends at the last position, and the same
    greedy run again. A browser that does not start fails the test."""
    server, bundles = served
    session = launch(browser)
    try:
        for (name, fmt), folder in bundles.items():
            bundle = load_bundle(folder)
            model, case = bundle.model, bundle.manifest["verification"]
            extra = (name, fmt) in (("llama-gqa-untied", "int4"), ("gpt2", "float32"))
            end = list(range(1, model["max_position"] - 3))  # 124 tokens of 128 positions: 5 new tokens fit
            _open(session, f"{server.url}{folder.name}/index.html?run=0&poison=1")
            out = session.evaluate(GENERATE, {"ids": case["prompt_ids"], "long": LONG_PROMPT, "sampling": SAMPLING,
                                              "end": end, "extra": extra})
            greedy = out["greedy"]
            assert "error" not in greedy, (name, fmt, greedy)
            assert greedy["path"] == "webgpu" and greedy["variant"] == variant, (name, fmt, greedy["notes"])
            assert greedy["tokenIds"] == case["greedy_tokens"], (name, fmt)
            if not extra:
                continue
            weights = bundle.weights
            assert out["long"]["tokenIds"] == dc.greedy_tokens(model, weights, [LONG_PROMPT], 16), (name, fmt)
            sampled = out["sampling"]["tokenIds"]
            assert sampled == _sampled(model, weights, case["prompt_ids"], SAMPLING) != case["greedy_tokens"][:16]
            assert out["end"]["finishReason"] == "max_position" and len(out["end"]["tokenIds"]) == 5
            assert out["end"]["tokenIds"] == dc.greedy_tokens(model, weights, [end]), (name, fmt)
            assert out["again"]["tokenIds"] == case["greedy_tokens"]
    finally:
        session.close()


@pytest.mark.parametrize("browser", [b for b, _ in BROWSERS])
def test_a_steady_generation_creates_no_gpu_objects(served, browser):
    """The second generation at one prompt length replays the prefill plan and the decode-step plan:
    no buffer, bind group, pipeline or shader; one submit and one compute pass per token; per pass the
    writes of its inputs (token ids, positions; the prefill's last-row index) and one params write for
    the steps whose cache slot moved; 4 bytes read back per greedy token."""
    server, bundles = served
    folder = bundles["llama-gqa-untied", "int4"]
    case = load_bundle(folder).manifest["verification"]
    session = launch(browser)
    try:
        _open(session, f"{server.url}{folder.name}/index.html?run=0")
        out = session.evaluate(COUNT, {"ids": case["prompt_ids"]})
    finally:
        session.close()
    counts = out["counts"]
    assert out["path"] == "webgpu" and out["tokenIds"] == case["greedy_tokens"] and out["steps"] == 31
    created = {k: v for k, v in counts.items() if k.startswith("create") and k != "createCommandEncoder"}
    assert created == {}, counts
    passes = 1 + out["steps"]
    assert counts["submit"] == passes and counts["beginComputePass"] == passes, counts
    assert counts["writeBuffer"] == 3 + 3 * out["steps"], counts
    assert out["mapped"] == [4] * passes, out["mapped"]
    assert out["memory"]["plans"] == 2, out["memory"]
