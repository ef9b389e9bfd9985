"""The CPU path's decoder operators (web_runtime/ops_decoder.js, under Node) against the numpy decoder
reference (ulpq_build/decoder_reference.py): RMSNorm, rotary positions (rotate-half), SwiGLU's gate
product, the tanh GELU, and causal grouped-query attention through a KV cache that grows by doubling,
over left-padded prompts, a prefill followed by single-token steps, and several layers; then the
decoder graph built from them (decoderForward, dense float32 weights behind its io) on tiny Llama- and
GPT-2-style descriptions: prefill logits, cached greedy steps and their tokens. Inputs are
seeded random float32 values (never zeros); every buffer an operator writes is NaN-filled first, and
the cache's padding slots and unused capacity are NaN, so a value read or left unwritten fails."""

import numpy as np
import pytest
from support import ROOT, node_json

from ulpq_build import decoder_reference as dr
from ulpq_build.reference import gelu, gelu_tanh, relative_error, silu

DRIVER = ROOT / "tests/js/ops_decoder.mjs"
# relative_error (max |js - numpy| / max |numpy|), JS in float32 storage against numpy in float64:
ELEMENTWISE_TOLERANCE = 1e-6  # rmsNorm, rotary, gate product, activations: one float32 rounding of the result
ATTENTION_TOLERANCE = 1e-5  # q and k rounded to float32 after rotary, then a float64 softmax over them
STEP_VS_FULL_TOLERANCE = 1e-6
DECODER_TOLERANCE = 1e-5  # logits of two-layer float32 decoders (dense weights) against float64  # the JS cache stepped token by token against one JS pass over all tokens
# a deliberately wrong variant (interleaved rotary pairs, kv head h % kvHeads) must differ by far more
WRONG_VARIANT_MARGIN = 100 * ATTENTION_TOLERANCE


def f32(rng, *shape, scale=1.0):
    x = (rng.standard_normal(shape) * scale).astype(np.float32)
    x[x == 0] = np.float32(0.5)  # never zeros
    return x


def inv_freq(head_dim, theta=10000.0):
    # as architectures/llama.py's rope(): float32 exponents, then float64
    return (1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))).astype(np.float64)


def arr(values):
    return np.array(values, dtype=np.float64)  # null (a NaN the JS side left) becomes nan


# --- the cases ------------------------------------------------------------------------------------

def rms_case(rng):
    rows, cols = 7, 48
    return {"op": "rmsNorm", "x": f32(rng, rows, cols, scale=3.0), "rows": rows, "cols": cols,
            "weight": f32(rng, cols), "eps": 1e-6}


def rotary_case(rng):
    batch, seq, heads, d = 2, 5, 3, 16
    positions = rng.integers(1, 2000, (batch, seq))  # non-trivial: large angles, distinct per row
    return {"op": "rotary", "x": f32(rng, batch * seq, heads * d), "rows": batch * seq, "heads": heads, "headDim": d,
            "positions": positions.reshape(-1), "invFreq": inv_freq(d), "shape": (batch, seq)}


def glu_case(rng, activation):
    return {"op": "glu", "gate": f32(rng, 5, 40, scale=4.0), "up": f32(rng, 5, 40), "activation": activation}


def sequence_case(rng, *, layers, batch, heads, kv_heads, d, capacity, lengths, masks, poison=True):
    """Chunks of `lengths` tokens (the first a prefill); masks [batch, sum(lengths)] (1 token / 0 padding)."""
    chunks, at = [], 0
    for n in lengths:
        chunks.append({"mask": masks[:, at:at + n].reshape(-1), "n": n,
                       "q": [f32(rng, batch * n, heads * d) for _ in range(layers)],
                       "k": [f32(rng, batch * n, kv_heads * d) for _ in range(layers)],
                       "v": [f32(rng, batch * n, kv_heads * d) for _ in range(layers)]})
        at += n
    return {"op": "sequence", "layers": layers, "batch": batch, "heads": heads, "kvHeads": kv_heads, "headDim": d,
            "capacity": capacity, "invFreq": inv_freq(d), "chunks": chunks, "poisonPadding": poison}


def one_chunk(case):
    """The same tokens as `case` in a single pass (start 0), nothing poisoned beyond what it writes."""
    joined = dict(case, poisonPadding=False)
    c = case["chunks"]
    batch = case["batch"]
    cat = lambda key, layer: np.concatenate([x[key][layer].reshape(batch, x["n"], -1) for x in c], axis=1)  # noqa: E731
    n = sum(x["n"] for x in c)
    joined["chunks"] = [{"mask": np.concatenate([x["mask"].reshape(batch, -1) for x in c], axis=1).reshape(-1), "n": n,
                         **{key: [cat(key, layer).reshape(batch * n, -1) for layer in range(case["layers"])]
                            for key in ("q", "k", "v")}}]
    return joined


LEFT_PADDED = np.array([[0, 0, 0, 1, 1] + [1] * 6, [1] * 11], np.float64)


def build_cases():
    rng = np.random.default_rng(14)
    gqa = sequence_case(rng, layers=2, batch=2, heads=6, kv_heads=2, d=8, capacity=4, lengths=[5, 1, 1, 1, 1, 1, 1],
                        masks=LEFT_PADDED)
    cases = {
        "rms": rms_case(rng),
        "rotary": rotary_case(rng),
        "glu_silu": glu_case(rng, "silu"),
        "glu_gelu_tanh": glu_case(rng, "gelu_tanh"),
        **{f"act_{name}": {"op": "activation", "name": name, "x": f32(rng, 200, scale=4.0)}
           for name in ("silu", "gelu_tanh", "gelu")},
        # grouped-query (3 queries per kv head), left padding, a cache of 4 that grows to 8 then 16
        "gqa": gqa,
        "gqa_full": one_chunk(gqa),
        # multi-query (one kv head), a prompt of 9 whose prefill alone outgrows the first capacity (2 -> 16)
        "mqa": sequence_case(rng, layers=1, batch=3, heads=4, kv_heads=1, d=16, capacity=2, lengths=[9, 1, 1, 1],
                             masks=np.array([[1] * 12, [0] * 4 + [1] * 8, [0] * 8 + [1] * 4], np.float64)),
        # plain multi-head, head size 64; right padding in one pass (calibration batches)
        "mha_right_padded": sequence_case(rng, layers=1, batch=2, heads=2, kv_heads=2, d=64, capacity=16, lengths=[10],
                                          masks=np.array([[1] * 10, [1] * 6 + [0] * 4], np.float64)),
        "errors": {"op": "errors"},
        "decode_llama": decode_case(rng, *llama_like(rng)),
        "decode_gpt2": decode_case(rng, *gpt2_like(rng)),
    }
    return cases


# tiny decoders described as architectures/llama.py and gpt2.py describe them, random float32 weights
# (matrices of std 0.3, norms near 1) so that greedy decoding varies
HIDDEN, HEADS, VOCAB, INTER, LAYERS = 32, 4, 50, 48, 2


def _linear(rng, weights, name, out_features, in_features, activation="none", residual=False, bias=True):
    weights[f"{name}.weight"] = f32(rng, out_features, in_features, scale=0.3)
    if bias:
        weights[f"{name}.bias"] = f32(rng, out_features, scale=0.3)
    return {"weight": f"{name}.weight", "bias": f"{name}.bias" if bias else None, "in_features": in_features,
            "out_features": out_features, "activation": activation, "residual": residual}


def _norm(rng, weights, name, bias):
    weights[f"{name}.weight"] = (1 + f32(rng, HIDDEN, scale=0.1)).astype(np.float32)
    if bias:
        weights[f"{name}.bias"] = f32(rng, HIDDEN, scale=0.1)
    return {"weight": f"{name}.weight", "bias": f"{name}.bias" if bias else None}


def llama_like(rng, kv_heads=2):
    """RMSNorm, rotary (theta 10000), grouped-query q/k/v with biases (Qwen2-style), SwiGLU, tied head."""
    d = HIDDEN // HEADS
    w = {"embed.weight": f32(rng, VOCAB, HIDDEN, scale=0.5)}
    layers = [{"attn_norm": _norm(rng, w, f"l{i}.in", False),
               "query": _linear(rng, w, f"l{i}.q", HEADS * d, HIDDEN),
               "key": _linear(rng, w, f"l{i}.k", kv_heads * d, HIDDEN),
               "value": _linear(rng, w, f"l{i}.v", kv_heads * d, HIDDEN),
               "attn_out": _linear(rng, w, f"l{i}.o", HIDDEN, HEADS * d, residual=True, bias=False),
               "mlp_norm": _norm(rng, w, f"l{i}.post", False),
               "gate": _linear(rng, w, f"l{i}.gate", INTER, HIDDEN, "silu", bias=False),
               "up": _linear(rng, w, f"l{i}.up", INTER, HIDDEN, bias=False),
               "down": _linear(rng, w, f"l{i}.down", HIDDEN, INTER, residual=True, bias=False)} for i in range(LAYERS)]
    model = {"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": kv_heads, "head_dim": d,
             "vocab_size": VOCAB, "max_position": 64, "norm": "rms", "norm_eps": 1e-6, "ffn": "gated",
             "positions": {"kind": "rotary", "inv_freq": inv_freq(d).tolist()},
             "embeddings": {"word": {"table": "embed.weight"}}, "layers": layers,
             "final_norm": _norm(rng, w, "final", False),
             "lm_head": {"weight": "embed.weight", "bias": None, "in_features": HIDDEN, "out_features": VOCAB,
                         "activation": "none", "residual": False}}
    return model, w


def gpt2_like(rng):
    """LayerNorm, learned positions, fused q|k|v with bias, the tanh GELU, an untied head."""
    w = {"wte.weight": f32(rng, VOCAB, HIDDEN, scale=0.5), "wpe.weight": f32(rng, 32, HIDDEN, scale=0.5)}
    layers = [{"attn_norm": _norm(rng, w, f"h{i}.ln_1", True),
               "qkv": _linear(rng, w, f"h{i}.c_attn", 3 * HIDDEN, HIDDEN),
               "attn_out": _linear(rng, w, f"h{i}.c_proj", HIDDEN, HIDDEN, residual=True),
               "mlp_norm": _norm(rng, w, f"h{i}.ln_2", True),
               "fc": _linear(rng, w, f"h{i}.c_fc", INTER, HIDDEN, "gelu_tanh"),
               "proj": _linear(rng, w, f"h{i}.mlp_proj", HIDDEN, INTER, residual=True)} for i in range(LAYERS)]
    model = {"hidden_size": HIDDEN, "num_layers": LAYERS, "num_heads": HEADS, "num_kv_heads": HEADS,
             "head_dim": HIDDEN // HEADS, "vocab_size": VOCAB, "max_position": 32, "norm": "layer", "norm_eps": 1e-5,
             "ffn": "plain", "positions": {"kind": "learned"},
             "embeddings": {"word": {"table": "wte.weight"}, "position": {"table": "wpe.weight"}}, "layers": layers,
             "final_norm": _norm(rng, w, "ln_f", True), "lm_head": _linear(rng, w, "lm_head", VOCAB, HIDDEN, bias=False)}
    return model, w


def decode_case(rng, model, weights, batch=2, seq=6, steps=10):
    ids = rng.integers(0, VOCAB, (batch, seq))
    mask = np.ones((batch, seq))
    mask[1, :2] = 0  # row 1 left-padded
    return {"op": "decode", "model": model, "weights": weights, "ids": ids, "mask": mask, "batch": batch, "seq": seq,
            "steps": steps, "capacity": 4}


def to_json(value):
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist() if value.dtype.kind == "f" else value.reshape(-1).astype(int).tolist()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cases = build_cases()
    answers = node_json(DRIVER, request={"cases": [to_json(c) for c in cases.values()]},
                        tmp_path=tmp_path_factory.mktemp("ops_decoder"))
    return {name: (case, answer) for (name, case), answer in zip(cases.items(), answers)}


# --- numpy side -----------------------------------------------------------------------------------

def reference_rotary(x, shape, heads, d, positions, freqs):
    """x [batch*seq, heads*d] through dr.rotary's [batch, heads, seq, d] layout and back."""
    batch, seq = shape
    x4 = np.asarray(x, np.float64).reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)
    out = dr.rotary(x4, np.asarray(positions).reshape(batch, seq), freqs)
    return out.transpose(0, 2, 1, 3).reshape(batch * seq, heads * d)


def interleaved_rotary(x, shape, heads, d, positions, freqs):
    """The other common pairing (2i with 2i+1, GPT-J / Meta's original Llama): wrong for these rows."""
    batch, seq = shape
    x4 = np.asarray(x, np.float64).reshape(batch, seq, heads, d // 2, 2)
    angles = np.asarray(positions).reshape(batch, seq, 1, 1) * freqs
    cos, sin = np.cos(angles), np.sin(angles)
    x1, x2 = x4[..., 0], x4[..., 1]
    return np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(batch * seq, heads * d)


def full_pass(case, layer, tile_kv_heads=False):
    """What the whole sequence of `case` gives in one reference pass for `layer`: the positions
    decoder_forward numbers (real tokens counted, at least 0), rotated keys, values, the keep mask
    and the attention output [batch, tokens, heads*d]. `tile_kv_heads`: the wrong GQA mapping
    (head h reading kv head h % kvHeads)."""
    batch, heads, kv, d, freqs = case["batch"], case["heads"], case["kvHeads"], case["headDim"], case["invFreq"]
    chunks = case["chunks"]
    mask = np.concatenate([c["mask"].reshape(batch, -1) for c in chunks], axis=1)
    positions = np.maximum(np.cumsum(mask, axis=1).astype(np.int64) - 1, 0)  # decoder_forward's, from an empty cache

    def gather(key, h):
        x = np.concatenate([c[key][layer].astype(np.float64).reshape(batch, c["n"], h, d) for c in chunks], axis=1)
        return x.transpose(0, 2, 1, 3)  # [batch, h, tokens, d]

    q = dr.rotary(gather("q", heads), positions, freqs)
    k = dr.rotary(gather("k", kv), positions, freqs)
    v = gather("v", kv)
    if tile_kv_heads:
        group = heads // kv
        order = np.arange(heads) % kv  # what repeat_kv is NOT: kv heads tiled instead of repeated
        k_full, v_full = k[:, order], v[:, order]
        out = dr.causal_attention(q, k_full, v_full, mask, 0)
        assert group > 1
    else:
        out = dr.causal_attention(q, k, v, mask, 0)
    return positions, k, v, mask, out


def stepped(answer, case, layer):
    """The JS outputs of every chunk for `layer`, joined into [batch, tokens, heads*d]."""
    batch = case["batch"]
    return np.concatenate([arr(c["outputs"][layer]).reshape(batch, n["n"], -1)
                           for c, n in zip(answer["chunks"], case["chunks"])], axis=1)


# --- tests ----------------------------------------------------------------------------------------

def test_rms_norm_matches_reference(run):
    case, answer = run["rms"]
    expected = dr.rms_norm(case["x"].astype(np.float64), case["weight"], case["eps"])
    for key in ("out", "fresh"):
        got = arr(answer[key]).reshape(expected.shape)
        assert not np.isnan(got).any()
        assert relative_error(got, expected) < ELEMENTWISE_TOLERANCE


def test_rotary_matches_reference_in_place_and_into_a_buffer(run):
    case, answer = run["rotary"]
    expected = reference_rotary(case["x"], case["shape"], case["heads"], case["headDim"], case["positions"], case["invFreq"])
    for key in ("out", "inPlace"):
        got = arr(answer[key]).reshape(expected.shape)
        assert not np.isnan(got).any()
        assert relative_error(got, expected) < ELEMENTWISE_TOLERANCE
    assert answer["untouched"] and answer["returnsInput"]
    # the check above can tell the pairings apart: the interleaved form is far from the reference
    wrong = interleaved_rotary(case["x"], case["shape"], case["heads"], case["headDim"], case["positions"], case["invFreq"])
    assert relative_error(wrong, expected) > WRONG_VARIANT_MARGIN


@pytest.mark.parametrize("activation,fn", [("silu", silu), ("gelu_tanh", gelu_tanh)])
def test_glu_multiply_matches_reference(run, activation, fn):
    case, answer = run[f"glu_{activation}"]
    expected = fn(case["gate"].astype(np.float64)) * case["up"]
    got = arr(answer["out"]).reshape(expected.shape)
    assert not np.isnan(got).any()
    assert relative_error(got, expected) < ELEMENTWISE_TOLERANCE


@pytest.mark.parametrize("name,fn", [("silu", silu), ("gelu_tanh", gelu_tanh), ("gelu", gelu)])
def test_activations_match_reference(run, name, fn):
    case, answer = run[f"act_{name}"]
    x = case["x"].astype(np.float64)
    assert relative_error(arr(answer["out"]), fn(x)) < ELEMENTWISE_TOLERANCE
    assert answer["sameAsExport"]
    if name == "gelu_tanh":  # a different function from the erf form: mixing them up must show
        assert relative_error(gelu(x), fn(x)) > 10 * ELEMENTWISE_TOLERANCE  # ~5e-5 on these inputs


@pytest.mark.parametrize("name", ["gqa", "gqa_full", "mqa", "mha_right_padded"])
def test_cached_attention_matches_a_full_reference_pass(run, name):
    case, answer = run[name]
    batch, kv = case["batch"], case["kvHeads"]
    for layer in range(case["layers"]):
        positions, k, v, mask, expected = full_pass(case, layer)
        got = stepped(answer, case, layer)
        assert not np.isnan(got).any(), "an output left unwritten, or a padding / unused slot read"
        assert relative_error(got, expected) < ATTENTION_TOLERANCE
        # queries with no real token up to them (left padding) give exactly zeros, as the reference
        assert np.all(got[np.cumsum(mask, axis=1) == 0] == 0)
        # the cache: rotated keys and values of the real slots (the padding ones are NaN when poisoned)
        keep = mask > 0.5
        got_k = arr(answer["keys"][layer]).reshape(batch, kv, -1, case["headDim"])
        got_v = arr(answer["values"][layer]).reshape(batch, kv, -1, case["headDim"])
        sel = np.broadcast_to(keep[:, None, :], got_k.shape[:3])
        assert relative_error(got_k[sel], k[sel]) < ELEMENTWISE_TOLERANCE
        assert relative_error(got_v[sel], v[sel]) < ELEMENTWISE_TOLERANCE
    got_positions = np.concatenate([np.reshape(c["positions"], (batch, -1)) for c in answer["chunks"]], axis=1)
    np.testing.assert_array_equal(got_positions, positions)
    np.testing.assert_array_equal(np.array(answer["keep"]), mask.astype(int))
    np.testing.assert_array_equal(answer["nextPosition"], mask.sum(axis=1).astype(int))


def test_cache_grows_by_doubling_across_steps(run):
    case, answer = run["gqa"]
    starts = [c["start"] for c in answer["chunks"]]
    assert starts == list(np.cumsum([0] + [c["n"] for c in case["chunks"]])[:-1])
    assert [c["capacity"] for c in answer["chunks"]] == [8, 8, 8, 8, 16, 16, 16]  # 4 -> 8 at the prefill of 5, -> 16 at 9
    _, mqa = run["mqa"]
    assert [c["capacity"] for c in mqa["chunks"]] == [16, 16, 16, 16]  # 2 doubled three times for a prefill of 9


def test_prefill_then_steps_equal_one_pass_in_js(run):
    case, stepwise = run["gqa"]
    _, whole = run["gqa_full"]
    for layer in range(case["layers"]):
        one = arr(whole["chunks"][0]["outputs"][layer]).reshape(case["batch"], -1, case["heads"] * case["headDim"])
        assert relative_error(stepped(stepwise, case, layer), one) < STEP_VS_FULL_TOLERANCE


def test_padding_queries_give_zeros_and_padding_slots_weigh_nothing(run):
    case, answer = run["gqa"]  # row 0 is left-padded by 3; those slots' keys and values are NaN in the cache
    got = stepped(answer, case, 0)
    assert np.all(got[0, :3] == 0)
    assert not np.isnan(got).any() and np.all(got[0, 3:] != 0)
    assert answer["chunks"][0]["positions"][:5] == [0, 0, 0, 0, 1]


def test_gqa_head_mapping_is_checked_by_construction(run):
    # heads 6 over 2 kv heads: the reference's repeat (head h -> kv head h // 3) and the tiled mapping
    # (h % 2) differ far beyond the tolerance, so the comparison above would catch the wrong one
    case, answer = run["gqa"]
    assert case["heads"] != case["kvHeads"] and len(set(np.asarray(case["chunks"][0]["mask"]).tolist())) == 2
    *_, right = full_pass(case, 0)
    *_, wrong = full_pass(case, 0, tile_kv_heads=True)
    assert relative_error(wrong, right) > WRONG_VARIANT_MARGIN
    assert relative_error(stepped(answer, case, 0), wrong) > WRONG_VARIANT_MARGIN


def test_bad_arguments_are_one_clear_error(run):
    _, answer = run["errors"]
    assert "kvHeads 3 does not divide heads 4" in answer["gqa"]
    assert "expected 12 keys and values, got 5 and 12" in answer["append"]
    assert "unknown activation 'relu'" in answer["activation"]
    assert "headDim 6 needs 3 frequencies, got 2" in answer["rotary"]
    assert "capacity must be a positive integer" in answer["capacity"]
    assert "the cache holds 1" in answer["pastLength"]


@pytest.mark.parametrize("name", ["decode_llama", "decode_gpt2"])
def test_decoder_forward_prefill_and_greedy_steps_match_the_reference(run, name):
    case, answer = run[name]
    model, weights, batch, seq = case["model"], case["weights"], case["batch"], case["seq"]
    expected, cache = dr.prefill(model, weights, case["ids"], case["mask"])
    got = arr(answer["prefill"]).reshape(expected.shape)
    assert not np.isnan(got).any()
    assert relative_error(got, expected) < DECODER_TOLERANCE
    tokens = np.array(answer["tokens"]).T  # [batch, steps]
    # the reference stepped along the tokens JS picked, so one early difference cannot hide later ones
    for s, step_logits in enumerate(answer["steps"]):
        expected, cache = dr.step(model, weights, tokens[:, s], cache)
        assert relative_error(arr(step_logits).reshape(expected.shape), expected) < DECODER_TOLERANCE, f"step {s + 1}"
    np.testing.assert_array_equal(tokens, dr.generate_greedy(model, weights, case["ids"], case["steps"], case["mask"]))
    assert len(np.unique(tokens)) > 3  # decoding varies, so equal tokens mean something
    assert answer["capacity"] == 16  # 4 -> 8 for the prompt of 6, -> 16 past 8 tokens
    assert f"position {model['max_position']} is past the model's {model['max_position']} positions" in answer["past"]
    assert answer["pastLeftCache"]  # the refused pass did not move the cache
