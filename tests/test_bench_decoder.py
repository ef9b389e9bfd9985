"""`bench` on generative decoders: accuracy is perplexity on the shipped held-out text with the numpy
reference over each bundle's weights (architectures/decoder_bench.py), speed is decode tokens per
second from generate()'s timings. Kept fast: a small random Llama, float32 and int4, three windows,
Node as the runtime; the trained model's first windows against the figure training.json recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_decoder_bundle import SMALL, _build

from ulpq_build.architectures import decoder_bench, describe_model, model_tensors
from ulpq_build.bench import run_bench
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.decoder_reference import reference_forward
from ulpq_build.model_source import open_model
from ulpq_build.report import markdown_tables
from ulpq_build.resources import models_dir

TRAINED = models_dir() / "llama-pydoc"
# the same float64 reference and windows as scripts/train_decoder.py: only summation order differs
PERPLEXITY_RTOL = 1e-6


def nll(logits: np.ndarray, windows: np.ndarray) -> float:
    """Summed negative log-likelihood of tokens 1.. of each window, through log-softmax (not decoder_bench's code)."""
    logits = np.asarray(logits, np.float64)[:, :-1]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(log_probs, windows[:, 1:, None], axis=-1).sum())


def test_trained_model_windows_give_training_json_perplexity():
    """The first windows of the held-out text through the trained model's tokenizer are the windows
    scripts/train_decoder.py scored: their perplexity is training.json's slice figure."""
    training = json.loads((TRAINED / "training.json").read_text())
    recorded = training["perplexity"]
    source = open_model(TRAINED)
    model = describe_model(source)
    weights = {n: np.array(source.weights.tensor(n), np.float32) for n in model_tensors(model)}
    windows = decoder_bench.held_out_windows(model, TRAINED / "tokenizer.json", max_windows=recorded["slice_windows"])
    assert windows.shape == (recorded["slice_windows"], model["max_position"])
    got = decoder_bench.perplexity(model, weights, windows)
    assert got == pytest.approx(recorded["float32"]["slice_perplexity"], rel=PERPLEXITY_RTOL)


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    from transformers import LlamaConfig

    folder = _build(tmp_path_factory.mktemp("bench-decoder-model") / "llama", LlamaConfig(**SMALL, tie_word_embeddings=False), 0)
    out = tmp_path_factory.mktemp("bench-decoder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decoder_bench, "MAX_WINDOWS", 3)
        result = run_bench(str(folder), ["float32", "int4"], ["node"], out, repeats=1, log=lambda m: None)
    return result, out


def test_bench_scores_decoders_by_held_out_perplexity(benched):
    result, out = benched
    rows = {r["preset"]: r for r in result["rows"]}
    assert result["architecture"] == "llama" and set(rows) == {"float32", "int4"}
    for preset, row in rows.items():
        a = row["accuracy"]
        assert a["metric"] == "held-out perplexity" and a["tokens_scored"] == 3 * (SMALL["max_position_embeddings"] - 1)
        # recomputed here over the bundle's own weights and the same windows
        bundle = load_bundle(out / "bundles" / preset)
        tokenizer = bundle.folder / "tokenizer.json"
        windows = decoder_bench.held_out_windows(bundle.model, tokenizer, max_windows=3)
        want = math.exp(nll(reference_forward(bundle.model, bundle.weights, windows), windows) / (3 * (windows.shape[1] - 1)))
        assert a["value"] == pytest.approx(want, rel=1e-4)  # rounded to 4 decimals
        assert a["ratio"] == pytest.approx(100 * result["float32"] / want, abs=0.01)
    assert rows["float32"]["accuracy"]["ratio"] == 100.0
    assert rows["int4"]["accuracy"]["value"] != rows["float32"]["accuracy"]["value"]  # int4 rounding moves it
    assert [g["goal"] for g in result["goals"]] == [g.label for g in decoder_bench.GOALS]


def test_bench_measures_decode_speed(benched):
    result, _ = benched
    for row in result["rows"]:
        (node,) = row["browsers"]
        assert node["passed"] and node["path"] == "cpu", node  # 32 greedy tokens equal numpy's
        assert node["decode_tokens_per_second"] > 0 and node["decode_runs"] == 1, node
        assert 1 <= node["decode_steps"] <= 31 and node["prefill_ms"] > 0, node
    tables = markdown_tables(result)
    assert "held-out perplexity" in tables and "tokens/s" in tables
