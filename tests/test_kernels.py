"""Every linear-kernel variant (format x scale storage x activation x bias x profile) compiles in
both WGSL compilers browsers use (naga: Firefox, Tint: Chrome) and, executed on lavapipe
through wgpu, matches numpy over the same dequantized weights."""

import itertools

import numpy as np
import pytest

from ulpq_build.formats import FORMATS
from ulpq_build.native_webgpu import LinearRunner, cached_device, compile_shader
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error
from ulpq_build.shaders import LinearVariant, linear_variant, render

# float32 accumulation over K = 128 products against a float64 reference
LINEAR_TOLERANCE = 1e-5


def weight_specs():
    for name, fmt in FORMATS.items():
        if not fmt.quantized:
            yield QuantSpec(name)
            continue
        for scale_dtype, asym in itertools.product(("float32", "float16"), (False, True) if fmt.supports_asymmetric else (False,)):
            yield QuantSpec(name, 0, asym, scale_dtype)


ALL_VARIANTS = sorted({linear_variant(spec, act, bias, profile).key: linear_variant(spec, act, bias, profile)
                       for spec in weight_specs() for act in ("none", "gelu") for bias in (True, False)
                       for profile in PROFILES}.items())
SPEC_OF = {}
for spec in weight_specs():
    SPEC_OF.setdefault(linear_variant(spec, "none", True, "chrome").weight_key, spec)


def device_for(variant, engine="wgpu"):
    return cached_device(engine, max(256, variant.prof.workgroup_size))


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", ALL_VARIANTS, ids=[k for k, _ in ALL_VARIANTS])
def test_compiles_in_naga_and_tint(key, variant):
    code = render(variant)
    assert code.startswith("// ulpq_build shader") and f"key: {key}" in code
    compile_shader(device_for(variant, "wgpu"), code)  # naga, pipeline included
    tint = cached_device("dawn", 256, null_backend=True)
    # Dawn's Null adapter stops at 256 invocations: 512 variants are validated as modules there
    compile_shader(tint, code, pipeline=variant.prof.workgroup_size <= 256)


def run_and_compare(variant, spec, rng, m=3, n=37, k=128):
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if variant.has_bias else None
    expected = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T
    if bias is not None:
        expected += bias
    expected = ACTIVATIONS[variant.activation](expected)
    y = LinearRunner(device_for(variant)).run(variant, qt, x, bias)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < LINEAR_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", ALL_VARIANTS, ids=[k for k, _ in ALL_VARIANTS])
def test_executes_and_matches_numpy(key, variant, rng):
    run_and_compare(variant, SPEC_OF[variant.weight_key], rng)


GRANULARITIES = [(name, group, codebook) for name, fmt in FORMATS.items() if fmt.quantized
                 for group in (32, 64, -1, 0) for codebook in (("tensor", "channel") if fmt.levels == "fitted" else ("tensor",))
                 if not (codebook == "channel" and group == -1)]


@pytest.mark.gpu
@pytest.mark.parametrize("name, group, codebook", GRANULARITIES)
def test_scale_granularities(name, group, codebook, rng):
    fmt = FORMATS[name]
    for asym in (False, True) if fmt.supports_asymmetric else (False,):
        spec = QuantSpec(name, group, asym, codebook=codebook)
        variant = linear_variant(spec, "gelu", True, "firefox")
        run_and_compare(variant, spec, rng, m=5, n=19, k=256)


@pytest.mark.gpu
def test_large_outputs_use_a_2d_grid(rng):
    spec = QuantSpec("int4")
    variant = linear_variant(spec, "none", False, "firefox")
    # 4100 x 2049 outputs at 128 per workgroup: 65,635 workgroups, more than one dimension holds
    run_and_compare(variant, spec, rng, m=4100, n=2049, k=32)


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["wgpu", "dawn"])
def test_512_variants_need_the_raised_limit(engine):
    variant = LinearVariant("int4", "float32", False, "none", True, "safari")
    default_device = cached_device(engine, 256, null_backend=engine == "dawn")
    with pytest.raises(Exception, match="(?i)workgroup|invocations|limit"):
        compile_shader(default_device, render(variant))
