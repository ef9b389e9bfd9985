"""GPTQ against plain rounding: lower output error on correlated inputs for every kind of format,
and results that are valid tensors of their format (codes on the format's grid, parts laid out as
the registry says)."""

import numpy as np
import pytest

from ulpq_build.gptq import gptq_quantize, hessian
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec

SPECS = [QuantSpec("int4"), QuantSpec("int4", 32, True), QuantSpec("int3", 32, scale_dtype="float16"),
         QuantSpec("int3-dense", 64), QuantSpec("int2-ternary", 32, scale_dtype="float16"), QuantSpec("int2", 64),
         QuantSpec("int2-4values", 32), QuantSpec("int2-optimal", 32), QuantSpec("int4-optimal", 0, codebook="channel"),
         QuantSpec("int1", 32), QuantSpec("int8")]


def layer(rng, n=48, k=128, tokens=1500):
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    x = rng.standard_normal((tokens, k)) @ mix * (1 + 3 * (rng.random(k) < 0.05))  # correlated, a few outlier inputs
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    return x, w


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.format}-g{s.group_size}{'-asym' if s.asymmetric else ''}")
@pytest.mark.parametrize("act_order", [True, False])
def test_lower_output_error_than_rounding(spec, act_order, rng):
    x, w = layer(rng)
    ref = x @ w.T
    err = lambda qt: np.linalg.norm(x @ dequantize(qt).astype(np.float64).T - ref) / np.linalg.norm(ref)  # noqa: E731
    gptq = gptq_quantize("w", w, spec, hessian(x), act_order=act_order)
    assert gptq.parts.keys() == quantize("w", w, spec).parts.keys()
    assert err(gptq) < err(quantize("w", w, spec))


def test_values_lie_on_the_format_grid(rng):
    x, w = layer(rng)
    spec = QuantSpec("int2-ternary", 32)
    restored = dequantize(gptq_quantize("w", w, spec, hessian(x)))
    scales = np.repeat(gptq_quantize("w", w, spec, hessian(x)).parts["scales"].astype(np.float64), 32, axis=1)
    levels = restored / scales
    assert np.abs(levels[..., None] - np.array([-1, -1 / 3, 1 / 3, 1])).min(axis=-1).max() < 1e-5


def test_dead_inputs_are_tolerated(rng):
    x, w = layer(rng)
    x[:, :7] = 0.0  # inputs that never fire: a zero Hessian row
    qt = gptq_quantize("w", w, QuantSpec("int4", 32), hessian(x))
    assert np.isfinite(dequantize(qt)).all()
