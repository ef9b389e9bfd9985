"""Shader variants for CPU adapters (SwiftShader in Chromium, lavapipe in Firefox): the cpu_adapter
profiles' matrix products (the barrier-free `direct` GEMM, the one-thread-per-row GEMV) at the edges
the other kernel tests do not reach for them, compared with numpy on lavapipe; the JS rule that
picks those profiles only on CPU adapters; and both browsers here picking them and verifying a
bundle. (test_kernels.py and test_ops_kernels.py run every kernel of every profile, these included,
at their usual shapes.)"""

import json
import shutil
import subprocess

import numpy as np
import pytest

from support import ROOT, run_cli
from ulpq_build.kernels import KernelVariant, WeightStorage, render
from ulpq_build.native_webgpu import COMPILERS, KernelRunner, cached_device, matmul_params, validate, weight_arrays
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error

CPU = [name for name, p in PROFILES.items() if p.cpu_adapter]
GPU = [name for name, p in PROFILES.items() if not p.cpu_adapter]
# float32 sums over K <= 256 products against a float64 reference (test_kernels.py: MATMUL_TOLERANCE)
MATMUL_TOLERANCE = 1e-5
# float32 sums over K = 2304 products (test_kernels.py: LONG_ROW_TOLERANCE)
LONG_ROW_TOLERANCE = 4e-5


def run_matmul(variant, spec, rng, m, n, k, tolerance):
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    expected = ACTIVATIONS["gelu"](x.astype(np.float64) @ dequantize(qt).astype(np.float64).T + bias) + residual
    y = KernelRunner(cached_device("wgpu", 256)).run(variant, {"x": x, **weight_arrays(qt), "bias": bias, "residual": residual},
                                                     matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < tolerance


def test_cpu_profiles_exist_and_gpu_shaders_keep_their_tiles():
    """One CPU row, for any browser; its matrix products use no workgroup memory or barrier, while
    every GPU profile's still stages tiles (their variants are the H200-tuned ones)."""
    assert CPU == ["cpu"] and PROFILES["cpu"].user_agent == "."
    weight = WeightStorage.of(QuantSpec("int4", 32))
    for profile in PROFILES:
        gemm = render(KernelVariant.make("gemm", profile, weight, size="small"))
        gemv = render(KernelVariant.make("gemv", profile, weight, vec4=True))
        cpu = PROFILES[profile].cpu_adapter
        for code in (gemm, gemv):
            assert ("workgroupBarrier" in code) != cpu and ("var<workgroup>" in code) != cpu, profile
    assert KernelVariant.make("gemv", "chrome", weight, deep=True).tiles["threads_per_row"] == 64
    assert KernelVariant.make("gemv", CPU[0], weight, deep=True).tiles["threads_per_row"] == 1


EDGE_SPECS = [QuantSpec("float32"), QuantSpec("int8", 0), QuantSpec("int4", 0, True, "float16"), QuantSpec("int3", 0),
              QuantSpec("int3-dense", 0, True), QuantSpec("int2-optimal", 0, codebook="channel"), QuantSpec("int1", 0)]


@pytest.mark.gpu
@pytest.mark.parametrize("spec", EDGE_SPECS, ids=lambda s: WeightStorage.of(s).key)
def test_direct_gemm_ragged_edges(spec, rng):
    """The direct GEMM on ragged shapes: rows and columns no tile divides, and K = 101, which ends
    inside a word of every word format (the spare codes must meet zeros) and leaves float32 and
    the stream layouts a tail of single inputs; both compilers accept it."""
    variant = KernelVariant.make("gemm", CPU[0], WeightStorage.of(spec), size="small", activation="gelu", bias=True,
                                 residual=True)
    assert variant.tiles["direct"] and variant.workgroup_storage_bytes == 0
    for compiler in COMPILERS:
        validate(render(variant), variant.workgroup_size, compiler)
    run_matmul(variant, spec, rng, 37, 45, 101, MATMUL_TOLERANCE)


# the direct tiles' edges beyond one tile: rows over three tile rows (the last partial), columns over
# two tile columns (the second partial), and K = 384 cut into splits of 160 inputs, which start inside
# scale groups of 64 (the per-group scale loop must begin mid-group) and end with a ragged 64
MULTI_TILE_SPECS = [QuantSpec("float32"), QuantSpec("int4", 64, True, "float16"), QuantSpec("int2-ternary", 32)]


@pytest.mark.gpu
@pytest.mark.parametrize("spec", MULTI_TILE_SPECS, ids=lambda s: WeightStorage.of(s).key)
def test_direct_gemm_over_tiles_and_splits(spec, rng):
    """The direct GEMM where its tiles do not cover the product once: with the epilogue in one pass,
    and split along K (raw partial sums per split, each compared with its slice of the product)."""
    weight = WeightStorage.of(spec)
    tiles = KernelVariant.make("gemm", CPU[0], weight, size="small").tiles
    m, n, k = 2 * tiles["tile_m"] + 22, tiles["tile_n"] + 44, 384
    assert m % tiles["tile_m"] and n % tiles["tile_n"] and n > tiles["tile_n"]
    run_matmul(KernelVariant.make("gemm", CPU[0], weight, size="small", activation="gelu", bias=True, residual=True),
               spec, rng, m, n, k, MATMUL_TOLERANCE)
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    split = KernelVariant.make("gemm", CPU[0], weight, size="small", split=True)
    for compiler in COMPILERS:
        validate(render(split), split.workgroup_size, compiler)
    partial = KernelRunner(cached_device("wgpu", 256)).run(split, {"x": x, **weight_arrays(qt)},
                                                           {**matmul_params(qt, m), "k_split": 160}, {"y": 3 * m * n})["y"]
    assert np.isfinite(partial).all(), "a partial sum was never written (still NaN)"
    wd = dequantize(qt).astype(np.float64)
    for s in range(3):  # splits of 160, 160, 64 inputs
        lo, hi = 160 * s, min(k, 160 * (s + 1))
        want = x[:, lo:hi].astype(np.float64) @ wd[:, lo:hi].T
        assert relative_error(partial[s * m * n:(s + 1) * m * n].reshape(m, n), want) < MATMUL_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("spec, vec4", [(QuantSpec("float32"), True), (QuantSpec("int4", 32), True),
                                        (QuantSpec("int4", 96, True, "float16"), False), (QuantSpec("int3", 32), False),
                                        (QuantSpec("int2-optimal", 32, codebook="channel"), True)], ids=str)
def test_one_thread_gemv_long_rows_and_input_rows(spec, vec4, rng):
    """The CPU GEMV (one thread per 2 rows, no reduction) over rows long enough to cross many scale
    groups (K = 2304: the deep option a bundle sets there is ignored on CPU profiles), and with
    several input rows per workgroup (13 rows: a partial block of x_rows; K = 384)."""
    weight = WeightStorage.of(spec)
    long_rows = KernelVariant.make("gemv", CPU[0], weight, vec4=vec4, deep=True, activation="gelu", bias=True, residual=True)
    assert long_rows.tiles["threads_per_row"] == 1 and long_rows.workgroup_storage_bytes == 0
    run_matmul(long_rows, spec, rng, 1, 9, 2304, LONG_ROW_TOLERANCE)
    rows = KernelVariant.make("gemv", CPU[0], weight, vec4=vec4, activation="gelu", bias=True, residual=True,
                              tiles={"x_rows": 4})
    for compiler in COMPILERS:
        validate(render(rows), rows.workgroup_size, compiler)
    run_matmul(rows, spec, rng, 13, 45, 384, MATMUL_TOLERANCE)


CHOICE_JS = """
import { chooseProfiles, cpuAdapter, detectProfile } from '%s';
const [profiles, cases, adapters] = JSON.parse(process.argv[2]);
const out = { adapters: adapters.map((a) => cpuAdapter(a)), choices: [] };
for (const c of cases) {
  const detected = detectProfile(c.userAgent, profiles, c.cpu);
  const choice = chooseProfiles(profiles, c.profile ?? detected, c.limits, c.cpu);
  out.choices.push({ detected, candidates: choice.candidates.map((p) => p.name) });
}
process.stdout.write(JSON.stringify(out));
"""
UA = {
    "chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0",
    "safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Safari/605.1.15",
}
LIMITS = {"maxComputeInvocationsPerWorkgroup": 1024, "maxComputeWorkgroupSizeX": 1024, "maxComputeWorkgroupStorageSize": 16384,
          "maxStorageBuffersPerShaderStage": 8}


def test_js_picks_cpu_profiles_only_on_cpu_adapters(tmp_path):
    """variants.js: an adapter is a CPU one when it says isFallbackAdapter (Chromium on SwiftShader
    and Firefox on lavapipe both do) or names a software rasteriser; there the cpu rows come first
    (Chrome, Firefox, Safari -> cpu); on a real GPU it is neither detected nor a fallback, unless
    asked for by name."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--out", bundle, check=0)
    profiles = json.loads((bundle / "manifest.json").read_text())["profiles"]
    assert [p["name"] for p in profiles if p["cpu_adapter"]] == CPU
    adapters = [{"info": {"vendor": "google", "architecture": "swiftshader", "isFallbackAdapter": True}},
                {"info": {"vendor": "", "architecture": "", "description": "", "isFallbackAdapter": True}},
                {"info": {"vendor": "mesa", "description": "llvmpipe (LLVM 15.0.6, 256 bits)"}},
                {"isFallbackAdapter": True, "info": {}},
                {"info": {"vendor": "nvidia", "architecture": "hopper", "description": "NVIDIA H200", "isFallbackAdapter": False}},
                {"info": {"vendor": "apple", "architecture": "metal-3"}}]
    cases = [{"userAgent": UA["chrome"], "cpu": True, "limits": LIMITS}, {"userAgent": UA["firefox"], "cpu": True, "limits": LIMITS},
             {"userAgent": UA["safari"], "cpu": True, "limits": LIMITS}, {"userAgent": UA["chrome"], "cpu": False, "limits": LIMITS},
             {"userAgent": UA["firefox"], "cpu": False, "limits": LIMITS}, {"userAgent": UA["chrome"], "cpu": False, "limits": LIMITS,
                                                                            "profile": "cpu"}]
    script = tmp_path / "choice.mjs"
    script.write_text(CHOICE_JS % (ROOT / "web_runtime/variants.js").as_uri())
    proc = subprocess.run([node, script, json.dumps([profiles, cases, adapters])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["adapters"] == [True, True, True, True, False, False]
    detected = [c["detected"] for c in got["choices"]]
    assert detected == ["cpu", "cpu", "cpu", "chrome", "firefox", "chrome"]
    first, *rest = got["choices"][0]["candidates"]
    assert first == "cpu" and set(rest) == set(GPU)  # the cpu row, then the GPU ones as fallbacks
    for gpu_case in got["choices"][3:5]:
        assert not set(gpu_case["candidates"]) & set(CPU)  # never a fallback on a real GPU
    assert got["choices"][5]["candidates"][0] == "cpu"  # asked for by name: honoured


@pytest.mark.browser
@pytest.mark.parametrize("fmt", ["float32", "int4"])
def test_browsers_pick_cpu_variants_and_verify(fmt, tmp_path):
    """In Chromium (SwiftShader) and Firefox (lavapipe) the built-in ViT's bundle (its GEMMs,
    attention, layernorm and the rest of a transformer layer) runs the cpu_adapter variants and
    matches the numpy reference on its sample images (`verify`). A missing browser fails the test."""
    from ulpq_build.verify import verify_bundle

    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:vit", "--format", fmt, "--out", bundle, check=0)
    results = verify_bundle(bundle, ["chromium", "firefox"], log=lambda *_: None)
    by_browser = {r.browser: r for r in results}
    for browser, variant in (("chromium", "cpu-64"), ("firefox", "cpu-64")):
        r = by_browser.get(browser)
        assert r is not None and r.error is None and r.passed, (browser, r)
        assert (r.path, r.variant) == ("webgpu", variant), (browser, r.path, r.variant, r.notes)
