"""The matrix-product kernels (gemv, its vec4 form, gemm with small and large tiles) for every
weight storage (format x scale dtype x zero points) and every profile: they compile in both WGSL
compilers browsers use (naga: Firefox, Tint: Chrome), and, executed on lavapipe through wgpu, match
numpy over the same dequantized weights. The JS runtime's dispatch rules and params packing are
checked against Python's here too."""

import itertools
import json
import shutil
import subprocess

import numpy as np
import pytest

from support import ROOT
from test_ops_kernels import workgroup_bytes
from ulpq_build.formats import FORMATS
from ulpq_build.kernels import (EPILOGUE_ACTIVATIONS, GEMV_WIDE_N, RUNTIME_EPILOGUE, SPLIT_MIN_K, SPLIT_TARGET_WORKGROUPS, KernelVariant, WeightStorage, gemv_deep, gemv_depth,
                                gemv_loads, gemv_vec4_fits, pack_params,
                                render, split_for, vec4_capable, workgroups)
from ulpq_build.native_webgpu import COMPILERS, KernelRunner, cached_device, compile_shader, matmul_params, validate, weight_arrays
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error

# float32 accumulation over K <= 256 products against a float64 reference
MATMUL_TOLERANCE = 1e-5
EPILOGUE = {"activation": "gelu", "bias": True, "residual": True}


def weight_specs():
    for name, fmt in FORMATS.items():
        if fmt.levels == "codebook":  # tests/test_codebook_formats.py (rotated inputs, shared tables)
            continue
        if not fmt.quantized:
            yield QuantSpec(name)
            continue
        for scale_dtype, asym in itertools.product(("float32", "float16"), (False, True) if fmt.supports_asymmetric else (False,)):
            yield QuantSpec(name, 32, asym, scale_dtype)


def matmul_variants():
    for spec in weight_specs():
        weight = WeightStorage.of(spec)
        for profile in PROFILES:
            yield spec, KernelVariant.make("gemv", profile, weight, vec4=False, **EPILOGUE)
            if vec4_capable(weight):
                yield spec, KernelVariant.make("gemv", profile, weight, vec4=True, **EPILOGUE)
            for size in ("small", "large"):
                yield spec, KernelVariant.make("gemm", profile, weight, size=size, **EPILOGUE)


VARIANTS = list(matmul_variants())
IDS = [v.key for _, v in VARIANTS]


def device_for(variant):
    return cached_device("wgpu", max(256, variant.prof.workgroup_size))


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("spec, variant", VARIANTS, ids=IDS)
def test_compiles(spec, variant, compiler):
    code = render(variant)
    assert code.startswith("// ulpq_build shader") and f"key: {variant.key}" in code
    assert f"workgroup_size: {variant.workgroup_size}" in code and "requires: " in code
    validate(code, variant.workgroup_size, compiler)


def run_and_compare(variant, spec, rng, m, n, k):
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    opts = variant.opts
    arrays = {"x": x, **weight_arrays(qt)}
    expected = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T
    if opts["bias"]:
        arrays["bias"] = rng.standard_normal(n).astype(np.float32)
        expected += arrays["bias"]
    expected = ACTIVATIONS[opts["activation"]](expected)
    if opts["residual"]:
        arrays["residual"] = rng.standard_normal((m, n)).astype(np.float32)
        expected += arrays["residual"]
    y = KernelRunner(device_for(variant)).run(variant, arrays, matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < MATMUL_TOLERANCE


def shape_for(variant):
    """Ragged shapes: rows that no tile divides, K with a partial word where the variant allows."""
    if variant.kernel == "gemm":
        return 37, 45, 96
    if variant.opts["vec4"]:
        return 2, 45, 256  # whole quads of words for every vec4-capable format
    return 2, 45, 100 if variant.weight.format == "float32" or QuantSpec(variant.weight.format).fmt.layout == "stream" else 96


@pytest.mark.gpu
@pytest.mark.parametrize("spec, variant", VARIANTS, ids=IDS)
def test_executes_and_matches_numpy(spec, variant, rng):
    m, n, k = shape_for(variant)
    if k % 32:
        spec = QuantSpec(spec.format, 0, spec.asymmetric, spec.scale_dtype)  # groups of 32 need K % 32 == 0
    assert not variant.opts.get("vec4") or gemv_vec4_fits(variant.weight, k)
    run_and_compare(variant, spec, rng, m, n, k)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel, options", [("gemv", {"vec4": False}), ("gemv", {"vec4": True}), ("gemm", {"size": "small"})])
@pytest.mark.parametrize("activation, bias, residual", list(itertools.product(("none", "gelu"), (False, True), (False, True))))
def test_epilogues(kernel, options, activation, bias, residual, rng):
    spec = QuantSpec("int4", 32)
    variant = KernelVariant.make(kernel, "chrome", WeightStorage.of(spec), activation=activation, bias=bias,
                                 residual=residual, **options)
    assert (("bias" in variant.bindings) == bias) and (("residual" in variant.bindings) == residual)
    run_and_compare(variant, spec, rng, 3 if kernel == "gemm" else 1, 29, 128)


RUNTIME_KERNELS = [("gemv", {"vec4": False}), ("gemv", {"vec4": True}), ("gemm", {"size": "small"}), ("gemm", {"size": "large"}),
                   ("splitk", {})]


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox", "cpu"])
@pytest.mark.parametrize("kernel, options", RUNTIME_KERNELS, ids=lambda v: str(v))
def test_runtime_epilogue_one_program_every_epilogue(kernel, options, profile, rng):
    """The runtime epilogue (kernels.RUNTIME): one program whose uniforms pick the activation (an index
    into EPILOGUE_ACTIVATIONS) and whether the residual is added, against numpy for every activation
    with and without the residual. Without it the residual binding holds NaN: a program that read
    it anyway would fail. Its key and text are the same whatever the dispatch applies."""
    spec = QuantSpec("int4", 32)
    weight = None if kernel == "splitk" else WeightStorage.of(spec)
    variant = KernelVariant.make(kernel, profile, weight, bias=True, **RUNTIME_EPILOGUE, **options)
    assert "activation-runtime" in variant.key and "residual-runtime" in variant.key
    assert [name for name, _ in variant.params[-2:]] == ["act", "add_residual"] and "residual" in variant.bindings
    for compiler in COMPILERS:
        validate(render(variant), variant.workgroup_size, compiler)
    m, n, k = (1, 29, 128) if kernel == "gemv" else (37, 45, 96)
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    product = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T
    runner = KernelRunner(device_for(variant))
    for (index, activation), add in itertools.product(enumerate(EPILOGUE_ACTIVATIONS), (0, 1)):
        residual = rng.standard_normal((m, n)).astype(np.float32) if add else np.full((m, n), np.nan, np.float32)
        uniforms = {"act": index, "add_residual": add}
        if kernel == "splitk":  # the partial sums of one split: the product itself
            arrays = {"partial": product.astype(np.float32), "bias": bias, "residual": residual}
            params = {"m": m, "n": n, "splits": 1, "count": m * n, **uniforms}
        else:
            arrays = {"x": x, **weight_arrays(qt), "bias": bias, "residual": residual}
            params = {**matmul_params(qt, m), **uniforms}
        y = runner.run(variant, arrays, params, {"y": m * n})["y"].reshape(m, n)
        expected = ACTIVATIONS[activation](product + bias) + (residual if add else 0)
        assert np.isfinite(y).all(), f"{activation}, residual {add}: NaN (unwritten, or the unused residual read)"
        assert relative_error(y, expected) < MATMUL_TOLERANCE, f"{activation}, residual {add}"


GRANULARITIES = [(name, group, codebook) for name, fmt in FORMATS.items() if fmt.quantized and fmt.levels != "codebook"
                 for group in (32, 64, -1, 0) for codebook in (("tensor", "channel") if fmt.levels == "fitted" else ("tensor",))
                 if not (codebook == "channel" and group == -1)]


@pytest.mark.gpu
@pytest.mark.parametrize("name, group, codebook", GRANULARITIES)
def test_scale_granularities(name, group, codebook, rng):
    fmt = FORMATS[name]
    for asym in (False, True) if fmt.supports_asymmetric else (False,):
        spec = QuantSpec(name, group, asym, codebook=codebook)
        weight = WeightStorage.of(spec)
        for kernel, options in [("gemv", {"vec4": False}), ("gemv", {"vec4": vec4_capable(weight)}), ("gemm", {"size": "small"})]:
            variant = KernelVariant.make(kernel, "firefox", weight, activation="gelu", bias=True, **options)
            run_and_compare(variant, spec, rng, 5, 19, 256)


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox", "safari"])
@pytest.mark.parametrize("spec, vec4", [(QuantSpec("float32"), True), (QuantSpec("int4", 32), True), (QuantSpec("int4", 32, True), False),
                                        (QuantSpec("int3"), False), (QuantSpec("int2-optimal", 32, codebook="channel"), True),
                                        (QuantSpec("int8", 0, False, "float16"), True)], ids=lambda v: str(v))
def test_gemv_input_rows_per_workgroup(spec, vec4, profile, rng):
    """Each GEMV workgroup decodes its weights once for x_rows input rows: 13 rows are several such
    blocks and a partial one (rows past m are computed from row m - 1 and never written)."""
    plain = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=vec4)
    x_rows = max(1, min(8, (4096 // plain.workgroup_size) // plain.tiles["rows"]))  # within 16 KiB of partial sums
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=vec4, activation="gelu", bias=True,
                                 residual=True, tiles={"x_rows": x_rows})
    assert variant.workgroup_storage_bytes <= 16384
    k = 256 if vec4 or spec.group_size > 0 else 250  # 250: a partial last word (int3 packs 10 per word)
    run_and_compare(variant, spec, rng, 13, 45, k)


def test_gemv_tiles_by_outputs():
    """Deep products of many outputs take the wide tiles (32 threads x 8 rows) where they were measured
    (uniform 2- and 4-bit rows); other storages, fewer outputs and short rows keep their tiles, and
    the wide variant is a key of its own."""
    int4, int2, int8, f32 = (WeightStorage.of(QuantSpec(f, g)) for f, g in (("int4", 32), ("int2", 0), ("int8", 0), ("float32", 0)))
    assert gemv_depth(int4, 2048, GEMV_WIDE_N) == "wide" and gemv_depth(int2, 2048 + 16, 128256) == "wide"
    assert gemv_depth(int4, 2048, GEMV_WIDE_N - 1) is True and gemv_depth(int8, 2048, 128256) is True
    assert gemv_depth(int4, 768, 128256) is False and gemv_depth(f32, 2048, 128256) is False
    wide = KernelVariant.make("gemv", "chrome", int4, vec4=True, deep="wide")
    deep = KernelVariant.make("gemv", "chrome", int4, vec4=True, deep=True)
    assert (wide.tiles["threads_per_row"], wide.tiles["rows"]) == (32, 8) and (deep.tiles["threads_per_row"], deep.tiles["rows"]) == (64, 4)
    assert wide.key != deep.key and ".deep." in deep.key and ".deep-wide." in wide.key


def test_gemv_lookup_tables_by_storage_and_shape():
    """Wide products of 1- and 2-bit codes with fixed levels take the lookup-table GEMV where their rows
    are whole chunks of 32 words (K a multiple of 512 for int2, 1024 for int1); other rows keep the
    wide or deep tiles. CPU adapters keep their own tiles (no tables) under the same options."""
    def storage(name, group=32):
        return WeightStorage.of(QuantSpec(name, group))
    for name in ("int2", "int2-4values", "int2-ternary"):
        assert gemv_depth(storage(name), 2048, GEMV_WIDE_N) == "lut"
    assert gemv_depth(storage("int1", 128), 2048, 128256) == "lut" and gemv_depth(storage("int1", 128), 2080, 128256) is True
    assert gemv_depth(storage("int2"), 2048, GEMV_WIDE_N - 1) is True  # few outputs: deep tiles
    assert gemv_depth(storage("int2"), 2064, 128256) == "wide"  # 129 words: not whole chunks of 32
    assert gemv_depth(storage("int2-optimal"), 2048, 128256) is True and gemv_depth(storage("int4"), 2048, 128256) == "wide"
    lut = KernelVariant.make("gemv", "chrome", storage("int2"), vec4=True, deep="lut")
    assert lut.tiles["lut"] and ".deep-lut." in lut.key and "gemv_lut.wgsl.jinja" in render(lut)
    for profile in ("chrome", "firefox", "safari"):  # the limit the bundle asks for is what the program declares
        normed = KernelVariant.make("gemv", profile, storage("int2"), vec4=True, deep="lut", norm=True)
        assert workgroup_bytes(render(normed)) == normed.workgroup_storage_bytes <= 16384  # WebGPU's default limit
    assert not lut.with_features(("subgroups", "shader-f16")).features
    cpu = KernelVariant.make("gemv", "cpu", storage("int2"), vec4=True, deep="lut")
    assert "lut" not in cpu.tiles and "gemv_lut" not in render(cpu)
    for name, tiles in (("int4", None), ("int2-optimal", None), ("int2", {"threads_per_row": 64}), ("int2", {"x_rows": 2})):
        with pytest.raises(ValueError, match="tile lut"):
            KernelVariant.make("gemv", "chrome", storage(name), tiles={"lut": 1, **(tiles or {})}, vec4=True, deep="wide")


@pytest.mark.gpu
@pytest.mark.parametrize("spec, m, k", [(QuantSpec("int2", 32), 1, 2048), (QuantSpec("int2", 64, True, "float16"), 3, 512),
                                        (QuantSpec("int2", 0), 2, 1024), (QuantSpec("int1", 256), 1, 2048),
                                        (QuantSpec("int2-4values", 32), 2, 1024), (QuantSpec("int2-ternary", 128), 1, 1024)],
                         ids=str)
@pytest.mark.parametrize("profile", ["chrome", "firefox", "safari"])
def test_gemv_lookup_tables_match_numpy(spec, m, k, profile, rng):
    """The lookup-table GEMV against numpy: one and several chunks, several input rows (a workgroup
    each), zero points with float16 scales, per-tensor scales, int1's 4 codes a nibble, a table
    of levels that is not affine, a gelu epilogue over a bias and a residual; 45 outputs end inside a
    workgroup's 64 rows."""
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=True, deep="lut",
                                 activation="gelu", bias=True, residual=True)
    assert variant.tiles.get("lut")
    run_and_compare(variant, spec, rng, m, 45, k)


def test_gemv_loads_by_row_length():
    """Deep rows with fewer quads of words than the tiles' threads per row load pairs (int2's K = 2048
    against 64 threads); others keep quads, and shapes with a partial quad the per-block path."""
    int4, int2, int8, f32 = (WeightStorage.of(QuantSpec(f, g)) for f, g in (("int4", 32), ("int2", 0), ("int8", 0), ("float32", 0)))
    assert gemv_loads(int2, 2048, 3072) == "pairs" and gemv_loads(int2, 2048, 2048) == "pairs"
    assert gemv_loads(int4, 2048, 3072) is True and gemv_loads(int8, 2048, 3072) is True
    assert gemv_loads(int2, 8192, 2048) is True  # 128 quads: every thread loads
    assert gemv_loads(int2, 2048, 128256) is True  # the wide tiles' 32 threads: a quad each
    assert gemv_loads(int2, 768, 768) is True and gemv_loads(f32, 2048, 2048) is True
    assert gemv_loads(int4, 776, 768) is False
    pairs = KernelVariant.make("gemv", "chrome", int2, vec4="pairs", deep=True)
    assert ".vec4-pairs." in pairs.key and "array<vec2<u32>>" in render(pairs)
    with pytest.raises(ValueError, match="packed formats"):
        KernelVariant.make("gemv", "chrome", f32, vec4="pairs")


# float32 sums over K = 2304 products against a float64 reference
LONG_ROW_TOLERANCE = 4e-5


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox"])
@pytest.mark.parametrize("spec, vec4", [(QuantSpec("int4", 32), True), (QuantSpec("int4", 64, True, "float16"), False),
                                        (QuantSpec("int8", 128), True), (QuantSpec("int2", 32), True),
                                        (QuantSpec("int2-optimal", 32, codebook="channel"), False),
                                        (QuantSpec("int4", 0), True), (QuantSpec("int1", 256), False),
                                        (QuantSpec("int4", 96), False), (QuantSpec("int4", 96), True),
                                        (QuantSpec("int3", 32), False), (QuantSpec("int2", 32), "pairs"),
                                        (QuantSpec("int4", 96, True, "float16"), "pairs")],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("deep", [False, True, "wide"])
def test_gemv_scale_groups_over_long_rows(spec, vec4, deep, profile, rng):
    """The GEMV keeps each block's scale group by adding as its threads stride along K (no division
    per block): rows long enough that every thread strides several times and crosses many groups,
    with the few-thread tiles of short rows, the deep tiles bundles use from GEMV_DEEP_K inputs and
    the wide ones of many outputs (9 outputs: one workgroup, most of its rows past n)."""
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), vec4=vec4, deep=deep, activation="none", bias=True)
    assert gemv_deep(variant.weight, 2304) and not gemv_deep(variant.weight, 768)  # what a bundle would pick
    m, n, k = 1, 9, 2304  # 18 x 128: several strides per thread; groups of 96 straddle the strides
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    expected = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T + bias
    y = KernelRunner(device_for(variant)).run(variant, {"x": x, **weight_arrays(qt), "bias": bias},
                                              matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < LONG_ROW_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox"])
@pytest.mark.parametrize("spec", [QuantSpec("int8", 0), QuantSpec("int4", 0, True), QuantSpec("int2", 0, False, "float16"),
                                  QuantSpec("int2-optimal", 0, codebook="channel"), QuantSpec("int1", 0)],
                         ids=lambda s: WeightStorage.of(s).key)
def test_gemm_partial_last_word(spec, profile, rng):
    """GEMM tiles stage W a whole word at a time: K = 100 ends inside a word of every word format
    (the codes past K must be staged as zeros, whatever the padding holds)."""
    variant = KernelVariant.make("gemm", profile, WeightStorage.of(spec), size="small", activation="none", bias=True)
    run_and_compare(variant, spec, rng, 37, 45, 100)


SPLIT_SPECS = [QuantSpec("float32"), QuantSpec("int4", 32), QuantSpec("int3-dense", 32, True, "float16"),
               QuantSpec("int2-optimal", 32, codebook="channel"), QuantSpec("int8")]


@pytest.mark.gpu
@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("spec", SPLIT_SPECS, ids=lambda s: WeightStorage.of(s).key)
def test_split_k_gemm_then_splitk_matches_numpy(spec, profile, rng):
    """The small-tile GEMM cut along K writes raw partial sums per split (a ragged last split
    included); splitk adds them and applies bias, GELU and the residual."""
    m, n, k = 37, 45, 352  # splits of 96 inputs: 96, 96, 96, 64
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    gemm = KernelVariant.make("gemm", profile, WeightStorage.of(spec), size="small", split=True)
    finish = KernelVariant.make("splitk", profile, activation="gelu", bias=True, residual=True)
    for variant in (gemm, finish):  # both compilers accept them (executed below through naga)
        for compiler in COMPILERS:
            validate(render(variant), variant.workgroup_size, compiler)
    params = {**matmul_params(qt, m), "k_split": 96}
    assert workgroups(gemm, params)[2] == 4
    partial = KernelRunner(device_for(gemm)).run(gemm, {"x": x, **weight_arrays(qt)}, params, {"y": 4 * m * n})["y"]
    assert np.isfinite(partial).all(), "a partial sum was never written (still NaN)"
    wd = dequantize(qt).astype(np.float64)
    for s in range(4):  # each split holds its own slice of the product
        lo, hi = 96 * s, min(k, 96 * (s + 1))
        want = x[:, lo:hi].astype(np.float64) @ wd[:, lo:hi].T
        assert relative_error(partial[s * m * n:(s + 1) * m * n].reshape(m, n), want) < MATMUL_TOLERANCE
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    y = KernelRunner(device_for(finish)).run(finish, {"partial": partial, "bias": bias, "residual": residual},
                                             {"m": m, "n": n, "splits": 4, "count": m * n}, {"y": m * n})["y"].reshape(m, n)
    expected = ACTIVATIONS["gelu"](x.astype(np.float64) @ wd.T + bias) + residual
    assert relative_error(y, expected) < MATMUL_TOLERANCE


def test_split_rule_matches_between_python_and_js(tmp_path):
    """kernels.split_for and dispatch.js splitFor give the same k_split (and both leave big grids alone)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    tiles = KernelVariant.make("gemm", "chrome", WeightStorage("int4"), size="small", split=True).tiles
    shapes = [(128, 768, 3072), (128, 768, 768), (144, 2304, 768), (8, 768, 768), (1000, 3072, 768), (37, 45, 352), (64, 64, 200)]
    want = [split_for(m, n, k, tiles) for m, n, k in shapes]
    assert want[0] < 3072 and want[4] == 768 and want[6] == 200  # split; a full grid and a short K are not
    script = tmp_path / "split.mjs"
    script.write_text(f"""
import {{ splitFor }} from '{(ROOT / "web_runtime/dispatch.js").as_uri()}';
const [shapes, tiles, thresholds] = JSON.parse(process.argv[2]);
process.stdout.write(JSON.stringify(shapes.map(([m, n, k]) => splitFor(m, n, k, tiles, thresholds))));
""")
    thresholds = {"split_target_workgroups": SPLIT_TARGET_WORKGROUPS, "split_min_k": SPLIT_MIN_K}
    proc = subprocess.run([node, script, json.dumps([shapes, tiles, thresholds])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == want


@pytest.mark.gpu
def test_gemv_grid_beyond_65535_workgroups(rng):
    spec = QuantSpec("int8")
    variant = KernelVariant.make("gemv", "firefox", WeightStorage.of(spec), tiles={"x_rows": 1})
    m, n, k = 1100, 1921, 8  # 61 workgroups (32 rows each) per input row: 67,100 in all, split over 2 dims
    assert workgroups(variant, {"m": m, "n": n})[1] > 1
    run_and_compare(variant, spec, rng, m, n, k)


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["wgpu", "dawn"])
def test_512_variants_need_the_raised_limit(engine):
    variant = KernelVariant.make("gemm", "safari", WeightStorage("int4"), size="large")
    assert variant.required_limits["maxComputeInvocationsPerWorkgroup"] == 512
    default_device = cached_device(engine, 256, null_backend=engine == "dawn")  # WebGPU's default limits
    with pytest.raises(Exception, match="(?i)workgroup|invocations|limit"):
        compile_shader(default_device, render(variant))


def test_vec4_is_refused_where_it_cannot_read_words():
    for name in ("int3", "int3-dense", "int3-optimal"):
        with pytest.raises(ValueError, match="vec4"):
            KernelVariant.make("gemv", "chrome", WeightStorage(name), vec4=True)
    assert gemv_vec4_fits(WeightStorage("int4"), 768) and not gemv_vec4_fits(WeightStorage("int4"), 776)


def test_js_dispatch_matches_python(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    cases = []
    for kernel, opts, dims in [
        ("gemv", {"vec4": True}, {"m": 3, "n": 1000, "k": 768}), ("gemv", {}, {"m": 5000, "n": 16384, "k": 96}),
        ("gemm", {"size": "small"}, {"m": 130, "n": 3072, "k": 768}), ("gemm", {"size": "large"}, {"m": 4096, "n": 100, "k": 64}),
    ]:
        for profile in PROFILES:
            variant = KernelVariant.make(kernel, profile, WeightStorage("int4"), **opts)
            params = {**dims, "words_per_row": 96, "groups_per_row": 1, "group_size": 768, "codebook_stride": 0,
                      "k_split": dims["k"] if kernel == "gemv" else 256}
            cases.append({"shader": variant.to_manifest(), "dims": params, "grid": list(workgroups(variant, params)),
                          "params": list(pack_params(variant, params))})
    for kernel, dims in [("layernorm", {"rows": 70000, "cols": 384, "eps": 1e-12}), ("add", {"count": 9_000_000, "b_count": 384}),
                         ("attention", {"batch": 2, "seq": 18, "heads": 12, "head_dim": 32, "scale": 0.17677669,
                                        "in_stride": 384, "q_off": 0, "k_off": 0, "v_off": 0})]:
        variant = KernelVariant.make(kernel, "firefox")
        cases.append({"shader": variant.to_manifest(), "dims": dims, "grid": list(workgroups(variant, dims)),
                      "params": list(pack_params(variant, dims))})
    script = tmp_path / "check.mjs"
    script.write_text(f"""
import {{ workgroups, packParams }} from '{(ROOT / "web_runtime/dispatch.js").as_uri()}';
const cases = JSON.parse(process.argv[2]);
const out = cases.map((c) => ({{ grid: workgroups(c.shader, c.dims), params: Array.from(new Uint8Array(packParams(c.shader, c.dims))) }}));
process.stdout.write(JSON.stringify(out));
""")
    proc = subprocess.run([node, script, json.dumps(cases)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for case, got in zip(cases, json.loads(proc.stdout)):
        assert got["grid"] == case["grid"], case["shader"]["key"]
        assert got["params"] == case["params"], case["shader"]["key"]


@pytest.mark.gpu
@pytest.mark.parametrize("spec, chunk, vec4, deep, m", [
    (QuantSpec("int2", 32), 8, True, "wide", 1), (QuantSpec("int2", 64, True, "float16"), 4, "pairs", True, 3),
    (QuantSpec("int1", 256), 8, True, True, 1), (QuantSpec("int2-optimal", 32, codebook="channel"), 8, True, False, 2),
    (QuantSpec("int4", 32, True), 4, True, True, 1)], ids=str)
@pytest.mark.parametrize("profile", ["chrome", "firefox"])
def test_gemv_decode_chunks_match_numpy(spec, chunk, vec4, deep, m, profile, rng):
    """The benchmark tile decode_chunk (a word's codes decoded a few at a time for every row, then
    multiplied) computes the same product: formats of 16 and 32 codes a word, zero points, table
    levels, pairs, several input rows, a gelu epilogue over a bias and a residual."""
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(spec), tiles={"decode_chunk": chunk}, vec4=vec4,
                                 deep=deep, activation="gelu", bias=True, residual=True)
    assert f"decode_chunk {chunk}:" in render(variant)
    run_and_compare(variant, spec, rng, m, 45, 2048)


def test_decode_chunk_is_checked():
    int2 = WeightStorage.of(QuantSpec("int2", 32))
    for tiles, options in (({"decode_chunk": 6}, {"vec4": True}), ({"decode_chunk": 32}, {"vec4": True}),
                           ({"decode_chunk": 8}, {"vec4": False})):
        with pytest.raises(ValueError, match="decode_chunk"):
            KernelVariant.make("gemv", "chrome", int2, tiles=tiles, **options)
    with pytest.raises(ValueError, match="decode_chunk"):
        KernelVariant.make("gemv", "chrome", WeightStorage.of(QuantSpec("float32")), tiles={"decode_chunk": 4}, vec4=True)


def test_gate_up_tiles_follow_the_fused_product():
    """A gated decoder's gate and up nodes serve the fused gate|up product (backend_webgpu.js
    linearGateUp), so their GEMV tiles are chosen for both halves' outputs: Llama-3.2-1B's 2 x 8192 take the wide tiles
    that the gate's 8192 alone would not."""
    from ulpq_build.bundle import fused_outputs

    def linear(n, k=2048):
        return {"in_features": k, "out_features": n}
    layers = [{"gate": linear(8192), "up": linear(8192), "down": linear(2048, 8192)} for _ in range(2)]
    model = {"layers": layers, "lm_head": linear(128256), "ffn": "gated"}
    served = fused_outputs(model)
    # both halves: the runtime fuses them only where their kernels are the same
    assert [served[id(layer[h])] for layer in layers for h in ("gate", "up")] == [16384] * 4 and len(served) == 4
    int4 = WeightStorage.of(QuantSpec("int4", 0))
    assert gemv_depth(int4, 2048, served[id(layers[0]["gate"])]) == "wide" and gemv_depth(int4, 2048, 8192) is True
    assert fused_outputs({**model, "ffn": "mlp"}) == {} and fused_outputs({"layers": layers}) == {}
