"""Generative decoders (issue 14, Python side): Llama/Qwen2/Mistral- and GPT-2-style rows and the numpy
reference with a KV cache (ulpq_build/decoder_reference.py), checked against transformers on tiny
random-weight models it builds and saves offline: prefill logits, cached decode steps, 16 greedy
tokens; tied and untied heads; every unsupported config field a one-line error naming it; quantize /
dequantize on these rows; bundle refused without the tokenizer a decoder bundle needs."""

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest

from support import run_cli, tiny_bert
from ulpq_build import architectures
from ulpq_build import decoder_reference as dr
from ulpq_build.architectures import CalibrationInputs, describe_model, model_tensors
from ulpq_build.architectures.reading import ACTIVATIONS
from ulpq_build.checkpoint import Checkpoint
from ulpq_build.errors import UserError
from ulpq_build.model_source import open_model
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import gelu, gelu_tanh, relative_error

import torch  # noqa: E402 (transformers, on torch, is the oracle here: missing, these tests fail, never skip)
import transformers  # noqa: E402,F401

VOCAB, SEQ, STEPS = 300, 12, 16
# max |ours - transformers| / max |transformers| over the logits:
# both in float64: transformers computes rotary angles and their cos/sin in float32 even in a float64
# model (ours in float64), which leaves about 1e-6; with learned positions (GPT-2) nothing is left
FLOAT64_TOLERANCE = {"rotary": 1e-5, "learned": 1e-12}
FLOAT32_TOLERANCE = 1e-4  # transformers in float32
CACHE_TOLERANCE = 1e-10  # prefill + cached steps against one forward over the whole sequence (both ours)
# quantized logits against float32's (relative_error). These random models (weights of std 0.15, so
# that greedy decoding varies) amplify weight error far more than trained ones; measured here:
# int8 per channel 0.017-0.046, int4 group 32 0.26-0.46
INT8_TOLERANCE = 0.1
INT4_TOLERANCE = 0.6

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=VOCAB, max_position_embeddings=128)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def _configs():
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    return {
        "llama-tied": lambda: LlamaConfig(**SMALL, tie_word_embeddings=True),
        "llama-untied-llama3-rope": lambda: LlamaConfig(**SMALL, tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE),
        "llama-linear-rope-bias": lambda: LlamaConfig(**SMALL, attention_bias=True, mlp_bias=True,
                                                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
        "qwen2": lambda: Qwen2Config(**SMALL, tie_word_embeddings=False),
        "qwen2-tied": lambda: Qwen2Config(**SMALL, tie_word_embeddings=True),
        "mistral": lambda: MistralConfig(**SMALL),  # sliding_window 4096 > 128 positions: never active
        "gpt2": lambda: GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128),
    }


def _build(folder, config, seed=0):
    """A transformers model with random weights large enough that greedy decoding is not one token
    over and over, saved as safetensors; returns the float64 torch model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (folder, float64 torch model, float32 torch model), built once for the module."""
    root = tmp_path_factory.mktemp("decoders")
    out = {}
    for name, make in _configs().items():
        model = _build(root / name, make())
        float32 = copy.deepcopy(model)
        out[name] = (root / name, model.double(), float32)
    return out


def _ours(folder):
    source = open_model(folder)
    model = describe_model(source)
    return model, {n: np.array(source.weights.tensor(n), np.float32) for n in model_tensors(model)}


def _ids(seed=1, batch=2, seq=SEQ):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq))


def _torch_greedy(model, ids, steps=STEPS):
    """transformers' greedy generate(), every prompt token attended (an explicit mask: without one,
    generate() takes the pad id's occurrences in the random prompt for padding)."""
    with torch.no_grad():
        out = model.generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                             max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[:, ids.shape[1]:].numpy()


@pytest.mark.parametrize("name", list(_configs()))
def test_reference_matches_transformers(built, name):
    folder, torch64, torch32 = built[name]
    model, weights = _ours(folder)
    ids = _ids()
    logits, cache = dr.prefill(model, weights, ids)
    with torch.no_grad():
        expected64 = torch64(torch.tensor(ids)).logits.numpy()
        expected32 = torch32(torch.tensor(ids)).logits.numpy()
    assert relative_error(logits, expected64) < FLOAT64_TOLERANCE[model["positions"]["kind"]]
    assert relative_error(logits, expected32) < FLOAT32_TOLERANCE

    tokens = dr.generate_greedy(model, weights, ids, STEPS)
    with torch.no_grad():
        generated = _torch_greedy(torch64, ids)
    assert tokens.shape == (2, STEPS)
    np.testing.assert_array_equal(tokens, generated)
    assert len(np.unique(tokens)) > 3  # the random model does not just repeat one token

    # the cache: the prompt's cache plus one step per generated token gives the logits of one
    # forward over the whole sequence
    full = np.concatenate([ids, tokens], axis=1)
    whole = dr.reference_forward(model, weights, full)
    steps = []
    for t in range(STEPS):
        step_logits, cache = dr.step(model, weights, tokens[:, t], cache)
        steps.append(step_logits)
    assert cache.length == SEQ + STEPS
    assert relative_error(np.stack(steps, 1), whole[:, SEQ:]) < CACHE_TOLERANCE
    with torch.no_grad():
        whole_torch = torch64(torch.tensor(full)).logits.numpy()
    assert relative_error(whole, whole_torch) < FLOAT64_TOLERANCE[model["positions"]["kind"]]


def test_left_padding_matches_transformers(built):
    """A left-padded batch: positions count real tokens (as generate() numbers them), padding is never
    attended to, and each row's logits are its own alone."""
    folder, torch64, _ = built["llama-untied-llama3-rope"]
    model, weights = _ours(folder)
    ids = _ids(seed=4)
    mask = np.ones(ids.shape)
    mask[0, :5] = 0
    logits, _ = dr.prefill(model, weights, ids, mask)
    alone, _ = dr.prefill(model, weights, ids[:1, 5:])
    assert relative_error(logits[0, 5:], alone[0]) < CACHE_TOLERANCE
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)
    with torch.no_grad():
        expected = torch64(torch.tensor(ids), attention_mask=torch.tensor(mask, dtype=torch.long),
                           position_ids=torch.tensor(positions)).logits.numpy()
    assert relative_error(logits[:, 5:], expected[:, 5:]) < FLOAT64_TOLERANCE[model["positions"]["kind"]]
    assert relative_error(logits[1], expected[1]) < FLOAT64_TOLERANCE[model["positions"]["kind"]]
    tokens = dr.generate_greedy(model, weights, ids, 4, mask)
    np.testing.assert_array_equal(tokens[:1], dr.generate_greedy(model, weights, ids[:1, 5:], 4))
    # right padding (calibration batches): real tokens never see the padding after them, and the hook
    # sees real tokens' rows only
    right = np.ones(ids.shape)
    right[1, 8:] = 0
    rows = []
    padded = dr.reference_forward(model, weights, type("Batch", (), {"ids": ids, "mask": right}),
                                  hook=lambda node, x: rows.append(len(x)))
    assert relative_error(padded[1, :8], dr.prefill(model, weights, ids[1:, :8])[0][0]) < CACHE_TOLERANCE
    assert set(rows) == {SEQ + 8}


def test_descriptions_carry_what_a_runtime_needs(built):
    llama, _ = _ours(built["llama-untied-llama3-rope"][0])
    assert (llama["num_heads"], llama["num_kv_heads"], llama["head_dim"], llama["vocab_size"]) == (4, 2, 16, VOCAB)
    assert llama["norm"] == "rms" and llama["activation"] == "silu" and llama["ffn"] == "gated"
    assert llama["positions"]["scaling"]["type"] == "llama3" and llama["positions"]["theta"] == 500000.0
    assert len(llama["positions"]["inv_freq"]) == 8
    assert llama["tied_lm_head"] is False and llama["lm_head"]["weight"] == "lm_head.weight"
    assert llama["layers"][0]["key"]["out_features"] == 32 and llama["layers"][0]["query"]["bias"] is None
    assert (llama["bos_token_id"], llama["eos_token_ids"]) == (1, [2])

    tied, _ = _ours(built["llama-tied"][0])
    assert tied["tied_lm_head"] and tied["lm_head"]["weight"] == tied["embeddings"]["word"]["table"] == "model.embed_tokens.weight"
    assert "lm_head.weight" not in model_tensors(tied)

    qwen, _ = _ours(built["qwen2"][0])
    assert qwen["layers"][1]["query"]["bias"] == "model.layers.1.self_attn.q_proj.bias"
    assert qwen["layers"][1]["attn_out"]["bias"] is None

    folder = built["gpt2"][0]
    gpt2, weights = _ours(folder)
    assert gpt2["activation"] == "gelu_tanh" and gpt2["norm"] == "layer" and gpt2["positions"] == {"kind": "learned"}
    assert gpt2["tied_lm_head"] and gpt2["eos_token_ids"] == []  # 50256 is past the tiny vocabulary
    qkv = gpt2["layers"][0]["qkv"]
    assert (qkv["out_features"], qkv["in_features"]) == (192, 64)
    # Conv1D weights read [out, in]: the transpose of what the file stores
    stored = open_model(folder).weights
    raw = Checkpoint(folder / "model.safetensors").file
    assert stored.shape(qkv["weight"]) == (192, 64) and raw.shape(qkv["weight"]) == (64, 192)
    np.testing.assert_array_equal(weights[qkv["weight"]], np.asarray(raw.tensor(qkv["weight"])).T)
    fc = gpt2["layers"][0]["fc"]
    assert stored.shape(fc["weight"]) == (256, 64) and stored.raw(fc["weight"]).flags["C_CONTIGUOUS"]


def test_tanh_gelu_is_not_the_erf_gelu(tmp_path):
    """gelu_new and its aliases are the tanh GELU; an encoder row, whose kernels compute the erf GELU
    only, refuses them instead of building a slightly different model."""
    assert {ACTIVATIONS[n] for n in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")} == {"gelu_tanh"}
    assert ACTIVATIONS["gelu"] == "gelu"
    x = np.linspace(-4, 4, 81)
    from transformers.activations import ACT2FN

    np.testing.assert_allclose(gelu_tanh(x), ACT2FN["gelu_new"](torch.tensor(x)).numpy(), rtol=0, atol=1e-12)
    assert np.abs(gelu_tanh(x) - gelu(x)).max() > 1e-4
    folder = tiny_bert(tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    with pytest.raises(UserError) as err:
        describe_model(open_model(folder))
    assert "hidden_act 'gelu_new'" in str(err.value) and "\n" not in str(err.value)


# --- unsupported configs ---------------------------------------------------------------------------

UNSUPPORTED = [  # (model, config.json change, the field the error names)
    ("mistral", {"sliding_window": 32}, "sliding_window"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 64}, "sliding_window"),
    ("llama-tied", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}}, "rope_parameters.rope_type"),
    ("llama-tied", {"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type"),
    ("llama-tied", {"num_local_experts": 4}, "num_local_experts"),
    ("qwen2", {"num_experts": 8}, "num_experts"),
    ("llama-tied", {"hidden_act": "gelu"}, "hidden_act"),
    ("llama-tied", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ("llama-tied", {"num_key_value_heads": 3}, "num_key_value_heads"),
    ("llama-tied", {"head_dim": None, "num_attention_heads": 5}, "num_attention_heads"),
    ("gpt2", {"add_cross_attention": True}, "add_cross_attention"),
    ("gpt2", {"activation_function": "relu"}, "activation_function"),
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
]


def _variant(built, tmp_path, name, change):
    folder = tmp_path / f"{name}-changed"
    shutil.copytree(built[name][0], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    return folder


@pytest.mark.parametrize("name, change, field", UNSUPPORTED, ids=[u[2] for u in UNSUPPORTED])
def test_unsupported_config_is_one_line_naming_the_field(built, tmp_path, name, change, field):
    folder = _variant(built, tmp_path, name, change)
    with pytest.raises(UserError) as err:
        describe_model(open_model(folder))
    message = str(err.value)
    assert field in message and "\n" not in message and "config.json" in message


def test_unsupported_config_exits_2_from_the_cli(built, tmp_path):
    folder = _variant(built, tmp_path, "mistral", {"sliding_window": 32})
    for command in (["bundle", "--model", folder, "--out", tmp_path / "b"],
                    ["quantize", folder, "--method", "gptq", "--out", tmp_path / "q.safetensors"]):
        result = run_cli(*command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "sliding_window = 32" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists() and not (tmp_path / "q.safetensors").exists()



def test_plain_quantize_of_a_refused_config_says_why_it_rounds_to_nearest(built, tmp_path, main):
    """`quantize` takes any checkpoint, but a known family it cannot describe must not quietly lose
    GPTQ: the output names the refused field and the method used instead."""
    folder = _variant(built, tmp_path, "mistral", {"sliding_window": 32})
    status, out, err = main("quantize", folder, "--out", tmp_path / "q.safetensors")
    assert status == 0, err
    note = [line for line in (out + err).splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "sliding_window = 32" in note[0] and "round-to-nearest" in note[0], out + err
    assert (tmp_path / "q.safetensors").is_file()

def test_bundle_without_a_tokenizer_is_refused(built, tmp_path, main):
    """These folders have no tokenizer.json, which a decoder bundle needs (tests/test_decoder_bundle.py
    bundles decoders that have one)."""
    for name in ("llama-tied", "gpt2"):
        out = tmp_path / f"bundle-{name}"
        status, _, err = main("bundle", "--model", built[name][0], "--out", out, "--format", "int4")
        assert status == 2 and "a decoder bundle needs the model's tokenizer.json" in err
        assert err.count("\n") == 1 and not out.exists()


# --- quantize and dequantize -----------------------------------------------------------------------

@pytest.mark.parametrize("name, fmt, tolerance", [("llama-untied-llama3-rope", "int8", INT8_TOLERANCE),
                                                  ("qwen2", "int4", INT4_TOLERANCE), ("gpt2", "int4", INT4_TOLERANCE)])
def test_quantize_dequantize_runs_in_the_reference(built, tmp_path, main, name, fmt, tolerance):
    folder = built[name][0]
    model, weights = _ours(folder)
    options = ["--format", fmt] + (["--group-size", "32"] if fmt == "int4" else [])
    status, _, err = main("quantize", folder, "--out", tmp_path / "q.safetensors", *options)
    assert status == 0, err
    status, _, err = main("dequantize", tmp_path / "q.safetensors", "--out", tmp_path / "restored.safetensors")
    assert status == 0, err
    restored_folder = tmp_path / "restored"
    restored_folder.mkdir()
    shutil.copy(folder / "config.json", restored_folder)
    shutil.move(tmp_path / "restored.safetensors", restored_folder / "model.safetensors")
    restored_model, restored = _ours(restored_folder)  # [out, in] matrices; GPT-2's are not transposed again
    assert restored_model == model
    for n in model_tensors(model):
        assert restored[n].shape == weights[n].shape
    # every matrix quantized as the [out, in] matrix it is (groups along its inputs), so the checkpoint
    # holds what quantizing the description's matrices directly gives
    spec = QuantSpec(format=fmt, group_size=32 if fmt == "int4" else 0)
    for n in model_tensors(model):
        if weights[n].ndim == 2:
            np.testing.assert_array_equal(restored[n], dequantize(quantize(n, weights[n], spec)), err_msg=n)
        else:
            np.testing.assert_array_equal(restored[n], weights[n], err_msg=n)
    ids = _ids(seed=7)
    expected = dr.reference_forward(model, weights, ids)
    got = dr.reference_forward(model, restored, ids)
    assert 0 < relative_error(got, expected) < tolerance


def test_gptq_calibrates_on_the_decoder_reference(built, tmp_path, main, monkeypatch):
    """`quantize --method gptq` through the row's calibration inputs (random ids here: the test model has
    no tokenizer) reaches every linear node, the tied head included; on layer 0's q/k/v, whose inputs
    are the float model's, GPTQ's layer error ||X (W - Q)^T|| is below round-to-nearest's. (The random
    models' end-to-end error is too chaotic to rank the methods by.)"""
    folder = built["llama-tied"][0]
    model, weights = _ours(folder)
    ids = _ids(seed=11, batch=8, seq=32)
    row = architectures.ARCHITECTURES["llama"]
    patched = dataclasses.replace(row, calibration_inputs=lambda model, folder, texts: CalibrationInputs(ids, ids[:2]))
    monkeypatch.setitem(architectures.ARCHITECTURES, "llama", patched)
    restored = {}
    for method in ("rtn", "gptq"):
        out = tmp_path / f"{method}.safetensors"
        status, stdout, err = main("quantize", folder, "--out", out, "--format", "int4", "--group-size", "32", "--method", method)
        assert status == 0, err
        if method == "gptq":
            reached = {line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("gptq ")}
            linear = {n["weight"] for layer in model["layers"] for n in layer.values() if "in_features" in n}
            assert reached == linear | {model["lm_head"]["weight"]}
        status, _, err = main("dequantize", out, "--out", tmp_path / f"{method}-fp32.safetensors")
        assert status == 0, err
        source = open_model(tmp_path / f"{method}-fp32.safetensors")
        restored[method] = {n: np.array(source.weights.tensor(n), np.float64) for n in model_tensors(model)}
    inputs = {}
    dr.reference_forward(model, weights, ids, hook=lambda node, x: inputs.setdefault(node["weight"], x))
    for role in ("query", "key", "value"):
        name = model["layers"][0][role]["weight"]
        x, w = inputs[name], weights[name].astype(np.float64)
        loss = {m: np.linalg.norm(x @ (w - restored[m][name]).T) for m in ("rtn", "gptq")}
        assert loss["gptq"] < loss["rtn"], (role, loss)


def test_calibration_without_a_tokenizer_is_one_line(built, tmp_path, main):
    status, _, err = main("quantize", built["gpt2"][0], "--out", tmp_path / "q.safetensors", "--method", "gptq")
    assert status == 2 and "needs its tokenizer.json" in err and err.count("\n") == 1


def _train_tokenizer(path, vocab=VOCAB):
    """A byte-level BPE of `vocab` ids trained on the shipped calibration text (the tiny models have no
    tokenizer of their own; its ids fit their word table)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ulpq_build.calibration import calibration_text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(calibration_text(), trainer)
    tokenizer.save(str(path))


def test_default_quantize_calibrates_on_the_shipped_text(built, tmp_path, main):
    """With its tokenizer.json beside it, a decoder's default `quantize` is GPTQ over the shipped
    calibration text (as for BERT), and the result runs in the reference."""
    folder = tmp_path / "gpt2-with-tokenizer"
    shutil.copytree(built["gpt2"][0], folder)
    _train_tokenizer(folder / "tokenizer.json")
    model, weights = _ours(folder)
    assert model["tokenizer"] == {"files": ["tokenizer.json"]}
    status, stdout, err = main("quantize", folder, "--out", tmp_path / "q.safetensors")
    assert status == 0, err
    assert f"gptq {model['layers'][1]['qkv']['weight']}: int4" in stdout
    assert json.loads(Checkpoint(tmp_path / "q.safetensors").file.metadata["ulpq"])["method"] == "gptq"
    status, _, err = main("dequantize", tmp_path / "q.safetensors", "--out", tmp_path / "r.safetensors")
    assert status == 0, err
    source = open_model(tmp_path / "r.safetensors")
    restored = {n: np.array(source.weights.tensor(n), np.float32) for n in model_tensors(model)}
    ids = _ids(seed=3)
    assert 0 < relative_error(dr.reference_forward(model, restored, ids), dr.reference_forward(model, weights, ids)) < INT4_TOLERANCE


def test_rotary_frequencies_and_the_older_config_form(built, tmp_path):
    """inv_freq as transformers computes it (default, linear, llama3); a config in the form before
    transformers 5 (rope_theta and rope_scaling at the top, as Llama-3.2's config.json has them)
    describes the same model."""
    for name in ("llama-tied", "llama-untied-llama3-rope", "llama-linear-rope-bias"):
        folder, torch64, torch32 = built[name]
        model, _ = _ours(folder)
        expected = torch32.model.rotary_emb.inv_freq.numpy()
        np.testing.assert_allclose(model["positions"]["inv_freq"], expected, rtol=1e-6, atol=0, err_msg=name)
    folder, _, _ = built["llama-untied-llama3-rope"]
    config = json.loads((folder / "config.json").read_text())
    params = config.pop("rope_parameters")
    old = tmp_path / "old-form"
    shutil.copytree(folder, old)
    (old / "config.json").write_text(json.dumps({**config, "rope_theta": params.pop("rope_theta"), "rope_scaling": params}))
    assert _ours(old)[0] == _ours(folder)[0]


def test_gpt2_as_the_hub_stores_it(built, tmp_path):
    """openai-community/gpt2's layout: no `transformer.` prefix, no lm_head (tied), and here bfloat16
    (as many checkpoints are): read through the same code, matching transformers on that file."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    folder = built["gpt2"][0]
    hub = tmp_path / "gpt2-hub"
    hub.mkdir()
    shutil.copy(folder / "config.json", hub)
    tensors = {k.removeprefix("transformer."): v.to(torch.bfloat16) for k, v in load_file(folder / "model.safetensors").items()}
    save_file(tensors, hub / "model.safetensors", metadata={"format": "pt"})
    model, weights = _ours(hub)
    assert model["layers"][0]["qkv"]["weight"] == "h.0.attn.c_attn.weight" and model["tied_lm_head"]
    torch64 = AutoModelForCausalLM.from_pretrained(hub, dtype=torch.float64).eval()
    ids = _ids(seed=5)
    with torch.no_grad():
        expected = torch64(torch.tensor(ids)).logits.numpy()
    assert relative_error(dr.reference_forward(model, weights, ids), expected) < FLOAT64_TOLERANCE["learned"]
    np.testing.assert_array_equal(dr.generate_greedy(model, weights, ids, STEPS), _torch_greedy(torch64, ids))
