"""GPTQ against plain rounding: lower output error on correlated inputs for every kind of format,
and results that are valid tensors of their format (codes on the format's grid, parts laid out as
the registry says); quantize_model's bias correction brings each layer's mean output back."""

import numpy as np
import pytest

from ulpq_build.gptq import gptq_quantize, hessian, quantize_model
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import linear

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


# --- bias correction in quantize_model: a small two-layer network run through reference.linear ------

def two_layers(rng, tokens=600, k=64, hidden=48, out=32):
    """A model description quantize_model walks (linear nodes), its weights, and a calibration run:
    inputs with a mean far from zero, so each layer's mean output error is large before correction."""
    model = {"layers": [{"weight": "w1", "bias": "b1", "in_features": k, "out_features": hidden, "activation": "gelu"},
                        {"weight": "w2", "bias": "b2", "in_features": hidden, "out_features": out, "activation": "none"},
                        {"weight": "w3", "bias": None, "in_features": out, "out_features": out, "activation": "none"}]}
    weights = {"w1": rng.standard_normal((hidden, k)).astype(np.float32) / 8, "b1": rng.standard_normal(hidden).astype(np.float32),
               "w2": rng.standard_normal((out, hidden)).astype(np.float32) / 7, "b2": rng.standard_normal(out).astype(np.float32),
               "w3": rng.standard_normal((out, out)).astype(np.float32) / 6}
    x = rng.standard_normal((tokens, k)) + 1.5

    def run(w, hook=None):
        h = x
        for node in model["layers"]:
            h = linear(h, node, w, hook=hook)
        return h

    return model, weights, run, x


def layer_inputs(model, weights, run):
    """Each layer's input and pre-activation output (x W^T + b) in a run with these weights."""
    seen = {}

    def hook(node, x):
        w = np.asarray(weights[node["weight"]], np.float64)
        seen[node["weight"]] = (x, x @ w.T + (weights[node["bias"]] if node["bias"] else 0))

    run(weights, hook)
    return seen


SPECS_2BIT = {"w1": QuantSpec("int2-ternary", 32, scale_dtype="float16"), "w2": QuantSpec("int2-ternary", 0),
              "w3": QuantSpec("int3-dense", 0)}


def applied(weights, result):
    return {**weights, **{n: dequantize(qt) for n, qt in result.items()}}


def test_bias_correction_matches_each_layers_mean_output(rng):
    model, weights, run, _ = two_layers(rng)
    result = quantize_model(model, weights, SPECS_2BIT, run, bias_correction=True)
    assert sorted(result) == ["b1", "b2", "w1", "w2", "w3"]  # w3 has no bias to correct
    assert sorted(quantize_model(model, weights, SPECS_2BIT, run)) == ["w1", "w2", "w3"]  # off by default
    assert all(result[b].spec.format == "float32" and result[b].parts["codes"].dtype == np.float32 for b in ("b1", "b2"))
    quantized = applied(weights, result)
    seen = layer_inputs(model, quantized, run)
    for name, bias in (("w1", "b1"), ("w2", "b2")):
        x, y = seen[name]
        # the float weights and float bias on the very inputs the quantized model feeds this layer
        wanted = x @ np.asarray(weights[name], np.float64).T + weights[bias]
        shift = np.abs(wanted.mean(axis=0) - y.mean(axis=0)).max()
        assert shift < 1e-5 * np.abs(wanted).mean(), (name, shift)
        uncorrected = x @ np.asarray(quantized[name], np.float64).T + weights[bias]
        assert np.abs(wanted.mean(axis=0) - uncorrected.mean(axis=0)).max() > 1e3 * max(shift, 1e-9)  # there was one
    # a mean error removed can only shrink the first layer's squared output error (same inputs)
    plain = quantize_model(model, weights, SPECS_2BIT, run, bias_correction=False)
    assert sorted(plain) == ["w1", "w2", "w3"]
    _, y_float = layer_inputs(model, weights, run)["w1"]
    err = lambda w: np.mean((layer_inputs(model, w, run)["w1"][1] - y_float) ** 2)
    assert err(quantized) < err(applied(weights, plain))



def test_hessian_of_float32_rows_sums_blocks_in_float64(rng, monkeypatch):
    """The calibration run hands float32 activations: their Hessian is float32 products of
    HESSIAN_ROWS rows summed in float64, equal to the float64 product to 1e-6 of its largest entry,
    symmetric, and the same over one block or several (a 2.5-block input here)."""
    import ulpq_build.gptq as gptq

    monkeypatch.setattr(gptq, "HESSIAN_ROWS", 400)
    x = (rng.standard_normal((1000, 96)) * (1 + 4 * (rng.random(96) < 0.1)) + 0.3).astype(np.float32)
    exact = 2.0 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    h = hessian(x)
    assert h.dtype == np.float64 and np.array_equal(h, h.T)
    assert np.abs(h - exact).max() <= 1e-6 * np.abs(exact).max()
    assert np.abs(hessian(x.astype(np.float64)) - exact).max() <= 1e-12 * np.abs(exact).max()
    monkeypatch.setattr(gptq, "HESSIAN_ROWS", 1 << 20)
    assert np.abs(hessian(x) - h).max() <= 1e-6 * np.abs(exact).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_in_place_epilogue_leaves_its_inputs_alone(dtype, rng):
    """reference.linear adds bias and residual and applies gelu in place on its own product: the
    inputs and the residual it is given stay as they were, and the result is the formula's."""
    from scipy.special import erf

    x = rng.standard_normal((7, 12)).astype(dtype)
    residual = rng.standard_normal((7, 5)).astype(dtype)
    weights = {"w": rng.standard_normal((5, 12)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    node = {"weight": "w", "bias": "b", "out_features": 5, "in_features": 12, "activation": "gelu", "residual": True}
    x0, r0 = x.copy(), residual.copy()
    y = linear(x, node, weights, residual)
    z = x.astype(np.float64) @ weights["w"].T.astype(np.float64) + weights["b"]
    expected = 0.5 * z * (1 + erf(z / np.sqrt(2))) + residual
    assert y.dtype == dtype and np.array_equal(x, x0) and np.array_equal(residual, r0)
    assert np.allclose(y, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)
