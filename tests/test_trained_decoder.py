"""The committed Llama-style decoder (ulpq_build/models/llama-pydoc, made by scripts/train_decoder.py)
read through the project's readers: its description, its tokenizer, the numpy reference's perplexity
on a slice of its held-out text against the figure training.json records, and the reference against
transformers on that slice."""

import hashlib
import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

from ulpq_build.architectures import architecture_of, describe_model, model_tensors
from ulpq_build.decoder_reference import reference_forward
from ulpq_build.model_source import open_model
from ulpq_build.reference import relative_error
from ulpq_build.resources import models_dir

FOLDER = models_dir() / "llama-pydoc"
EOT = "<|endoftext|>"
# The slice's perplexity, recomputed here, against training.json's (the same float16 weights, tokenizer
# and float64 reference): only BLAS summation order may differ, so 1e-6 relative is ample
SLICE_PERPLEXITY_RTOL = 1e-6
# max |numpy float64 - transformers float32| / max |transformers| over the slice's logits (transformers'
# float32 matmuls and rotary leave ~1e-6; as tests/test_decoders.py's FLOAT32_TOLERANCE)
FLOAT32_TOLERANCE = 1e-4
# the two perplexities (numpy float64, transformers float32) on the slice
PERPLEXITY_AGREEMENT_RTOL = 1e-4


@pytest.fixture(scope="module")
def trained():
    training = json.loads((FOLDER / "training.json").read_text())
    source = open_model(FOLDER)
    model = describe_model(source)
    weights = {n: np.array(source.weights.tensor(n), np.float32) for n in model_tensors(model)}
    ppl = training["perplexity"]
    seq, count = model["max_position"], ppl["slice_windows"]
    text = (FOLDER / "heldout.txt").read_text(encoding="utf-8")
    ids = Tokenizer.from_file(str(FOLDER / "tokenizer.json")).encode(text + EOT, add_special_tokens=False).ids
    windows = np.asarray(ids[: count * seq], np.int64).reshape(count, seq)
    return {"training": training, "source": source, "model": model, "weights": weights, "text": text,
            "ids": ids, "windows": windows}


def nll_per_token(logits: np.ndarray, windows: np.ndarray) -> float:
    """Mean negative log-likelihood of each window's tokens 1.. given the ones before."""
    logits = np.asarray(logits, np.float64)[:, :-1]
    top = logits.max(axis=-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(log_probs, windows[:, 1:, None], axis=-1).mean())


def test_the_checkpoint_reads_as_the_llama_it_was_trained_as(trained):
    model, source, training = trained["model"], trained["source"], trained["training"]
    assert model["architecture"] == "llama" and model["tied_lm_head"]
    assert (model["num_layers"], model["hidden_size"], model["num_heads"], model["num_kv_heads"], model["head_dim"]) == (4, 256, 8, 2, 32)
    assert model["activation"] == "silu" and model["norm"] == "rms" and model["positions"]["kind"] == "rotary"
    assert model["bos_token_id"] == 0 and model["eos_token_ids"] == [0]
    assert model["tokenizer"] == {"files": ["tokenizer.json", "tokenizer_config.json"]}
    assert architecture_of(model).ships_calibration(model, source)  # quantize calibrates it on the shipped text
    assert {source.weights.dtype(n) for n in model_tensors(model)} == {"float16"}
    assert sum(w.size for w in trained["weights"].values()) == training["parameters"]
    assert sum(p.stat().st_size for p in FOLDER.iterdir()) < 8 << 20


def test_held_out_text_is_the_recorded_one_and_not_trained_on(trained):
    data = trained["training"]["data"]
    assert hashlib.sha256(trained["text"].encode()).hexdigest() == data["heldout_txt_sha256"]
    assert len(trained["ids"]) == data["heldout_tokens"]
    assert hashlib.sha256((FOLDER / "tokenizer.json").read_bytes()).hexdigest() == data["tokenizer_json_sha256"]
    # the calibration sentences (training text) are not in the held-out text
    calibration = (FOLDER.parents[1] / "data/calibration_text.txt").read_text(encoding="utf-8").splitlines()
    assert not [line for line in calibration if line.strip() and line in trained["text"]]


def test_reference_perplexity_matches_training_json(trained):
    windows = trained["windows"]
    logits = reference_forward(trained["model"], trained["weights"], windows)
    recorded = trained["training"]["perplexity"]["float32"]["slice_perplexity"]
    got = float(np.exp(nll_per_token(logits, windows)))
    assert got == pytest.approx(recorded, rel=SLICE_PERPLEXITY_RTOL)
    assert 1 < got < 1000  # a trained model: far below the 4096 of a uniform guess


def test_reference_matches_transformers_on_the_slice(trained):
    windows = trained["windows"]
    ours = reference_forward(trained["model"], trained["weights"], windows)
    torch_model = LlamaForCausalLM.from_pretrained(FOLDER, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(windows)).logits.numpy()
    assert relative_error(ours, theirs) < FLOAT32_TOLERANCE
    assert np.exp(nll_per_token(theirs, windows)) == pytest.approx(np.exp(nll_per_token(ours, windows)),
                                                                 rel=PERPLEXITY_AGREEMENT_RTOL)
