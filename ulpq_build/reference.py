"""numpy reference forward passes: the oracle every kernel, runtime path and browser is compared
with. Computed in float64 from float32 weights (the dequantized weights of a bundle when
checking a bundle), so the reference adds no rounding of its own."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf  # a ufunc accurate to float64 (math.erf per element took seconds per BERT run)


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its exact erf form, as BERT uses it."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


ACTIVATIONS = {"gelu": gelu, "none": lambda x: x}


def mlp_forward(model: dict, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for layer in model["layers"]:
        h = h @ np.asarray(weights[layer["weight"]], np.float64).T
        if layer["bias"]:
            h = h + np.asarray(weights[layer["bias"]], np.float64)
        h = ACTIVATIONS[layer["activation"]](h)
    return h


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the error measure named in every tolerance."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape {actual.shape} vs reference {expected.shape}")
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(actual - expected).max()) / scale


def layernorm(x: np.ndarray, node: dict, weights: dict, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(weights[node["weight"]], x.dtype) \
        + np.asarray(weights[node["bias"]], x.dtype)


def linear(x: np.ndarray, node: dict, weights: dict, residual: np.ndarray | None = None, hook=None,
           rows: np.ndarray | None = None) -> np.ndarray:
    """y = act(x W^T + b) (+ residual). `hook(node, x)` runs first with the input rows that are real
    tokens (`rows`, a boolean mask; all rows when None): calibration reads them, and may replace
    weights[node["weight"]] (GPTQ quantizes each layer right before it is used)."""
    if hook is not None:
        hook(node, x if rows is None else x[rows])
    w = np.asarray(weights[node["weight"]], x.dtype).reshape(node["out_features"], node["in_features"])
    y = x @ w.T
    if node["bias"]:
        y = y + np.asarray(weights[node["bias"]], x.dtype)
    y = ACTIVATIONS[node["activation"]](y)
    return y + residual if node.get("residual") else y


def attention(q, k, v, keep, batch: int, seq: int, heads: int, head_dim: int) -> np.ndarray:
    """Scaled dot-product attention over heads; q, k, v [batch*seq, heads*head_dim]; keep [batch, seq] (1/0)."""
    shape = (batch, seq, heads, head_dim)
    q, k, v = (a.reshape(shape).transpose(0, 2, 1, 3) for a in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
    scores = np.where(keep[:, None, None, :] > 0.5, scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(batch * seq, heads * head_dim)


def bert_forward(model: dict, weights: dict, ids: np.ndarray, mask: np.ndarray, hook=None, dtype=np.float64) -> np.ndarray:
    """Sentence embeddings [batch, hidden] for padded token ids [batch, seq] and mask (1 token, 0 pad);
    `hook`: see `linear`. `dtype`: float64 for the oracle; float32 where only differences between
    runs matter and speed does (the planner's many runs)."""
    batch, seq = ids.shape
    emb = model["embeddings"]
    table = lambda name: np.asarray(weights[emb[name]["table"]])  # noqa: E731
    h = (table("word")[ids].astype(dtype) + table("position")[np.arange(seq)][None].astype(dtype)
         + table("token_type")[0][None, None].astype(dtype))
    h = layernorm(h.reshape(batch * seq, -1), emb["norm"], weights, model["layer_norm_eps"])
    keep = mask.astype(dtype)
    rows = keep.reshape(-1) > 0.5
    lin = lambda x, node, residual=None: linear(x, node, weights, residual, hook, rows)  # noqa: E731
    for layer in model["layers"]:
        q, k, v = (lin(h, layer[role]) for role in ("query", "key", "value"))
        ctx = attention(q, k, v, keep, batch, seq, model["num_heads"], model["head_dim"])
        a = layernorm(lin(ctx, layer["attn_out"], h), layer["attn_norm"], weights, model["layer_norm_eps"])
        h = layernorm(lin(lin(a, layer["intermediate"]), layer["output"], a), layer["out_norm"], weights, model["layer_norm_eps"])
    h = h.reshape(batch, seq, -1)
    pooled = (h * keep[..., None]).sum(axis=1) / np.maximum(keep.sum(axis=1, keepdims=True), 1e-9)
    if model["normalize"]:
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


def vit_forward(model: dict, weights: dict, pixels: np.ndarray, hook=None, dtype=np.float64) -> np.ndarray:
    """Logits [batch, labels] (or [CLS] features) for preprocessed images [batch, channels, size, size];
    `hook`, `dtype`: see `linear`, `bert_forward`."""
    batch = pixels.shape[0]
    p, grid = model["patch_size"], model["image_size"] // model["patch_size"]
    c = model["num_channels"]
    patches = pixels[:, :, : grid * p, : grid * p].reshape(batch, c, grid, p, grid, p).transpose(0, 2, 4, 1, 3, 5)
    x = linear(patches.reshape(batch * grid * grid, c * p * p).astype(dtype), model["patch"], weights, hook=hook)
    hidden = model["hidden_size"]
    cls = np.asarray(weights[model["cls_token"]], dtype).reshape(1, 1, hidden)
    pos = np.asarray(weights[model["position_embeddings"]], dtype).reshape(1, grid * grid + 1, hidden)
    h = (np.concatenate([np.repeat(cls, batch, axis=0), x.reshape(batch, grid * grid, hidden)], axis=1) + pos)
    seq = grid * grid + 1
    h = h.reshape(batch * seq, hidden)
    keep = np.ones((batch, seq), dtype)
    eps = model["layer_norm_eps"]
    lin = lambda x, node, residual=None: linear(x, node, weights, residual, hook)  # noqa: E731
    for layer in model["layers"]:
        n = layernorm(h, layer["norm_before"], weights, eps)
        q, k, v = (lin(n, layer[role]) for role in ("query", "key", "value"))
        h = lin(attention(q, k, v, keep, batch, seq, model["num_heads"], model["head_dim"]), layer["attn_out"], h)
        n = layernorm(h, layer["norm_after"], weights, eps)
        h = lin(lin(n, layer["intermediate"]), layer["output"], h)
    cls_out = layernorm(h.reshape(batch, seq, hidden)[:, 0], model["final_norm"], weights, eps)
    return lin(cls_out, model["classifier"]) if model["classifier"] else cls_out


def vit_preprocess(rgba: np.ndarray, spec: dict) -> np.ndarray:
    """RGBA uint8 images [batch, H, W, 4] already at image_size -> normalised [batch, channels, H, W]
    (grey-scale models take the luma of RGB), as the JS runtime does."""
    rgb = rgba[..., :3].astype(np.float64)
    if spec["channels"] == 1:
        rgb = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[..., None]
    x = rgb * spec["rescale"]
    x = (x - np.asarray(spec["mean"])) / np.asarray(spec["std"])
    return x.transpose(0, 3, 1, 2)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
