"""Decoder bundles on WebGPU (issue 14, part 3): `bundle` ships the decoder WGSL (rmsnorm/layernorm, the
rotary or plain cache append, prefill and split decode attention, the gate product, argmax), and the
runtime's generate() runs on the GPU with the KV cache kept there: in Chromium (SwiftShader) and
Firefox (lavapipe), headless, the 32 greedy tokens of every bundle (random llama-style GQA and GPT-2
models at float32, int8, int4; a Qwen2 with biases and a tied head, and a Llama whose vocabulary takes
the two-stage argmax, at int4) equal numpy's over the
bundle's weights, with GPU outputs poisoned before each pass; a long prompt (prefill as GEMM), seeded
sampling (the logits read back, drawn in JS) and the end of the cache match the reference too; and a
steady generation creates no GPU object: one submit and one compute pass per token, 4 bytes read
back per greedy token. An int2 Llama with a 16384 x 2048 tied head runs that head on the lookup-table
GEMV (the GPU profiles' kernel for wide products) in both browsers and gives numpy's tokens too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import serving
from test_decoder_bundle import (
    FORMATS,
    VOCAB,
    _build,
    _configs,
    _mulberry32,
    _reference_candidates,
    _reference_draw,
)

from ulpq_build import decoder_reference as dr
from ulpq_build.architectures import decoder_common as dc
from ulpq_build.browser_check import WAIT_READY
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.profiles import get_profile

BUNDLES = [(name, fmt) for name in ("llama-gqa-untied", "gpt2") for fmt in FORMATS] + [("qwen2-gqa-tied-bias", "int4"),
                                                                                ("llama-wide-vocab", "int4"),
                                                                                ("llama-gqa-untied", "e8p")]
# a codebook format: rotated inputs, Q|K|V fused over the bundle's shared E8 tables (one rotation per layer)
BUILD = {**FORMATS, "e8p": ["--format", "e8p"]}
WIDE_VOCAB = 4500  # past one argmax part (2048 columns at 256 threads): greedy picks in two stages
BROWSERS = ("chromium", "firefox")
LONG_PROMPT = [(7 * i + 3) % VOCAB for i in range(40)]  # 40 rows: past the GEMV threshold (8), the prefill runs GEMMs
# To keep the test short, some checks run in one browser each (the kernels behind them are compared
# with numpy on both engines in tests/test_decoder_kernels.py): the bundles beyond the llama/GPT-2
# formats, and the long prompt, sampling and end-of-cache runs.
ONE_BROWSER = {("qwen2-gqa-tied-bias", "int4"): "firefox", ("llama-wide-vocab", "int4"): "chromium",
               ("llama-gqa-untied", "e8p"): "firefox"}
EXTRA = {"chromium": ("llama-gqa-untied", "int4"), "firefox": ("gpt2", "float32")}
SAMPLING = {"maxNewTokens": 16, "temperature": 0.9, "topK": 40, "topP": 0.9, "seed": 7}


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
  const out = { greedy: await run(ids, { maxNewTokens: 32 }), argmaxParts: model.decoder && model.decoder.argmaxParts };
  if (extra) {
    out.long = await run(long, { maxNewTokens: 16 });
    out.sampling = await run(ids, sampling);
    out.end = await run(end, { maxNewTokens: 32 });
    out.again = await run(ids, { maxNewTokens: 32 });  // after the others: the cache is reused from slot 0
    // the three-kernel decode step (append, split attention, combine) that caches past the one-dispatch
    // kernel's slots take, forced here at a short cache
    const saved = model.decoder.stepAttention;
    model.decoder.stepAttention = null;
    try {
      out.long_step = await run(ids, { maxNewTokens: 32 });
      out.long_step.plans = [...model.backend.plans.keys()];
    } finally { model.decoder.stepAttention = saved; }
  }
  return out;
}"""

# Wraps the device's object factories, the queue, pass starts and buffer maps during a second
# greedy generation (the first built the prefill and decode-step plans).
COUNT = """async ({ ids }) => {
  const model = window.ulpqDemo.model;
  model.backend.poison = false;  // the page poisons outputs (a write per output slot per pass): not a steady run's work
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
           stats: model.backend.stats, memory: model.backend.memoryBytes(), fused: [...model.backend.fused.keys()],
           gates: model.manifest.model.layers.filter((l) => l.gate).map((l) => l.gate.weight),
           norm: model.manifest.model.norm, layers: model.manifest.model.num_layers,
           plans: [...model.backend.plans.values()].map((p) => ({ key: p.key, kinds: p.steps.map((s) => s.kind) })) };
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder-webgpu-site")
    models = tmp_path_factory.mktemp("decoder-webgpu-models")
    from test_decoder_bundle import SMALL
    from transformers import LlamaConfig

    configs = {**_configs(), "llama-wide-vocab": (LlamaConfig(**{**SMALL, "vocab_size": WIDE_VOCAB}), 1)}
    bundles = {}
    for name, fmt in BUNDLES:
        folder = models / name
        if not folder.exists():
            _build(folder, *configs[name])
        out = root / f"{name}-{fmt}"
        assert cli_main(["bundle", "--model", str(folder), "--out", str(out), *BUILD[fmt]]) == 0
        bundles[name, fmt] = out
    yield from serving(root, bundles)


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
    _, bundles = served
    for (name, fmt), folder in bundles.items():
        m = json.loads((folder / "manifest.json").read_text())
        model = m["model"]
        keys = {s["key"] for s in m["shaders"]}
        assert (folder / "shaders").is_dir() and m["shader_files"]
        for profile, roles in model["op_kernels"].items():
            assert set(roles) >= {"norm", "cache_append", "attention_prefill", "attention_decode", "attention_combine",
                                  "attention_step", "argmax", "argmax_parts", "argmax_finish", "rows"}, roles
            assert set(roles.values()) <= keys
            assert roles["cache_append"].startswith("rotary_cache" if name != "gpt2" else "append_cache")
            for layer in model["layers"]:
                if "gate" in layer:  # SwiGLU: the gate product plain, silu in the `gated` kernel
                    assert "activation-none" in layer["gate"]["kernels"][profile]["gemv"]
                    assert roles["gate"].startswith("gated.activation-silu")
                else:
                    assert "activation-gelu_tanh" in layer["fc"]["kernels"][profile]["gemv"]


@pytest.mark.parametrize("browser", BROWSERS)
def test_browsers_generate_the_reference_tokens_on_webgpu(served, browser):
    """Every llama/GPT-2 bundle (and the two others, in one browser each): 32 greedy tokens identical to
    numpy's, on WebGPU, outputs poisoned. One per browser also: a 40-token prompt, seeded sampling, a
    generation that ends at the last position, the same greedy run again, the decode step forced onto
    its three-kernel attention (what a cache past the one-dispatch kernel's slots runs), and a steady generation's
    GPU work counted (check_steady). A browser that does not start fails the test."""
    server, bundles = served
    session = launch(browser)
    try:
        for (name, fmt), folder in bundles.items():
            if (name, fmt) in ONE_BROWSER and ONE_BROWSER[name, fmt] != browser:
                continue
            bundle = load_bundle(folder)
            model, case = bundle.model, bundle.manifest["verification"]
            extra = EXTRA[browser] == (name, fmt)
            end = list(range(1, model["max_position"] - 3))  # 124 tokens of 128 positions: 5 new tokens fit
            _open(session, f"{server.url}{folder.name}/index.html?run=0&poison=1&hardware=webgpu")
            out = session.evaluate(GENERATE, {"ids": case["prompt_ids"], "long": LONG_PROMPT, "sampling": SAMPLING,
                                              "end": end, "extra": extra})
            greedy = out["greedy"]
            assert "error" not in greedy, (name, fmt, greedy)
            # the variant is the profile table's choice for this adapter (tests/test_gpu_* pin those)
            variants = {p["variant"] for p in bundle.manifest["profiles"]}
            assert greedy["path"] == "webgpu" and greedy["variant"] in variants, (name, fmt, greedy["notes"])
            assert greedy["tokenIds"] == case["greedy_tokens"], (name, fmt)
            assert (out["argmaxParts"] > 1) == (name == "llama-wide-vocab"), out["argmaxParts"]
            if fmt == "e8p":  # every layer's Q|K|V one product over one rotation of its input
                fused = session.evaluate("() => [...window.ulpqDemo.model.backend.fused.keys()]")
                assert all(layer["query"]["weight"] in fused for layer in model["layers"]), fused
            if not extra:
                continue
            weights = bundle.weights
            assert out["long"]["tokenIds"] == dc.greedy_tokens(model, weights, [LONG_PROMPT], 16), (name, fmt)
            sampled = out["sampling"]["tokenIds"]
            assert sampled == _sampled(model, weights, case["prompt_ids"], SAMPLING) != case["greedy_tokens"][:16]
            assert out["end"]["finishReason"] == "max_position" and len(out["end"]["tokenIds"]) == 5
            assert out["end"]["tokenIds"] == dc.greedy_tokens(model, weights, [end]), (name, fmt)
            assert out["again"]["tokenIds"] == case["greedy_tokens"]
            assert out["long_step"]["tokenIds"] == case["greedy_tokens"], (name, fmt)
            assert "decoder:step:long:argmax" in out["long_step"]["plans"], out["long_step"]["plans"]
            check_steady(session.evaluate(COUNT, {"ids": case["prompt_ids"]}), case, packed=fmt != "float32")
    finally:
        session.close()


@pytest.mark.parametrize("browser", BROWSERS)
def test_auto_generates_on_the_cpu_path_on_a_cpu_adapter(served, browser):
    """hardware 'auto' (verify's default) with a decoder on a CPU implementation of WebGPU (SwiftShader,
    lavapipe here) takes the CPU path, says why, and still gives numpy's tokens."""
    from ulpq_build.browser_check import check_in_browser

    server, bundles = served
    (name, fmt), folder = next(iter(bundles.items()))
    session = launch(browser)
    try:
        result = check_in_browser(session, f"{server.url}{folder.name}/index.html", load_bundle(folder), browser)
    finally:
        session.close()
    assert result.passed and result.value == 0 and result.path == "cpu", (name, fmt, result)
    assert any("CPU implementation" in n for n in result.notes), result.notes


def check_steady(out, case, packed):
    """A second generation at one prompt length replays the prefill plan and the decode-step plan: no
    buffer, bind group, pipeline or shader; one submit and one compute pass per token; per pass the
    writes of its inputs (token ids, positions; the prefill's last-row index) and one params write for
    the steps whose cache slot moved; 4 bytes read back per greedy token. From the second decode step
    on, the token id is not written: each step's argmax is copied on the device into the step plan's
    input, and the next step is submitted before the token is read back (GpuDecoder.next); no step
    runs past the last token asked for. A gated layer's gate and up weights are one product (fused at
    upload as views: nothing stored twice). Where the model's norm is RMSNorm and its products are packed,
    a decode step runs no norm or gate-product dispatch of its own: each is fused into the GEMV after it
    (kernels.PROLOGUE; bundle.py ships those variants for packed storages only)."""
    counts = out["counts"]
    assert out["path"] == "webgpu" and out["tokenIds"] == case["greedy_tokens"] and out["steps"] == 31
    created = {k: v for k, v in counts.items() if k.startswith("create") and k != "createCommandEncoder"}
    assert created == {}, counts
    passes = 1 + out["steps"]
    assert counts["submit"] == passes and counts["beginComputePass"] == passes, counts
    assert counts["writeBuffer"] == 3 + 3 + 2 * (out["steps"] - 1), counts
    assert out["mapped"] == [4] * passes, out["mapped"]
    assert set(out["gates"]) <= set(out["fused"]), (out["gates"], out["fused"])
    step = [p["kinds"] for p in out["plans"] if p["key"] == "decoder:step:argmax"]
    assert len(step) == 1, [p["key"] for p in out["plans"]]
    kinds = step[0]
    # the decode step's append, attention and combine: one dispatch per layer while the cache is short
    assert kinds.count("step_attention") == out["layers"], kinds
    assert not {"cache_append", "cache_attention_split", "attention_combine"} & set(kinds), kinds
    if out["norm"] == "rms" and packed:
        assert "rmsnorm" not in kinds and "gated" not in kinds, kinds
        fused_norms = sum(k.endswith("+norm") for k in kinds)  # Q|K|V (one or three products), gate|up, the head
        assert fused_norms >= 2 * out["layers"] + 1, kinds
        if out["gates"]:
            assert kinds.count("linear+gate") == out["layers"], kinds
    else:
        assert kinds.count("layernorm" if out["norm"] != "rms" else "rmsnorm") == 2 * out["layers"] + 1, kinds


def test_bench_gpu_decode_smoke(tmp_path):
    """scripts/bench_gpu_decode.py --tiny: the model, a bundle, the Node run and the table, end to end
    (here on the CPU path: Node finds no WebGPU adapter on this machine); its greedy tokens equal the
    bundle's numpy tokens."""
    import subprocess
    import sys

    from support import ROOT

    proc = subprocess.run([sys.executable, str(ROOT / "scripts/bench_gpu_decode.py"), "--tiny", "--hardware", "auto",
                           "--formats", "int4", "--repeats", "1", "--new-tokens", "8", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((tmp_path / "out/gpu_decode.json").read_text())
    row, = results["rows"]
    assert row["matches_reference"] is True and row["tokens_per_second"] > 0 and row["weight_bytes"] > 0
    assert "| int4 |" in (tmp_path / "out/gpu_decode.md").read_text()


def test_dispatch_js_decoder_rules_equal_kernels_py(tmp_path):
    """dispatch.js's copies of decode_chunks, argmax_split and the cache_attention / row_parts grids give
    what kernels.py gives, for every profile's variants over a spread of shapes."""
    from support import ROOT, node_json

    from ulpq_build import kernels
    from ulpq_build.profiles import PROFILES

    cases, want = [], []
    for profile in PROFILES:
        split = kernels.KernelVariant.make("cache_attention_split", profile)
        parts = kernels.KernelVariant.make("argmax_parts", profile)
        for slots, kv, rows in [(1, 1, 1), (7, 2, 1), (128, 8, 1), (4096, 8, 1), (4096, 2, 4), (32768, 8, 1), (300, 1, 3)]:
            chunk, chunks = kernels.decode_chunks(split, slots, kv, rows)
            dims = {"chunks": chunks, "kv_heads": kv, "rows": rows}
            cases.append({"shader": split.to_manifest(), "slots": slots, "kv_heads": kv, "rows": rows,
                          "target": kernels.SPLIT_TARGET_WORKGROUPS, "dims": dims})
            want.append({"chunks": [chunk, chunks], "grid": list(kernels.workgroups(split, dims))})
        for cols in (1, 300, 2048, 4500, 128256):
            n, span = kernels.argmax_split(parts, cols)
            dims = {"rows": 3, "parts": n}
            cases.append({"shader": parts.to_manifest(), "cols": cols, "dims": dims})
            want.append({"argmax": [n, span], "grid": list(kernels.workgroups(parts, dims))})
    got = node_json(ROOT / "tests/js/decoder_dispatch.mjs", request=cases, tmp_path=tmp_path)
    for case, g, w in zip(cases, got, want):
        assert {k: g[k] for k in w} == w, (case["shader"]["key"], case.get("slots"), case.get("cols"))


# A Llama whose tied head is wide and deep enough for the lookup-table GEMV at int2 (kernels.gemv_depth:
# at least GEMV_WIDE_N outputs, K a multiple of 512): the kernel a 1B model's head and gate|up run on a
# GPU, here executed by the browsers' own shader compilers on their CPU adapters (the page is told the
# GPU profiles, whose tiles carry the tables; the cpu profile's do not).
LUT_MODEL = dict(hidden_size=2048, intermediate_size=256, num_hidden_layers=1, num_attention_heads=16,
                 num_key_value_heads=4, vocab_size=16384, max_position_embeddings=64)
LUT_PROFILES = {"chromium": "chrome", "firefox": "firefox"}


@pytest.fixture(scope="module")
def lut_bundle(tmp_path_factory):
    from transformers import LlamaConfig

    folder = _build(tmp_path_factory.mktemp("decoder-lut-model") / "llama-lut", LlamaConfig(**LUT_MODEL, tie_word_embeddings=True), 0)
    root = tmp_path_factory.mktemp("decoder-lut-site")
    out = root / "llama-lut-int2"
    assert cli_main(["bundle", "--model", str(folder), "--out", str(out), "--format", "int2", "--group-size", "32",
                     "--method", "rtn"]) == 0
    yield from serving(root, out)


@pytest.mark.parametrize("browser", BROWSERS)
def test_lookup_table_head_generates_the_reference_tokens(lut_bundle, browser):
    """An int2 bundle whose 16384 x 2048 head (with the RMSNorm prologue) takes the lookup-table GEMV:
    32 greedy tokens identical to numpy's in Chromium and Firefox on WebGPU, outputs poisoned."""
    server, folder = lut_bundle
    bundle = load_bundle(folder)
    profile = LUT_PROFILES[browser]
    head = bundle.manifest["model"]["lm_head"]["kernels"][profile]["gemv_norm"]  # the final RMSNorm fused in
    assert ".deep-lut." in head, head
    case = bundle.manifest["verification"]
    session = launch(browser)
    try:
        _open(session, f"{server.url}{folder.name}/index.html?run=0&poison=1&hardware=webgpu&profile={profile}")
        out = session.evaluate(GENERATE, {"ids": case["prompt_ids"], "long": [], "sampling": {}, "end": [], "extra": False})
    finally:
        session.close()
    greedy = out["greedy"]
    assert "error" not in greedy, greedy
    assert greedy["path"] == "webgpu" and greedy["variant"] == get_profile(profile).variant, greedy["notes"]
    assert greedy["tokenIds"] == case["greedy_tokens"]
