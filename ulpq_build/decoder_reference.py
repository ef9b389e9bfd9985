"""The numpy reference of generative decoders (Llama/Qwen2/Mistral- and GPT-2-style), with a KV cache:
the oracle a decoder runtime is compared with. One graph serves every decoder row; the description
(architectures/llama.py, gpt2.py) says which variant of each part a model has:

    norm        "rms" (RMSNorm: weight only) or "layer" (LayerNorm: weight and bias), eps `norm_eps`
    positions   {"kind": "rotary", "inv_freq": [...]} (rotate-half form, as transformers' Llama) or
                {"kind": "learned"} (a position table added to the token embeddings)
    attention   per layer "query", "key", "value" linear nodes, or one fused "qkv" node whose outputs
                are q | k | v in that order; grouped-query: num_kv_heads divides num_heads
    ffn         "gated" (down(act(gate(x)) * up(x)), the activation on the gate node) or "plain"
                (proj(act(fc(x))))
    lm_head     a linear node (its weight the word table when the head is tied)

Float64 by default from float32 weights, like reference.py. Token ids [batch, seq] with an optional
mask (1 token / 0 padding): padding may sit on the left (generation, positions count real tokens
only, as transformers' generate() numbers them) or on the right (calibration: causal attention never
lets a real token see the padding after it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ulpq_build.reference import layernorm, linear


@dataclass
class KVCache:
    """What decoding keeps between steps: per layer keys and values [batch, kv_heads, slots, head_dim]
    (rotary already applied to keys), which slots hold real tokens, and each row's next position."""

    keys: list[np.ndarray]
    values: list[np.ndarray]
    keep: np.ndarray  # [batch, slots] 1 real token / 0 padding
    next_position: np.ndarray  # [batch]

    @property
    def length(self) -> int:
        return self.keep.shape[1]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * np.asarray(weight, x.dtype)


def norm(x: np.ndarray, node: dict, weights: dict, model: dict) -> np.ndarray:
    if model["norm"] == "rms":
        return rms_norm(x, weights[node["weight"]], model["norm_eps"])
    return layernorm(x, node, weights, model["norm_eps"])


def rotary(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotary positions on x [batch, heads, seq, head_dim] at positions [batch, seq], in the rotate-half
    layout (dimension i pairs with i + head_dim/2), as transformers' Llama, Qwen2 and Mistral."""
    angles = positions[:, None, :, None].astype(x.dtype) * np.asarray(inv_freq, x.dtype)  # [b, 1, s, d/2]
    cos, sin = np.cos(angles), np.sin(angles)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, keep: np.ndarray, start: int) -> np.ndarray:
    """Softmax(q k^T / sqrt(d)) v with grouped-query heads: q [b, heads, s, d] are the tokens at slots
    start .. start+s-1, k and v [b, kv_heads, slots, d] every slot so far (the cache and these tokens);
    a query sees the slots up to its own that hold real tokens (`keep` [b, slots]). Returns
    [b, s, heads*d]; a query with no slot to see (padding before any token) gives zeros."""
    b, heads, s, d = q.shape
    kv_heads, slots = k.shape[1], k.shape[2]
    group = heads // kv_heads
    qg = q.reshape(b, kv_heads, group, s, d)
    scores = qg @ k[:, :, None].swapaxes(-1, -2) / math.sqrt(d)  # [b, kv, group, s, slots]
    visible = (np.arange(slots)[None, :] <= start + np.arange(s)[:, None])[None] & (keep[:, None, :] > 0.5)  # [b, s, slots]
    visible = visible[:, None, None]
    scores = np.where(visible, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    p = np.where(visible, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = p.sum(axis=-1, keepdims=True)
    p = p / np.where(total > 0, total, 1.0)
    out = p @ v[:, :, None]  # [b, kv, group, s, d]
    return out.reshape(b, heads, s, d).transpose(0, 2, 1, 3).reshape(b, s, heads * d)


def empty_cache(model: dict, batch: int, dtype=np.float64) -> KVCache:
    shape = (batch, model["num_kv_heads"], 0, model["head_dim"])
    n = model["num_layers"]
    return KVCache([np.zeros(shape, dtype) for _ in range(n)], [np.zeros(shape, dtype) for _ in range(n)],
                   np.zeros((batch, 0)), np.zeros(batch, np.int64))


def decoder_forward(model: dict, weights: dict, ids: np.ndarray, mask: np.ndarray | None = None,
                    cache: KVCache | None = None, hook=None, dtype=np.float64) -> tuple[np.ndarray, KVCache]:
    """Logits [batch, seq, vocab] of token ids [batch, seq] after the tokens in `cache` (None: none),
    and the cache extended by them. `hook(node, x)`: see reference.linear (called with real tokens' rows)."""
    ids = np.asarray(ids, np.int64)
    batch, seq = ids.shape
    mask = np.ones((batch, seq)) if mask is None else np.asarray(mask, np.float64)
    cache = cache if cache is not None else empty_cache(model, batch, dtype)
    start = cache.length
    keep = np.concatenate([cache.keep, mask], axis=1)
    positions = np.maximum(cache.next_position[:, None] + np.cumsum(mask, axis=1).astype(np.int64) - 1, 0)
    if int(positions.max(initial=0)) >= model["max_position"]:
        raise ValueError(f"position {int(positions.max())} is past the model's {model['max_position']} positions")
    heads, kv_heads, d = model["num_heads"], model["num_kv_heads"], model["head_dim"]
    emb = model["embeddings"]
    x = np.asarray(weights[emb["word"]["table"]])[ids].astype(dtype)
    if model["positions"]["kind"] == "learned":
        x = x + np.asarray(weights[emb["position"]["table"]])[positions].astype(dtype)
    x = x.reshape(batch * seq, -1)
    rows = mask.reshape(-1) > 0.5
    lin = lambda h, node, residual=None: linear(h, node, weights, residual, hook, rows)  # noqa: E731
    inv_freq = np.asarray(model["positions"].get("inv_freq", []), np.float64)
    keys, values = [], []
    for i, layer in enumerate(model["layers"]):
        a = norm(x, layer["attn_norm"], weights, model)
        if "qkv" in layer:
            qkv = lin(a, layer["qkv"])
            q, k, v = np.split(qkv, [heads * d, (heads + kv_heads) * d], axis=1)
        else:
            q, k, v = (lin(a, layer[role]) for role in ("query", "key", "value"))
        q = q.reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)
        k = k.reshape(batch, seq, kv_heads, d).transpose(0, 2, 1, 3)
        v = v.reshape(batch, seq, kv_heads, d).transpose(0, 2, 1, 3)
        if model["positions"]["kind"] == "rotary":
            q, k = rotary(q, positions, inv_freq), rotary(k, positions, inv_freq)
        k_all = np.concatenate([cache.keys[i].astype(dtype), k], axis=2)
        v_all = np.concatenate([cache.values[i].astype(dtype), v], axis=2)
        keys.append(k_all)
        values.append(v_all)
        ctx = causal_attention(q, k_all, v_all, keep, start).reshape(batch * seq, heads * d)
        x = lin(ctx, layer["attn_out"], x)
        m = norm(x, layer["mlp_norm"], weights, model)
        if model["ffn"] == "gated":
            x = lin(lin(m, layer["gate"]) * lin(m, layer["up"]), layer["down"], x)
        else:
            x = lin(lin(m, layer["fc"]), layer["proj"], x)
    x = norm(x, model["final_norm"], weights, model)
    logits = lin(x, model["lm_head"]).reshape(batch, seq, -1)
    return logits, KVCache(keys, values, keep, cache.next_position + mask.sum(axis=1).astype(np.int64))


def reference_forward(model: dict, weights: dict, inputs, hook=None, dtype=np.float64) -> np.ndarray:
    """The registry's reference_forward: logits [batch, seq, vocab] for token ids [batch, seq], or for
    a batch with .ids and .mask (padded calibration text)."""
    ids, mask = (inputs.ids, inputs.mask) if hasattr(inputs, "ids") else (inputs, None)
    return decoder_forward(model, weights, ids, mask, hook=hook, dtype=dtype)[0]


def prefill(model: dict, weights: dict, ids, mask=None, dtype=np.float64) -> tuple[np.ndarray, KVCache]:
    """Logits [batch, seq, vocab] of a prompt (left-padded where `mask` says so) and its cache."""
    return decoder_forward(model, weights, ids, mask, dtype=dtype)


def step(model: dict, weights: dict, token, cache: KVCache, dtype=np.float64) -> tuple[np.ndarray, KVCache]:
    """One decode step: logits [batch, vocab] of one new token per row [batch] after `cache`."""
    logits, cache = decoder_forward(model, weights, np.asarray(token, np.int64).reshape(-1, 1), cache=cache, dtype=dtype)
    return logits[:, -1], cache


def generate_greedy(model: dict, weights: dict, ids, n: int, mask=None, dtype=np.float64) -> np.ndarray:
    """The n tokens [batch, n] greedy decoding picks after the prompt ids: prefill once, then one cached
    step per token (ties go to the lowest id, as numpy's and torch's argmax)."""
    logits, cache = prefill(model, weights, ids, mask, dtype)
    token = logits[:, -1].argmax(axis=-1)
    out = [token]
    for _ in range(n - 1):
        logits, cache = step(model, weights, token, cache, dtype)
        token = logits.argmax(axis=-1)
        out.append(token)
    return np.stack(out, axis=1)[:, :n]
