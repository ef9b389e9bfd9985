"""Decoder bundles on the CPU path (issue 14, part 3): `bundle` writes Llama/Qwen2- and GPT-2-style
decoders with their tokenizer and a verification case (a prompt's ids and the numpy reference's
greedy tokens over the bundle's own weights); the runtime's generate() gives the same tokens under
Node (plain JS and wasm) and in Chromium and Firefox (headless, through `verify`'s check), for
float32, int8 and int4 bundles of random-weight models built with transformers' config classes;
generate.js's sampling (greedy, temperature, top-k, top-p, seeded PRNG) against a numpy
reimplementation; the demo page streams a generation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from support import ROOT, node_json, serving
from ulpq_build import decoder_reference as dr
from ulpq_build import evaluation as ev
from ulpq_build.architectures import decoder_common as dc
from ulpq_build.browser_check import check_in_browser, fixed_input
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.model_source import open_model
from ulpq_build.architectures import describe_model, model_tensors

import torch  # noqa: E402 (transformers builds the models: missing, these tests fail, never skip)
import transformers  # noqa: E402,F401

GENERATE = ROOT / "tests/js/generate_bundle.mjs"
SAMPLING = ROOT / "tests/js/sampling.mjs"
VOCAB = 300
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=VOCAB, max_position_embeddings=128)
FORMATS = {"float32": ["--format", "float32"], "int8": ["--format", "int8"],
           "int4": ["--format", "int4", "--group-size", "32"]}
BROWSERS = ("chromium", "firefox")
PROB_TOLERANCE = 1e-9  # candidates' probabilities, JS float64 vs numpy float64 from the same float32 logits
MIN_DISTINCT = 8  # a verification case whose greedy tokens repeat a few ids would prove little


def _configs():
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    # (config, weight seed): seeds whose 32 greedy tokens vary (MIN_DISTINCT)
    return {
        "llama-gqa-untied": (LlamaConfig(**SMALL, tie_word_embeddings=False), 0),
        "qwen2-gqa-tied-bias": (Qwen2Config(**SMALL, tie_word_embeddings=True), 0),
        "gpt2": (GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128), 3),
    }


def _build(folder, config, seed):
    """tests/test_decoders.py's random model (weights large enough that greedy decoding varies), saved
    as safetensors, with a byte-level BPE tokenizer.json trained on the shipped text."""
    from test_decoders import _build as build_model, _train_tokenizer

    build_model(folder, config, seed)
    _train_tokenizer(folder / "tokenizer.json", VOCAB)
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """{(model, format): bundle folder}, all under one root (one server for the browsers)."""
    root = tmp_path_factory.mktemp("decoder-site")
    models = tmp_path_factory.mktemp("decoder-models")
    bundles = {}
    for name, (config, seed) in _configs().items():
        folder = _build(models / name, config, seed)
        for fmt, options in FORMATS.items():
            out = root / f"{name}-{fmt}"
            assert cli_main(["bundle", "--model", str(folder), "--out", str(out), *options]) == 0
            bundles[name, fmt] = out
    return root, models, bundles


# --- the bundle -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(_configs()))
def test_bundle_carries_the_graph_tokenizer_and_a_verification_case(site, name, fmt):
    root, models, bundles = site
    folder = bundles[name, fmt]
    bundle = load_bundle(folder)
    m = bundle.manifest
    model = m["model"]
    case = m["verification"]
    tokenizer = ev.load_tokenizer(models / name / "tokenizer.json")
    assert case["prompt"] == dc.DEMO_PROMPT and case["prompt_ids"] == tokenizer.encode(dc.DEMO_PROMPT).ids
    # the reference's greedy tokens over the bundle's own (dequantized) weights, recomputed here
    expected = [int(t) for t in dr.generate_greedy(model, bundle.weights, np.array([case["prompt_ids"]]), 32)[0]]
    assert case["greedy_tokens"] == expected and len(set(expected)) >= MIN_DISTINCT
    if fmt == "float32":  # the bundle's weights are the checkpoint's: the same tokens as from the folder
        source = open_model(models / name)
        weights = {n: source.weights.tensor(n) for n in model_tensors(describe_model(source))}
        assert expected == [int(t) for t in dr.generate_greedy(model, weights, np.array([case["prompt_ids"]]), 32)[0]]
    assert {f["file"] for f in m["files"]} >= {"tokenizer.json", "cpu-kernels.wasm"}
    assert (folder / "tokenizer.json").read_bytes() == (models / name / "tokenizer.json").read_bytes()
    assert model["tokenizer"] == {"files": ["tokenizer.json"]} and "eos_token_ids" in model
    # the WebGPU decoder's WGSL ships beside the CPU path's wasm (tests/test_decoder_webgpu.py runs it)
    assert m["shaders"] and m["shader_files"] and (folder / "shaders").is_dir()
    # packed weights stay packed: every matrix in the requested format, each tensor once (a tied head is
    # the word table itself), the shards hold those parts and nothing else (no float32 copy)
    matrices = [t for t in m["tensors"] if len(t["shape"]) == 2]
    assert {t["format"] for t in matrices} == {fmt}
    names = [t["name"] for t in m["tensors"]]
    assert len(names) == len(set(names)) and ("lm_head.weight" in names) == (not model["tied_lm_head"])
    parts = sum(p["length"] for t in m["tensors"] for p in t["parts"].values())
    assert parts <= sum(s["bytes"] for s in m["shards"]) < parts + 256 * sum(len(t["parts"]) for t in m["tensors"])
    if fmt != "float32":
        float32_bytes = 4 * sum(int(np.prod(t["shape"])) for t in m["tensors"])
        assert sum(s["bytes"] for s in m["shards"]) < float32_bytes / (2 if fmt == "int8" else 4)


def test_gate_and_up_share_kernels_at_every_size(site):
    """The runtime runs a gated FFN's gate and up as one product only where both nodes name the same
    kernels (backend_webgpu.js fusedLayout); their tiles follow the fused product's outputs. At Llama-3.2-1B's
    sizes (8192 each, from 2048 inputs) the pair takes the wide tiles; a choice by the gate's outputs
    alone once gave gate and up different tiles and split every layer's product in two (100 dispatches
    a step instead of 84, int4 -17% on the H200)."""
    from ulpq_build.bundle import plan_shaders
    from ulpq_build.quantspec import QuantSpec

    root, models, bundles = site
    manifest = load_bundle(bundles["llama-gqa-untied", "int4"]).manifest
    model = json.loads(json.dumps(manifest["model"]))
    for layer in model["layers"]:
        for role in ("gate", "up"):
            layer[role].update(in_features=2048, out_features=8192)
    specs = {t["name"]: QuantSpec("int4", 0) for t in manifest["tensors"]}
    plan_shaders(model, specs)
    for layer in model["layers"]:
        assert layer["gate"]["kernels"] == layer["up"]["kernels"]
        assert ".deep-wide." in layer["gate"]["kernels"]["chrome"]["gemv"]


def test_bundle_without_a_tokenizer_is_one_line_and_writes_nothing(site, tmp_path, main):
    root, models, bundles = site
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(models / "gpt2", folder)
    (folder / "tokenizer.json").unlink()
    status, _, err = main("bundle", "--model", folder, "--out", tmp_path / "out", "--format", "int4")
    assert status == 2 and dc.NO_TOKENIZER in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


# --- generate() under Node --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(_configs()))
def test_node_generates_the_reference_tokens_on_both_cpu_paths(site, name, tmp_path):
    """Every format, the prompt as text (plain JS) and as ids (wasm): the verification case's tokens,
    streamed one by one, decoded as `tokenizers` decodes them."""
    root, models, bundles = site
    tokenizer = ev.load_tokenizer(models / name / "tokenizer.json")
    for fmt in FORMATS:
        case = json.loads((bundles[name, fmt] / "manifest.json").read_text())["verification"]
        runs = [{"prompt": case["prompt"], "options": {"maxNewTokens": 32}, "load": {"hardware": "cpu", "cpu": "js"}},
                {"prompt": case["prompt_ids"], "options": {"maxNewTokens": 32}, "load": {"hardware": "cpu", "cpu": "wasm"}}]
        for run, kind in zip(node_json(GENERATE, bundles[name, fmt], request={"runs": runs}, tmp_path=tmp_path),
                             ("js", "wasm-simd")):
            assert "error" not in run, run
            assert run["kind"] == kind and run["path"] == "cpu" and run["variant"] is None
            assert run["tokenIds"] == case["greedy_tokens"], (name, fmt, kind)
            assert run["promptIds"] == case["prompt_ids"] and run["finishReason"] == "length"
            assert [s["token"] for s in run["streamed"]] == run["tokenIds"]
            assert [s["index"] for s in run["streamed"]] == list(range(32))
            assert run["text"] == tokenizer.decode(run["tokenIds"], skip_special_tokens=True)
            assert run["text"].startswith("".join(s["text"] for s in run["streamed"]))
            t = run["timings"]
            assert t["prompt_tokens"] == len(case["prompt_ids"]) and t["decode_steps"] == 31 and t["tokens_per_second"] > 0


def _mulberry32(seed: int):
    """generate.js's createRng, in Python (uint32 arithmetic)."""
    mask = 0xFFFFFFFF
    state = seed & mask
    while True:
        state = (state + 0x6D2B79F5) & mask
        t = state
        t = ((t ^ (t >> 15)) * (t | 1)) & mask
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & mask)) & mask
        yield ((t ^ (t >> 14)) & mask) / 2**32


def _reference_candidates(logits, temperature, top_k, top_p) -> dict[int, float]:
    """transformers' temperature, top-k and top-p warpers (TopKLogitsWarper, TopPLogitsWarper) on
    float64 scores: the ids left with a probability, and it."""
    scores = np.asarray(logits, np.float64) / temperature
    if 0 < top_k < len(scores):
        scores = np.where(scores < np.sort(scores)[-top_k], -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p < 1:
        order = np.argsort(probs, kind="stable")
        remove = np.cumsum(probs[order]) <= 1 - top_p
        remove[-1] = False
        scores[order[remove]] = -np.inf
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
    return {int(i): float(p) for i, p in enumerate(probs) if p > 0}


def _reference_draw(candidates: dict[int, float], u: float) -> int:
    """The candidate u lands on, walking from the most probable (ties: lower id first)."""
    total = 0.0
    ranked = sorted(candidates.items(), key=lambda kv: (-kv[1], kv[0]))
    for token, p in ranked:
        total += p
        if u < total:
            return token
    return ranked[-1][0]


def test_node_sampling_follows_the_seed_and_the_reference(site, tmp_path):
    """Temperature, top-k and top-p with a seed: the same tokens as numpy's reference logits through
    transformers-style warpers and the same PRNG; the same seed repeats the run, another changes it."""
    root, models, bundles = site
    folder = bundles["llama-gqa-untied", "float32"]
    bundle = load_bundle(folder)
    model, case = bundle.model, bundle.manifest["verification"]
    options = {"maxNewTokens": 24, "temperature": 0.9, "topK": 40, "topP": 0.9, "seed": 7}
    runs = [{"prompt": case["prompt_ids"], "options": options},
            {"prompt": case["prompt_ids"], "options": options, "load": {"hardware": "cpu", "cpu": "js"}},
            {"prompt": case["prompt_ids"], "options": {**options, "seed": 8}}]
    same, js, other = node_json(GENERATE, folder, request={"runs": runs}, tmp_path=tmp_path)
    random = _mulberry32(7)
    logits, cache = dr.prefill(model, bundle.weights, np.array([case["prompt_ids"]]))
    row, expected = logits[0, -1], []
    for _ in range(24):
        token = _reference_draw(_reference_candidates(row.astype(np.float32), 0.9, 40, 0.9), next(random))
        expected.append(token)
        step, cache = dr.step(model, bundle.weights, [token], cache)
        row = step[0]
    assert same["tokenIds"] == expected == js["tokenIds"] and same["seed"] == 7
    assert other["seed"] == 8 and other["tokenIds"] != expected
    assert expected != case["greedy_tokens"][:24]  # sampling, not greedy


def test_node_generate_stops_aborts_and_refuses(site, tmp_path):
    root, models, bundles = site
    folder = tmp_path / "eos"
    shutil.copytree(bundles["gpt2", "int8"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    greedy = manifest["verification"]["greedy_tokens"]
    eos = next(t for t in greedy[3:] if t not in greedy[:3])  # a token first generated at index >= 3
    manifest["model"]["eos_token_ids"] = [eos]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ids = manifest["verification"]["prompt_ids"]
    runs = [{"prompt": ids, "options": {}},  # default: greedy, 32 tokens, eos ends it
            {"prompt": ids, "options": {"maxNewTokens": 32}, "abortAfter": 2},
            {"prompt": ids, "options": {"maxNewTokens": 0}},
            {"prompt": ids, "options": {"topP": 0}},
            {"prompt": ids, "options": {"maxNewTokens": 4, "temprature": 1}},
            {"prompt": [VOCAB], "options": {}},
            {"prompt": "", "options": {}, "stream": False},
            {"prompt": "x", "call": "process"},
            {"prompt": ids, "options": {}, "load": {"hardware": "webgpu"}}]
    end, aborted, none, top_p, typo, bad_id, empty, process, webgpu = node_json(
        GENERATE, folder, request={"runs": runs}, tmp_path=tmp_path)
    assert end["tokenIds"] == greedy[:greedy.index(eos) + 1] and end["finishReason"] == "eos"
    assert aborted["error"]["name"] == "AbortError" and len(aborted["streamed"]) == 2
    assert none["tokenIds"] == [] and none["finishReason"] == "length"
    assert top_p["error"]["name"] == "RangeError" and "topP" in top_p["error"]["message"]
    assert typo["error"]["name"] == "TypeError" and "temprature" in typo["error"]["message"]
    assert bad_id["error"]["name"] == "TypeError" and str(VOCAB) in bad_id["error"]["message"]
    assert empty["error"]["name"] == "TypeError" and "no tokens" in empty["error"]["message"]
    assert process["error"]["name"] == "TypeError" and "generate(" in process["error"]["message"]
    assert webgpu["error"]["name"] == "GpuUnavailable"  # Node here has no WebGPU adapter


def test_node_generation_ends_at_the_last_position(site, tmp_path):
    root, models, bundles = site
    folder = bundles["llama-gqa-untied", "int4"]
    model = json.loads((folder / "manifest.json").read_text())["model"]
    prompt = list(range(1, model["max_position"] - 3))  # 124 tokens of 128 positions: 5 new tokens fit
    run, = node_json(GENERATE, folder, request={"runs": [{"prompt": prompt, "options": {"maxNewTokens": 32}}]},
                     tmp_path=tmp_path)
    weights = load_bundle(folder).weights
    assert run["finishReason"] == "max_position" and len(run["tokenIds"]) == dc.steps_for(model, len(prompt)) == 5
    assert run["tokenIds"] == dc.greedy_tokens(model, weights, [prompt])


# --- sampling (generate.js) ------------------------------------------------------------------------

def test_sampling_matches_a_numpy_reimplementation(rng, tmp_path):
    cases = []
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.8, 12, 0.6),
                                      (2.0, 1, 1.0), (0.5, 0, 0.05), (1.0, 64, 0.95)]:
        logits = (rng.standard_normal(50) * 3).astype(np.float32)
        cases.append({"logits": logits.tolist(), "temperature": temperature, "topK": top_k, "topP": top_p,
                      "us": rng.random(16).tolist()})
    ties = [1.0, 3.0, -2.0, 3.0, 3.0]
    greedy_logits = [(rng.standard_normal(40)).astype(np.float32).tolist() for _ in range(5)] + [ties]
    request = {"cases": cases, "rng": {"seed": 123456789, "n": 64}, "greedy": greedy_logits}
    out = node_json(SAMPLING, request=request, tmp_path=tmp_path)
    for case, got in zip(cases, out["cases"]):
        want = _reference_candidates(np.float32(case["logits"]), case["temperature"], case["topK"], case["topP"])
        assert sorted(got["ids"]) == sorted(want), case
        assert np.allclose(got["probs"], [want[i] for i in got["ids"]], rtol=0, atol=PROB_TOLERANCE)
        assert list(got["probs"]) == sorted(got["probs"], reverse=True)
        assert got["picks"] == [_reference_draw(want, u) for u in case["us"]]
    assert [len(got["ids"]) for got in out["cases"]][5] == 1  # top-k 1 leaves one token
    numbers = _mulberry32(123456789)
    assert out["rng"] == [next(numbers) for _ in range(64)] and all(0 <= u < 1 for u in out["rng"])
    assert out["greedy"] == [int(np.argmax(x)) for x in greedy_logits] and out["greedy"][-1] == 1  # ties: lowest id


def test_sampled_frequencies_follow_the_probabilities(rng, tmp_path):
    logits = (rng.standard_normal(12) * 2).astype(np.float32)
    options = {"temperature": 0.8, "topK": 8, "topP": 0.9}
    draws = 20000
    out = node_json(SAMPLING, request={"counts": {"logits": logits.tolist(), "options": options, "seed": 5,
                                                   "draws": draws}}, tmp_path=tmp_path)
    want = _reference_candidates(logits, 0.8, 8, 0.9)
    counts = np.asarray(out["counts"])
    assert all(counts[i] == 0 for i in range(12) if i not in want)
    for token, p in want.items():  # within 5 standard deviations of a binomial count
        assert abs(counts[token] / draws - p) <= 5 * np.sqrt(p * (1 - p) / draws), (token, counts[token], p)


def test_generate_options_are_checked(tmp_path):
    options = [{}, {"maxNewTokens": 5, "temperature": 0.5, "topK": 3, "topP": 0.5, "seed": 9},
               {"maxNewTokens": -1}, {"maxNewTokens": 1.5}, {"temperature": -0.1}, {"temperature": "hot"},
               {"topK": 2.5}, {"topP": 1.5}, {"seed": 0.5}, {"onToken": 3}, {"signal": {}}, {"max_new_tokens": 3}]
    out = node_json(SAMPLING, request={"options": options}, tmp_path=tmp_path)["options"]
    assert out[0]["ok"] == {"maxNewTokens": 32, "temperature": 0, "topK": 0, "topP": 1, "seed": None}
    assert out[1]["ok"] == {"maxNewTokens": 5, "temperature": 0.5, "topK": 3, "topP": 0.5, "seed": 9}
    kinds = [o["error"]["name"] for o in out[2:]]
    assert kinds == ["RangeError", "RangeError", "RangeError", "TypeError", "RangeError", "RangeError", "RangeError",
                     "TypeError", "TypeError", "TypeError"]
    for o, key in zip(out[2:], ["maxNewTokens", "maxNewTokens", "temperature", "temperature", "topK", "topP", "seed",
                                "onToken", "signal", "max_new_tokens"]):
        assert key in o["error"]["message"], o


# --- browsers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(site):
    root, models, bundles = site
    yield from serving(root, bundles)


@pytest.mark.parametrize("browser", BROWSERS)
def test_browsers_generate_the_reference_tokens(served, browser):
    """`verify`'s check in each browser over every bundle: 32 greedy tokens identical to numpy's over
    the bundle's weights, on the CPU path (asked for: WebGPU runs them in tests/test_decoder_webgpu.py),
    said so in the notes. A browser that does not start fails the test."""
    server, bundles = served
    session = launch(browser)
    try:
        for (name, fmt), folder in bundles.items():
            bundle = load_bundle(folder)
            result = check_in_browser(session, f"{server.url}{folder.name}/index.html", bundle, browser,
                                      query="&hardware=cpu")
            assert result.passed and result.error is None, (name, fmt, result)
            assert result.metric == "tokens differing" and result.value == 0 and result.path == "cpu"
            assert "CPU path requested" in result.notes, result.notes
            assert any("WebAssembly SIMD kernels" in n for n in result.notes), result.notes
    finally:
        session.close()


def test_browser_check_fails_on_a_wrong_token_and_the_demo_streams(served):
    """The check is not vacuous: one expected token changed is one token differing, a FAIL. Then the
    demo page (autorun): the prompt box, the streamed text, tokens per second."""
    server, bundles = served
    folder = bundles["qwen2-gqa-tied-bias", "int4"]
    bundle = load_bundle(folder)
    kind, payload, expected, _ = fixed_input(bundle)
    wrong = [expected[0] + 1, *expected[1:]]
    session = launch("chromium")
    try:
        result = check_in_browser(session, f"{server.url}{folder.name}/index.html", bundle, "chromium",
                                  prepared=(kind, payload, wrong, lambda got: dc.tokens_differing(wrong, got)))
        assert not result.passed and result.value == 1
        session.goto(f"{server.url}{folder.name}/index.html")
        state = session.evaluate("""async () => {
          for (let i = 0; i < 600; i++) {
            const d = window.ulpqDemo;
            if (d && (d.status === 'done' || d.status === 'error')) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          const d = window.ulpqDemo;
          return { status: d.status, error: d.error, tokenIds: d.result && d.result.tokenIds,
                   prompt: document.getElementById('prompt').value, shown: document.getElementById('generated-text').textContent,
                   speed: document.getElementById('speed').textContent, hidden: document.getElementById('prompt-demo').hidden };
        }""")
    finally:
        session.close()
    assert state["status"] == "done", state
    assert state["tokenIds"] == expected and state["prompt"] == dc.DEMO_PROMPT and not state["hidden"]
    tokenizer = ev.load_tokenizer(folder / "tokenizer.json")
    assert state["shown"] == tokenizer.decode(expected, skip_special_tokens=True)
    assert "tokens/s" in state["speed"] and "32 new tokens" in state["speed"]
