"""numpy reference forward passes: the oracle every kernel, runtime path and browser is compared
with. Computed in float64 from float32 weights (the dequantized weights of a bundle when
checking a bundle), so the reference adds no rounding of its own."""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its exact erf form, as BERT uses it."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


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
