"""The GEMV's prologues (kernels.PROLOGUE): a decoder step's RMSNorm, or its gated FFN's act(gate) * up,
fused into the product that follows. Executed on lavapipe through wgpu against numpy: the norm and the
gate product computed in float64 from the same inputs, then the product over the same dequantized
weights. Every path the template has: scalar and vec4 loads, partial last blocks, one thread per row
group (CPU adapters), tree reductions of 16-64 threads per row, the deep tiles, several input rows per
workgroup, the subgroup reduction; outputs poisoned (the runner fills y with NaN) and compared with a
named tolerance."""

import numpy as np
import pytest

from ulpq_build.kernels import KernelVariant, WeightStorage, gemv_vec4_fits, render
from ulpq_build.native_webgpu import KernelRunner, cached_device, matmul_params, validate, weight_arrays
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error

# float32 sums over K <= 1024 products (and the norm's sum of squares) against a float64 reference
PROLOGUE_TOLERANCE = 2e-5
EPS = 1e-5

F32, INT4, INT4A, INT2, INT8, INT3 = (QuantSpec("float32"), QuantSpec("int4", 32), QuantSpec("int4", 32, True, "float16"),
                                      QuantSpec("int2", 64), QuantSpec("int8", 0), QuantSpec("int3", 0))
INT2A, INT1 = QuantSpec("int2", 32, True, "float16"), QuantSpec("int1", 128)
# (storage, profile, vec4, deep, tile overrides, m, k): K 264 and 250 end inside a block or a word
CASES = [
    (F32, "chrome", True, False, None, 1, 256), (F32, "firefox", False, False, None, 2, 250),
    (INT4, "chrome", True, False, None, 1, 256), (INT4, "chrome", True, True, None, 1, 256),
    (INT4, "firefox", False, False, {"x_rows": 3}, 5, 256), (INT4A, "chrome", False, True, None, 1, 256),
    (INT2, "chrome", True, False, None, 1, 256), (INT2, "cpu", True, False, None, 3, 256),
    (INT8, "safari", True, False, None, 1, 256), (INT8, "cpu", False, False, None, 2, 264),
    (INT3, "firefox", False, False, None, 1, 250), (F32, "cpu", False, False, {"x_rows": 2}, 3, 250),
    (INT4, "chrome", True, "wide", None, 1, 256), (INT2, "firefox", True, "wide", None, 2, 256),
    (INT2, "chrome", "pairs", True, None, 1, 256), (INT4A, "firefox", "pairs", True, None, 2, 256),
    # the lookup-table GEMV (deep "lut"): K of two and of one chunk of 32 words, zero points, table levels
    (INT2, "chrome", True, "lut", None, 1, 1024), (INT2A, "firefox", True, "lut", None, 2, 512),
    (INT1, "chrome", True, "lut", None, 1, 1024), (INT2, "safari", True, "lut", None, 1, 1024),
]


def case_id(case):
    spec, profile, vec4, deep, tiles, m, k = case
    return f"{WeightStorage.of(spec).key}-{profile}-{'pairs' if vec4 == 'pairs' else 'vec4' if vec4 else 'scalar'}{'-' + deep if isinstance(deep, str) else '-deep' if deep else ''}-m{m}-k{k}" + (
        "-" + "-".join(f"{a}{b}" for a, b in tiles.items()) if tiles else "")


def run(variant, spec, arrays, params, m, n, k, rng):
    assert not variant.opts["vec4"] or gemv_vec4_fits(variant.weight, k), "a shape the runtime would not give vec4"
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    device = cached_device("wgpu", max(256, variant.workgroup_size), features=variant.features)
    y = KernelRunner(device).run(variant, {**arrays, **weight_arrays(qt)}, {**matmul_params(qt, m), **params},
                                 {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    return y, dequantize(qt).astype(np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_norm_prologue_matches_numpy(case, rng):
    spec, profile, vec4, deep, tiles, m, k = case
    n = 45
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), tiles=tiles, vec4=vec4, deep=deep,
                                 norm=True, residual=True)
    x = (rng.standard_normal((m, k)) * 3 + 0.5).astype(np.float32)  # rms far from 1: the scale matters
    gamma = (rng.standard_normal(k) * 0.5 + 1).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    y, w = run(variant, spec, {"x": x, "norm": gamma, "residual": residual}, {"eps": EPS}, m, n, k, rng)
    x64 = x.astype(np.float64)
    normed = x64 / np.sqrt((x64 ** 2).mean(axis=1, keepdims=True) + EPS) * gamma
    assert relative_error(y, normed @ w.T + residual) < PROLOGUE_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh", "gelu"])
@pytest.mark.parametrize("case", CASES[:4] + CASES[6:9] + CASES[10:], ids=case_id)
def test_gate_prologue_matches_numpy(case, activation, rng):
    """x = act(gate) * up from one [m, 2K + 4] buffer bound twice (the fused gate|up product's halves,
    with a row stride past its width) or, vec4 or not, from two offsets the params name."""
    spec, profile, vec4, deep, tiles, m, k = case
    n = 37
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), tiles=tiles, vec4=vec4, deep=deep,
                                 gate=activation)
    stride = 2 * k + 4
    both = rng.standard_normal((m, stride)).astype(np.float32) * 2
    params = {"in_stride": stride, "gate_off": 0, "up_off": k}
    y, w = run(variant, spec, {"x": both, "up": both}, params, m, n, k, rng)
    b64 = both.astype(np.float64)
    x = ACTIVATIONS[activation](b64[:, :k]) * b64[:, k:2 * k]
    assert relative_error(y, x @ w.T) < PROLOGUE_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("tiles", [None, {"threads_per_row": 4, "x_rows": 2}], ids=["wide", "in-subgroup"])
def test_norm_prologue_subgroup_variant(tiles, rng):
    """The subgroup reduction carries the sums of x^2 beside the products (a row group wider than
    lavapipe's subgroups meets in workgroup memory; a narrow one stays in registers)."""
    base = KernelVariant.make("gemv", "chrome", WeightStorage.of(F32), tiles=tiles, vec4=True, norm=True)
    variant = base.with_features(("subgroups",))
    assert variant.features == ("subgroups",)
    m, n, k = (3 if tiles else 1), 45, 256
    x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    gamma = rng.standard_normal(k).astype(np.float32)
    y, w = run(variant, F32, {"x": x, "norm": gamma}, {"eps": EPS}, m, n, k, rng)
    x64 = x.astype(np.float64)
    normed = x64 / np.sqrt((x64 ** 2).mean(axis=1, keepdims=True) + EPS) * gamma
    assert relative_error(y, normed @ w.T) < PROLOGUE_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", ["naga", "tint"])
def test_prologue_variants_compile(compiler):
    for spec in (F32, INT4A, INT2):
        for options in ({"norm": True}, {"gate": "silu"}):
            for profile in ("chrome", "firefox", "safari", "cpu"):
                variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=spec is not INT4A, **options)
                validate(render(variant), variant.workgroup_size, compiler)
    for spec in (INT2, INT2A, INT1):  # the lookup-table GEMV (Chrome's and Firefox's compilers alike)
        for options in ({"norm": True}, {"gate": "silu"}, {"activation": "gelu", "bias": True, "residual": True}):
            for profile in ("chrome", "firefox", "safari"):
                variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=True, deep="lut", **options)
                assert variant.tiles.get("lut")
                validate(render(variant), variant.workgroup_size, compiler)


def test_prologues_change_only_their_variants():
    """At their defaults the prologue options leave a variant's key, bindings and params as they
    were; each prologue adds its binding and params; they exclude each other and codebook storages."""
    plain = KernelVariant.make("gemv", "chrome", WeightStorage.of(INT4), vec4=True)
    assert "norm" not in plain.key and "gate" not in plain.key
    assert "norm" not in plain.bindings and "up" not in plain.bindings and plain.params == plain.spec.params
    normed = KernelVariant.make("gemv", "chrome", WeightStorage.of(INT4), vec4=True, norm=True)
    assert ".norm." in normed.key and "norm" in normed.bindings and normed.params[-1] == ("eps", "f32")
    gated = KernelVariant.make("gemv", "chrome", WeightStorage.of(INT4), vec4=True, gate="silu")
    assert "gate-silu" in gated.key and "up" in gated.bindings
    assert [name for name, _ in gated.params[-3:]] == ["in_stride", "gate_off", "up_off"]
    with pytest.raises(ValueError, match="one prologue"):
        KernelVariant.make("gemv", "chrome", WeightStorage.of(INT4), norm=True, gate="silu")
    with pytest.raises(ValueError, match="codebook"):
        KernelVariant.make("gemv", "chrome", WeightStorage.of(QuantSpec("e8p")), norm=True)
