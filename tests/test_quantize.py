"""The quantizer against its definitions: error bounds, search never worse than max-abs, fitted
value sets beating uniform ones, sign scales, and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS, PACKED_FORMATS
from ulpq_build.packing import unpack
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec


def rel_rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def specs():
    for name in PACKED_FORMATS:
        fmt = FORMATS[name]
        for group in (0, 32, -1):
            for asym in (False, True) if fmt.supports_asymmetric else (False,):
                for scale_dtype in ("float32", "float16"):
                    yield QuantSpec(name, group, asym, scale_dtype)


@pytest.mark.parametrize("spec", list(specs()), ids=lambda s: f"{s.format}-g{s.group_size}-{'a' if s.asymmetric else 's'}-{s.scale_dtype}")
def test_uniform_error_bound_and_shapes(spec, rng):
    w = (rng.standard_normal((24, 96)) * 0.1).astype(np.float32)
    qt = quantize("w", w, spec)
    restored = dequantize(qt)
    assert restored.shape == w.shape and restored.dtype == np.float32
    assert rel_rmse(restored, w) < {8: 0.02, 4: 0.2, 3: 0.3, 2: 0.55, 1: 0.7}[spec.fmt.bits]
    if spec.fmt.levels == "uniform":
        # round to nearest: |error| <= |scale| / 2 for every value inside the clipped range
        k = w.shape[1]
        scales = qt.parts["scales"].astype(np.float32)
        per_value = np.full(w.shape, scales[0, 0]) if spec.group_size == -1 else np.repeat(scales, k // scales.shape[1], axis=1)
        codes = unpack(qt.parts["codes"], spec.fmt, k)
        inside = (codes > 0) & (codes < spec.fmt.n_levels - 1)
        err = np.abs(restored - w)
        assert np.all(err[inside] <= np.abs(per_value[inside]) / 2 * (1 + 1e-5) + 1e-12)


@pytest.mark.parametrize("name", ["int8", "int4", "int3", "int2", "int2-4values", "int2-ternary"])
def test_clipping_search_never_worse_than_max_abs(name, rng):
    w = rng.standard_t(df=4, size=(64, 128)).astype(np.float32)
    fmt = FORMATS[name]
    qt = quantize("w", w, QuantSpec(name))
    searched = ((dequantize(qt) - w) ** 2).sum(axis=1)
    # max-abs by hand: the largest magnitude lands on the extreme level
    m = w[np.arange(64), np.abs(w).argmax(axis=1)]
    if fmt.levels == "uniform":
        s = -m / fmt.symmetric_zero
        u = np.clip(np.rint(w / s[:, None]) + fmt.symmetric_zero, 0, fmt.n_levels - 1)
        maxabs = s[:, None] * (u - fmt.symmetric_zero)
    else:
        table = np.asarray(fmt.table, np.float32)
        s = np.abs(m)
        idx = np.abs(w[..., None] / s[:, None, None] - table).argmin(axis=-1)
        maxabs = s[:, None] * table[idx]
    assert np.all(searched <= ((maxabs - w) ** 2).sum(axis=1) * (1 + 1e-5))
    assert searched.sum() < ((maxabs - w) ** 2).sum()  # and strictly better overall on heavy tails


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("dist", ["gaussian", "laplacian"])
def test_fitted_levels_beat_uniform(bits, dist, rng):
    w = (rng.standard_normal((64, 256)) if dist == "gaussian" else rng.laplace(size=(64, 256))).astype(np.float32)
    uniform = {2: "int2", 3: "int3", 4: "int4"}[bits]
    err_uniform = rel_rmse(dequantize(quantize("w", w, QuantSpec(uniform))), w)
    err_fitted = rel_rmse(dequantize(quantize("w", w, QuantSpec(f"int{bits}-optimal"))), w)
    assert err_fitted < err_uniform


def test_int1_scale_is_mean_abs(rng):
    w = rng.standard_normal((8, 64)).astype(np.float32)
    qt = quantize("w", w, QuantSpec("int1", group_size=32))
    expected = np.abs(w.reshape(8, 2, 32)).mean(axis=2)
    np.testing.assert_allclose(qt.parts["scales"], expected, rtol=1e-6)
    np.testing.assert_array_equal(np.sign(dequantize(qt)), np.where(w >= 0, 1, -1))


def test_per_channel_codebooks(rng):
    w = (rng.standard_normal((16, 128)) * np.linspace(0.1, 3, 16)[:, None]).astype(np.float32)
    qt = quantize("w", w, QuantSpec("int3-optimal", codebook="channel"))
    assert qt.parts["codebook"].shape == (16, 8)
    assert rel_rmse(dequantize(qt), w) < 0.25


def test_fp16_scales_are_the_stored_ones(rng):
    w = rng.standard_normal((8, 64)).astype(np.float32)
    qt = quantize("w", w, QuantSpec("int4", scale_dtype="float16"))
    assert qt.parts["scales"].dtype == np.float16
    assert rel_rmse(dequantize(qt), w) < 0.15


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(PACKED_FORMATS), rows=st.integers(1, 6), groups=st.integers(1, 4),
       group=st.sampled_from([0, 32, 64, -1]), seed=st.integers(0, 2**31))
def test_round_trip_property(name, rows, groups, group, seed):
    k = groups * 64
    w = np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)
    qt = quantize("w", w, QuantSpec(name, group))
    restored = dequantize(qt)
    assert restored.shape == w.shape and np.isfinite(restored).all()
    assert rel_rmse(restored, w) < {8: 0.02, 4: 0.2, 3: 0.3, 2: 0.55, 1: 0.7}[qt.fmt.bits]
    # every restored value is scale x a level of the format's value set
    if qt.fmt.levels == "table":
        scale = qt.parts["scales"].astype(np.float32)
        per_value = np.full(w.shape, scale[0, 0]) if group == -1 else np.repeat(scale, k // scale.shape[1], axis=1)
        levels = restored / per_value
        assert np.abs(levels[..., None] - np.asarray(qt.fmt.table)).min(axis=-1).max() < 1e-5


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, np.nan]], np.float32), "NaN or Inf"),
    (np.array([[1.0, np.inf]], np.float32), "NaN or Inf"),
    (np.zeros((0, 4), np.float32), "empty"),
    (np.ones((2, 4), np.int64), "dtype int64"),
])
def test_bad_tensors(bad, message):
    with pytest.raises(UserError, match=message):
        quantize("bad.weight", bad, QuantSpec("int4"))


def test_group_must_divide_row(rng):
    with pytest.raises(UserError, match="group size 32 does not divide its row length 48"):
        quantize("w", rng.standard_normal((2, 48)).astype(np.float32), QuantSpec("int4", 32))


def test_spec_validation():
    with pytest.raises(UserError, match="zero points"):
        QuantSpec("int2-ternary", asymmetric=True).validate("--format")
    with pytest.raises(UserError, match="group size 48"):
        QuantSpec("int4", 48).validate("--group-size")


def test_plan_table_names_the_stored_dtype_of_kept_tensors():
    """A float16 norm weight kept as stored is 16 bits in the table and named float16 (it was
    labelled float32 at 16 bits per weight); quantized tensors show their format."""
    from ulpq_build.plan import resolve_plan

    plan = resolve_plan([("w", (8, 32), "float16"), ("norm", (32,), "float16"), ("bias", (8,), "float32")],
                        QuantSpec("int4", 32))
    rows = {line.split()[0]: line.split() for line in plan.table().splitlines()[1:-1]}
    assert rows["w"][2] == "int4"
    assert rows["norm"][2] == "float16" and rows["norm"][-1] == "16.000"
    assert rows["bias"][2] == "float32" and rows["bias"][-1] == "32.000"


def test_plan_counts_the_codebook_tables_once():
    """A plan with codebook formats stores their decode tables once (2 KiB): in its bytes, its bits per
    quantized weight and a line of its table, as the planner's budget counts them; none without."""
    from ulpq_build.formats import CODEBOOK_TABLE_BYTES
    from ulpq_build.plan import resolve_plan
    from ulpq_build.quantspec import stored_bytes

    tensors = [("a", (16, 256), "float32"), ("b", (32, 256), "float32")]
    plan = resolve_plan(tensors, QuantSpec("e8p"))
    stored = sum(stored_bytes(QuantSpec("e8p"), shape) for _, shape, _ in tensors)
    assert plan.shared_bytes == CODEBOOK_TABLE_BYTES and plan.bytes == stored + CODEBOOK_TABLE_BYTES
    assert plan.quantized_bits_per_weight == pytest.approx(8 * (stored + CODEBOOK_TABLE_BYTES) / (48 * 256))
    assert any(line.startswith("codebook decode tables (shared)") and line.split()[-1] == f"{CODEBOOK_TABLE_BYTES:,}"
               for line in plan.table().splitlines())
    scalar = resolve_plan(tensors, QuantSpec("int2", 32))
    assert scalar.shared_bytes == 0 and "codebook" not in scalar.table()
