"""The CPU path's fast decoder passes: on the wasm backend a pass (prefill or one decode step) is one
recorded program over the wasm memory (decoder_cpu.js wasmDecoderSession, the non-product kernels in
decoder_wasm_ops.js), and the plain-JS path multiplies one row of x by the packed words in place
(ops_cpu.js rowDot). Compared with the numpy reference (decoder_reference) on random-weight Llama
(GQA, untied head) and GPT-2 bundles, with the session's memory poisoned (NaN) first, on one and two
worker threads; the fused row product against the decode-a-row product. The 32 greedy tokens
through generate() in Node, Chromium and Firefox are tests/test_decoder_bundle.py's."""

from __future__ import annotations

import numpy as np
import pytest

from support import ROOT, node_json
from ulpq_build import decoder_reference as dr
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main

SESSION = ROOT / "tests/js/decoder_session.mjs"
ROW_DOT = ROOT / "tests/js/row_dot.mjs"
# last-row logits of a pass vs numpy float64 over the same dequantized weights: float32 products and
# activations over these small models differ by ~1e-5 of the logits' range; a wrong cache slot,
# position or head is off by far more than this
LOGIT_TOLERANCE = 1e-3
BUNDLES = {"llama-int4": ("llama-gqa-untied", ["--format", "int4", "--group-size", "32"]),
           "llama-int2": ("llama-gqa-untied", ["--format", "int2", "--group-size", "32"]),
           "gpt2-int8": ("gpt2", ["--format", "int8"]), "qwen2-float32": ("qwen2-gqa-tied-bias", ["--format", "float32"])}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from test_decoder_bundle import _build, _configs

    configs = _configs()
    models, out = {}, {}
    for label, (name, options) in BUNDLES.items():
        if name not in models:
            config, seed = configs[name]
            models[name] = _build(tmp_path_factory.mktemp(name), config, seed)
        folder = tmp_path_factory.mktemp("bundles") / label
        assert cli_main(["bundle", "--model", str(models[name]), "--out", str(folder), *options]) == 0
        out[label] = folder
    return out


def _reference_passes(folder, prompt, steps):
    bundle = load_bundle(folder)
    model, weights = bundle.manifest["model"], bundle.weights
    logits, cache = dr.prefill(model, weights, np.array([prompt]))
    passes = [logits[0, -1]]
    for token in steps:
        logits, cache = dr.step(model, weights, np.array([token]), cache)
        passes.append(logits[0])
    return passes


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("label", list(BUNDLES))
def test_wasm_session_passes_match_numpy(bundles, label, threads, tmp_path):
    check_wasm_session(bundles[label], threads, tmp_path, label)


def check_wasm_session(folder, threads, tmp_path, label):
    """The bundle's wasm decoder session (SESSION, outputs poisoned): the prefill of its verification
    prompt and six one-row decode steps, each pass's logits against numpy's within LOGIT_TOLERANCE
    (relative to the largest logit) and with numpy's argmax."""
    case = load_bundle(folder).manifest["verification"]
    prompt, steps = case["prompt_ids"], case["greedy_tokens"][:6]
    got = node_json(SESSION, folder, request={"promptIds": prompt, "steps": steps, "threads": threads, "poison": True},
                    tmp_path=tmp_path)
    assert got["kind"] == "wasm-simd" and got["threads"] == threads
    want = _reference_passes(folder, prompt, steps)
    assert len(got["passes"]) == len(want) == len(steps) + 1
    for i, (g, w) in enumerate(zip(got["passes"], want)):
        g = np.asarray(g, np.float64)
        assert np.isfinite(g).all(), (label, i)
        scale = max(1.0, float(np.abs(w).max()))
        assert np.abs(g - w).max() <= LOGIT_TOLERANCE * scale, (label, i, float(np.abs(g - w).max()))
        assert int(g.argmax()) == int(w.argmax()), (label, i)


@pytest.mark.parametrize("label", ["llama-int4", "llama-int2", "gpt2-int8", "qwen2-float32"])
def test_js_row_product_equals_the_decoded_row_product(bundles, label):
    """The fused one-row product reads each weight as the row decoder writes it: the same sums, bit for bit."""
    got = node_json(ROW_DOT, bundles[label])
    assert got
    for name, (worst, rows, fused) in got.items():
        assert fused, name  # words of uniform codes and raw float32 take the fused product
        assert rows > 0 and worst == 0, (name, worst)
