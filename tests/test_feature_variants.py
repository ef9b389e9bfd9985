"""Kernel variants keyed by optional WebGPU features (profiles.FEATURES: subgroups, shader-f16):
which kernels get them (kernels.feature_applies), their keys and manifest entries, the runtime's
negotiation (variants.js chooseFeatures / profileShaders), the base variants rendered exactly as
before the features existed, and every feature variant compiled by Tint (Dawn's Null backend) and
naga and executed against numpy with the outputs poisoned on lavapipe through both engines browsers
ship: wgpu (naga, Debian's lavapipe, in this process) and Dawn (Tint, the Mesa 25 lavapipe that
scripts/setup.sh unpacks into .mesa/: the execution tests again in a child pytest,
test_executes_on_dawn). lavapipe's subgroups are 8 wide, so the GEMV's two reduction paths are both
reached: row groups wider than a subgroup, and, with threads_per_row overridden to 2, 4 or 8, row
groups inside one. The browsers' turn (Chromium's SwiftShader for subgroups, Firefox's
lavapipe for shader-f16): a Llama-shaped decoder bundle here (rmsnorm, the two-stage argmax, the
GEMVs) and a BERT-shaped one in e2e/test_feature_variants_in_browsers.py.

Regenerate the pinned base shaders only for an intended change of a base program:
`python3 tests/test_feature_variants.py --write-base-shaders` (then say why in the commit)."""

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import ROOT, run_again_on_dawn, run_cli

from ulpq_build.formats import FORMATS
from ulpq_build.kernels import (
    FEATURE_KERNELS,
    KernelVariant,
    WeightStorage,
    argmax_split,
    f16_decodable,
    feature_variants,
    render,
    vec4_capable,
)
from ulpq_build.native_webgpu import (
    COMPILERS,
    KernelRunner,
    cached_device,
    matmul_params,
    validate,
    weight_arrays,
)
from ulpq_build.profiles import FEATURES, PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error
from ulpq_build.shader_store import code_of

# the tolerances of the base variants' tests, which the feature variants must meet too
MATMUL_TOLERANCE = 1e-5  # test_kernels.py: float32 sums over K <= 256 products against float64
LONG_ROW_TOLERANCE = 4e-5  # test_kernels.py: K = 2304
LAYERNORM_TOLERANCE = 1e-5  # test_ops_kernels.py
SOFTMAX_TOLERANCE = 1e-5  # test_ops_kernels.py
RMSNORM_TOLERANCE = 1e-5  # test_decoder_kernels.py

ENGINE_VARIABLE = "ULPQ_FEATURE_TEST_ENGINE"  # "dawn" in test_executes_on_dawn's child run
ENGINE = os.environ.get(ENGINE_VARIABLE, "wgpu")
BASE_SHADERS = Path(__file__).parent / "data" / "base_shaders_sha256.json"
GPU_PROFILES = [name for name, p in PROFILES.items() if p.features]
SUBGROUPS, F16 = ("subgroups",), ("shader-f16",)
BOTH = ("subgroups", "shader-f16")


def base_variants():
    """The base variants of every kernel a feature touches: every registry storage (float32 and the
    scalar formats, each scale dtype, with and without zero points), every profile, the GEMV's vec4
    and deep forms with and without an epilogue, every operator option."""
    for name, fmt in FORMATS.items():
        if fmt.quantized and fmt.levels == "codebook":
            continue  # (their own gemv template)
        specs = [QuantSpec(name)] if not fmt.quantized else [
            QuantSpec(name, 32, asym, sd) for sd, asym in itertools.product(
                ("float32", "float16"), (False, True) if fmt.supports_asymmetric else (False,))]
        for spec, profile in itertools.product(specs, PROFILES):
            weight = WeightStorage.of(spec)
            for vec4, deep, epilogue in itertools.product((False, True), (False, True), (False, True)):
                if vec4 and not vec4_capable(weight):
                    continue
                yield KernelVariant.make("gemv", profile, weight, vec4=vec4, deep=deep, activation="gelu" if epilogue else "none",
                                         bias=epilogue, residual=epilogue)
    for profile in PROFILES:
        yield KernelVariant.make("layernorm", profile)
        yield KernelVariant.make("softmax", profile)
        for residual in (False, True):
            yield KernelVariant.make("rmsnorm", profile, residual=residual)
        for indices in (False, True):
            yield KernelVariant.make("argmax", profile, indices=indices)
        yield KernelVariant.make("argmax_parts", profile)


def base_hashes() -> dict[str, str]:
    return {v.key: hashlib.sha256(code_of(render(v)).encode()).hexdigest()[:16] for v in base_variants()}


def test_base_variants_render_as_before_the_features():
    """Where the device lacks a feature the base variants run: byte for byte the programs the
    templates rendered before any feature variant existed (sha256 of the stored code, pinned from
    the commit before them). A storage added since is not pinned; a pinned one may not vanish."""
    pinned = json.loads(BASE_SHADERS.read_text())
    now = base_hashes()
    gone = sorted(set(pinned) - set(now))
    assert not gone, f"pinned base variants no longer rendered: {gone[:3]}"
    changed = sorted(k for k in pinned if now[k] != pinned[k])
    assert not changed, f"{len(changed)} base programs changed, e.g. {changed[:3]}"
    assert len(pinned) > 1000


def test_feature_variants_are_rows_not_edits():
    """Which kernel gets which feature is FEATURE_KERNELS plus feature_applies; keys name the
    features, the manifest entry names its base key; kernels no feature touches, CPU profiles (no
    features) and storages a feature cannot serve give the base variant back."""
    int4 = WeightStorage.of(QuantSpec("int4", 32))
    gemv = KernelVariant.make("gemv", "chrome", int4, vec4=True)
    keys = sorted(v.key for v in feature_variants(gemv))
    assert keys == sorted(gemv.key.replace(".chrome-256", f".{tags}.chrome-256") for tags in ("sg", "f16", "sg.f16"))
    for other in feature_variants(gemv):
        entry = other.to_manifest()
        assert entry["base_key"] == gemv.key and entry["features"] == list(other.features) and other.base == gemv
        assert "enable " + FEATURES[other.features[0]].enable + ";" in render(other)
    assert "enable" not in code_of(render(gemv)) and "subgroup" not in code_of(render(gemv))
    sg = KernelVariant.make("gemv", "chrome", int4, vec4=True, features=SUBGROUPS)
    assert sg.workgroup_storage_bytes < gemv.workgroup_storage_bytes  # subgroup partials, not one per thread
    assert feature_variants(KernelVariant.make("gemm", "chrome", int4, size="small")) == []
    assert feature_variants(KernelVariant.make("gemv", "cpu", int4, vec4=True)) == []
    assert [v.features for v in feature_variants(KernelVariant.make("gemv", "firefox", WeightStorage.of(QuantSpec("float32"))))] \
        == [SUBGROUPS]  # nothing to decode
    assert not f16_decodable(WeightStorage.of(QuantSpec("int3", 32)))  # 10 per word: blocks straddle scale groups
    assert not f16_decodable(WeightStorage.of(QuantSpec("int2-ternary", 32)))  # table levels
    for kernel in ("layernorm", "softmax"):
        assert [v.features for v in feature_variants(KernelVariant.make(kernel, "safari"))] == [SUBGROUPS]
    assert set(FEATURE_KERNELS) == set(FEATURES)
    with pytest.raises(ValueError, match="unknown features"):
        KernelVariant.make("gemv", "chrome", int4, features=("subgroup",))


CHOICE_JS = """
import { chooseFeatures, profileShaders } from '%s';
const [manifest, cases] = JSON.parse(process.argv[2]);
const out = cases.map((c) => {
  const features = chooseFeatures(manifest, c.profile, new Set(c.adapter), c.allowed ?? null);
  const { shaders, files } = profileShaders(manifest, c.profile, features);
  return { features, shaders: shaders.map((s) => [s.key, s.variant_key ?? null, s.features ?? []]), files: files.map((f) => f.file) };
});
process.stdout.write(JSON.stringify(out));
"""


def test_bundle_ships_feature_variants_and_js_negotiates_them(tmp_path):
    """The manifest lists every feature variant beside its base (which the model graph names) and
    `bundle` validates it on reading; variants.js requests only the features this profile ships and
    the adapter offers (an allowed list narrows them) and serves each graph key with its variant
    using the most of the features the device has, under the graph's key."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--out", bundle, check=0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    run_cli("inspect", bundle, check=0)  # the reader accepts the feature variants (bundle_reader.check_shader_map)
    by_key = {s["key"]: s for s in manifest["shaders"]}
    featured = [s for s in manifest["shaders"] if s["features"]]
    assert featured and all(by_key[s["base_key"]]["features"] == [] for s in featured)
    assert {p["name"]: p["features"] for p in manifest["profiles"]}["cpu"] == []
    cases = [{"profile": "chrome", "adapter": []}, {"profile": "chrome", "adapter": ["subgroups", "timestamp-query"]},
             {"profile": "firefox", "adapter": ["shader-f16"]}, {"profile": "safari", "adapter": ["shader-f16", "subgroups"]},
             {"profile": "safari", "adapter": ["shader-f16", "subgroups"], "allowed": []},
             {"profile": "cpu", "adapter": ["shader-f16", "subgroups"]}]
    script = tmp_path / "choice.mjs"
    script.write_text(CHOICE_JS % (ROOT / "web_runtime/variants.js").as_uri())
    proc = subprocess.run([node, script, json.dumps([manifest, cases])], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [g["features"] for g in got] == [[], ["subgroups"], ["shader-f16"], list(BOTH), [], []]
    base_chrome = got[0]
    assert all(variant is None and features == [] for _, variant, features in base_chrome["shaders"])
    for g in got:
        for key, variant, features in g["shaders"]:
            assert key in by_key and not by_key[key]["features"]  # served under the graph's (base) key
            if variant is not None:
                assert by_key[variant]["base_key"] == key and by_key[variant]["features"] == features
                assert set(features) <= set(g["features"])
        gemvs = [(k, v) for k, v, _ in g["shaders"] if k.startswith("gemv")]
        assert gemvs and all((v is None) == (not g["features"]) for _, v in gemvs), g  # every GEMV takes its variant
        assert set(g["files"]) == {by_key[v or k]["file"] for k, v, _ in g["shaders"]}
    assert all(v.endswith(".sg.f16.safari-512") for k, v, _ in got[3]["shaders"] if k.startswith("gemv"))


POLICY_JS = """
import { chooseFeatures, profileShaders } from '%s';
const [manifest, cases] = JSON.parse(process.argv[2]);
const out = cases.map((c) => {
  const features = chooseFeatures(manifest, 'chrome', new Set(['subgroups']), null, c.info);
  const { shaders } = profileShaders(manifest, 'chrome', features, c.info);
  return { features, variants: shaders.filter((s) => s.variant_key).map((s) => s.variant_key) };
});
process.stdout.write(JSON.stringify(out));
"""


def test_feature_policy_runs_variants_only_where_they_measured_faster(tmp_path):
    """profiles.FEATURE_POLICY travels in the manifest; on an adapter whose info names a row's vendor
    (NVIDIA: subgroups only for the float32 GEMV), variants.js requests the feature only if a shader
    it allows uses it and runs the feature variant only for those kernels and formats; an adapter no
    row names (SwiftShader here) runs every subgroup variant shipped."""
    from ulpq_build.profiles import FEATURE_POLICY

    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    nvidia = {"vendor": "nvidia", "architecture": "hopper", "device": "", "description": "NVIDIA H200"}
    swiftshader = {"vendor": "google", "architecture": "swiftshader", "device": "", "description": "SwiftShader"}
    script = tmp_path / "policy.mjs"
    script.write_text(POLICY_JS % (ROOT / "web_runtime/variants.js").as_uri())
    got = {}
    for fmt in ("float32", "int4"):
        bundle = tmp_path / fmt
        run_cli("bundle", "--model", "builtin:mlp", "--format", fmt, "--out", bundle, check=0)
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["feature_policy"] == [dict(r) for r in FEATURE_POLICY]
        cases = [{"info": nvidia}, {"info": swiftshader}, {"info": None}]
        proc = subprocess.run([node, script, json.dumps([manifest, cases])], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        got[fmt] = json.loads(proc.stdout)
    by_format = {fmt: [(g["features"], sorted({v.split(".")[0] for v in g["variants"]})) for g in cases]
                 for fmt, cases in got.items()}  # (features requested, kernels running a feature variant)
    # float32 on NVIDIA: the GEMV's subgroup variant only; elsewhere every kernel that has one
    assert by_format["float32"][0] == (["subgroups"], ["gemv"])
    assert by_format["float32"][1][0] == ["subgroups"] and "gemv" in by_format["float32"][1][1]
    # int4 on NVIDIA: no subgroup variant measured faster, so the feature is not even requested
    assert by_format["int4"][0] == ([], [])
    assert by_format["int4"][1][0] == ["subgroups"] and "gemv" in by_format["int4"][1][1]
    assert by_format["int4"][2] == by_format["int4"][1]  # no adapter info: as an adapter no row names


def compile_cases():
    int4, int8a = WeightStorage.of(QuantSpec("int4", 32)), WeightStorage.of(QuantSpec("int8", 32, True, "float16"))
    for profile in ("chrome", "firefox", "safari"):  # (edge renders chrome's programs)
        for weight, vec4, deep in ((int4, True, False), (int8a, False, True)):
            base = KernelVariant.make("gemv", profile, weight, vec4=vec4, deep=deep, activation="gelu", bias=True, residual=True)
            yield from feature_variants(base)
        for kernel, options in (("layernorm", {}), ("softmax", {}), ("rmsnorm", {"residual": True}), ("rmsnorm", {}),
                                ("argmax", {"indices": False}), ("argmax", {"indices": True}), ("argmax_parts", {})):
            yield from feature_variants(KernelVariant.make(kernel, profile, **options))


COMPILE = list(compile_cases())


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("variant", COMPILE, ids=[v.key for v in COMPILE])
def test_feature_variants_compile(variant, compiler):
    """Tint (as Chrome) and naga (as Firefox, on a device with the features; naga takes subgroup
    builtins without the `enable subgroups;` directive, native_webgpu.for_naga) accept every one."""
    validate(render(variant), variant.workgroup_size, compiler, variant.features)


@pytest.mark.gpu
def test_executes_on_dawn(tmp_path):
    """Every execution test below again on Dawn (Tint's code, as Chrome runs it; not the 512-thread
    safari variants, which Chrome's 256-thread limit never runs), in a child pytest:
    Dawn refuses Debian 12's Mesa 22 lavapipe, so the child gets the Mesa 25 one in .mesa/ through
    VK_ICD_FILENAMES and LD_LIBRARY_PATH, which must be set before the process starts."""
    assert ENGINE == "wgpu", f"{ENGINE_VARIABLE} is for the child run, which deselects this test"
    run_again_on_dawn(__file__, "matches_numpy and not safari", ENGINE_VARIABLE, tmp_path)


def run_gemv(variant, spec, rng, m, n, k, tolerance):
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize("w", w, spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    expected = ACTIVATIONS["gelu"](x.astype(np.float64) @ dequantize(qt).astype(np.float64).T + bias) + residual
    device = cached_device(ENGINE, max(256, variant.workgroup_size), features=variant.features)
    y = KernelRunner(device).run(variant, {"x": x, **weight_arrays(qt), "bias": bias, "residual": residual},
                                 matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < tolerance


INT4, INT8A, INT2 = QuantSpec("int4", 32), QuantSpec("int8", 32, True, "float16"), QuantSpec("int2", 64)
DENSE3, INT3, F32 = QuantSpec("int3-dense", 32, True), QuantSpec("int3", 32), QuantSpec("float32")
OPT2 = QuantSpec("int2-optimal", 32, codebook="channel")
# (features, storage, profile, tile overrides, vec4, deep). Tiles None keep the table's (16..64
# threads per row: wider than lavapipe's 8-wide subgroups, so a row group spans subgroups); 2, 4
# and 8 threads per row sit inside one subgroup; x_rows > 1: input rows sharing each decoded weight.
GEMV_CASES = [
    (SUBGROUPS, INT4, "chrome", None, True, False), (SUBGROUPS, INT4, "chrome", None, True, True),
    (SUBGROUPS, INT4, "firefox", {"threads_per_row": 8}, False, False),
    (SUBGROUPS, INT8A, "chrome", {"threads_per_row": 4, "x_rows": 3}, True, False),
    (SUBGROUPS, F32, "safari", None, True, False), (SUBGROUPS, INT3, "firefox", None, False, False),
    (SUBGROUPS, OPT2, "chrome", {"threads_per_row": 2, "rows": 3}, True, False), (SUBGROUPS, DENSE3, "chrome", None, False, True),
    (F16, INT4, "chrome", None, True, False), (F16, INT4, "firefox", None, False, True), (F16, INT8A, "firefox", None, True, False),
    (F16, INT2, "safari", None, True, False), (F16, DENSE3, "chrome", None, False, False),
    (F16, INT4, "chrome", {"x_rows": 3}, False, False),
    (BOTH, INT4, "firefox", {"threads_per_row": 8}, True, False), (BOTH, INT8A, "chrome", None, True, True),
    (BOTH, INT2, "chrome", {"threads_per_row": 4, "x_rows": 2}, False, False), (BOTH, INT4, "safari", None, True, False),
    # bench_kernels' experiment (places by local_invocation_index: lavapipe's subgroups are consecutive)
    (SUBGROUPS, INT4, "chrome", {"sg_lid": 1}, True, True),
]


@pytest.mark.gpu
@pytest.mark.parametrize("features, spec, profile, tiles, vec4, deep", GEMV_CASES,
                         ids=[f"{'+'.join(c[0])}-{WeightStorage.of(c[1]).key}-{c[2]}-{c[3]}-{'vec4' if c[4] else 'scalar'}"
                              f"{'-deep' if c[5] else ''}" for c in GEMV_CASES])
def test_feature_gemv_matches_numpy(features, spec, profile, tiles, vec4, deep, rng):
    """Feature GEMVs (vec4 and per-block forms, the deep tiles over K = 2304, several input rows per
    workgroup, row groups narrower and wider than a subgroup, every f16-decodable kind of storage)
    against numpy, within the base GEMV's tolerances."""
    weight = WeightStorage.of(spec)
    variant = KernelVariant.make("gemv", profile, weight, tiles=tiles, vec4=vec4, deep=deep, activation="gelu", bias=True,
                                 residual=True, features=features)
    assert variant.features == features
    if deep:
        run_gemv(variant, spec, rng, 1, 9, 2304, LONG_ROW_TOLERANCE)
    else:
        k = 256 if vec4 or spec.group_size > 0 or spec.format == "float32" else 250
        run_gemv(variant, spec, rng, variant.tiles["x_rows"] + 2, 45, k, MATMUL_TOLERANCE)  # a partial block of rows


def poisoned_rows(rng, rows, cols):
    return (rng.standard_normal((rows, cols)) * 3 + 0.7).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox", "safari"])
def test_subgroup_row_reductions_match_numpy(profile, rng):
    """layernorm, softmax and rmsnorm (plain and with the residual stream updated in place) with
    subgroup reductions, over rows shorter than a subgroup, ragged and several strides long."""
    device = cached_device(ENGINE, max(256, PROFILES[profile].workgroup_size), features=SUBGROUPS)
    run = KernelRunner(device).run
    for rows, cols in ((3, 1), (5, 7), (4, 300), (2, 1500)):
        x = poisoned_rows(rng, rows, cols)
        xd = x.astype(np.float64)
        gamma, beta = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
        ln = KernelVariant.make("layernorm", profile, features=SUBGROUPS)
        y = run(ln, {"x": x, "gamma": gamma, "beta": beta}, {"rows": rows, "cols": cols, "eps": 1e-5}, {"y": rows * cols})["y"]
        mean = xd.mean(1, keepdims=True)
        want = (xd - mean) / np.sqrt(((xd - mean) ** 2).mean(1, keepdims=True) + 1e-5) * gamma + beta
        assert relative_error(y.reshape(rows, cols), want) < LAYERNORM_TOLERANCE
        sm = KernelVariant.make("softmax", profile, features=SUBGROUPS)
        y = run(sm, {"x": x}, {"rows": rows, "cols": cols}, {"y": rows * cols})["y"]
        e = np.exp(xd - xd.max(1, keepdims=True))
        assert relative_error(y.reshape(rows, cols), e / e.sum(1, keepdims=True)) < SOFTMAX_TOLERANCE
        for residual in (False, True):
            rms = KernelVariant.make("rmsnorm", profile, residual=residual, features=SUBGROUPS)
            stream = poisoned_rows(rng, rows, cols)
            arrays = {"x": x, "gamma": gamma, **({"residual": stream} if residual else {})}
            out = run(rms, arrays, {"rows": rows, "cols": cols, "eps": 1e-6}, {"y": rows * cols})
            h = xd + stream if residual else xd
            want = h / np.sqrt((h * h).mean(1, keepdims=True) + 1e-6) * gamma
            assert np.isfinite(out["y"]).all() and relative_error(out["y"].reshape(rows, cols), want) < RMSNORM_TOLERANCE


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["chrome", "firefox", "safari"])
def test_subgroup_argmax_matches_numpy(profile, rng):
    """argmax in one stage and in two (argmax_parts, then argmax with indices) with subgroup
    reductions: ties to the lowest column, NaN never wins, -inf and the most negative float still
    beat no column, -0 ties +0; exact equality with numpy."""
    rows, cols = 8, 9001  # several parts of argmax_split for every workgroup size
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[1, [5, 2000, 8999]] = 50.0  # a three-way tie
    x[2] = -np.inf
    x[3] = np.nan
    x[3, 1234] = -7.0
    x[4] = -1.0
    x[4, [40, 9000]] = -0.0
    x[4, [20, 6500]] = 0.0  # -0 (column 40) ties +0 (20): the lower column wins
    x[5] = np.finfo(np.float32).min
    x[6, :17] = np.nan
    want = np.array([int(np.nanargmax(np.where(np.isnan(r), -np.inf, r))) for r in x])
    want[4] = 20
    device = cached_device(ENGINE, max(256, PROFILES[profile].workgroup_size), features=SUBGROUPS)
    run = KernelRunner(device).run
    dims = {"rows": rows, "cols": cols, "row_stride": cols, "row_off": 0}
    one = KernelVariant.make("argmax", profile, indices=False, features=SUBGROUPS)
    got = run(one, {"x": x}, dims, {"y": rows})["y"].view(np.uint32)
    assert got.tolist() == want.tolist()
    parts = KernelVariant.make("argmax_parts", profile, features=SUBGROUPS)
    n_parts, span = argmax_split(parts, cols)
    assert n_parts > 1
    out = run(parts, {"x": x}, {**dims, "parts": n_parts, "span": span}, {"part_value": rows * n_parts, "part_index": rows * n_parts})
    finish = KernelVariant.make("argmax", profile, indices=True, features=SUBGROUPS)
    got = run(finish, {"x": out["part_value"], "indices": out["part_index"]},
              {"rows": rows, "cols": n_parts, "row_stride": n_parts, "row_off": 0}, {"y": rows})["y"].view(np.uint32)
    assert got.tolist() == want.tolist()
    last = {"rows": 2, "cols": 7, "row_stride": 3 * 7, "row_off": 2 * 7}  # each sequence's last token
    xs = rng.standard_normal((2, 3, 7)).astype(np.float32)
    got = run(one, {"x": xs}, last, {"y": 2})["y"].view(np.uint32)
    assert got.tolist() == xs[:, -1].argmax(1).tolist()


DECODE = """async (ids) => {
  const model = window.ulpqDemo.model;
  const r = await model.generate(ids, { maxNewTokens: 32 });
  return { tokenIds: r.tokenIds, path: r.path, variant: r.variant, notes: r.notes,
           argmaxParts: model.decoder && model.decoder.argmaxParts };
}"""


@pytest.mark.browser
@pytest.mark.parametrize("browser, profile, features", [("chromium", "chrome", ["subgroups"]),
                                                         ("firefox", "firefox", ["shader-f16"])], ids=["chromium", "firefox"])
def test_decoder_bundle_generates_numpy_tokens_with_feature_variants(tmp_path, browser, profile, features):
    """A Llama-shaped decoder bundle (int4, a vocabulary past one argmax part: the two-stage argmax)
    with the GPU profile asked for: Chromium runs its subgroups variants (rmsnorm, argmax, argmax_parts,
    the GEMVs), Firefox its shader-f16 GEMVs, and both generate numpy's 32 greedy tokens, outputs
    poisoned. A browser that does not start fails the test."""
    from test_decoder_bundle import SMALL, _build
    from transformers import LlamaConfig

    from ulpq_build.browser_check import WAIT_READY
    from ulpq_build.browsers import launch
    from ulpq_build.bundle_reader import load_bundle
    from ulpq_build.serve import BundleServer

    model = tmp_path / "llama"
    _build(model, LlamaConfig(**{**SMALL, "vocab_size": 4500}, tie_word_embeddings=False), 1)
    site = tmp_path / "site"
    run_cli("bundle", "--model", model, "--format", "int4", "--group-size", "32", "--out", site / "llama", check=0)
    case = load_bundle(site / "llama").manifest["verification"]
    server = BundleServer(site, 0).start_in_background()
    session = launch(browser)
    try:
        session.goto(f"{server.url}llama/index.html?run=0&poison=1&hardware=webgpu&profile={profile}")
        assert session.evaluate(WAIT_READY)["status"] == "ready"
        out = session.evaluate(DECODE, case["prompt_ids"])
    finally:
        session.close()
        server.shutdown()
        server.server_close()
    assert out["path"] == "webgpu" and out["variant"]["profile"] == profile, out["notes"]
    assert out["variant"]["features"] == features and out["argmaxParts"] > 1, (out["variant"], out["argmaxParts"])
    assert out["tokenIds"] == case["greedy_tokens"]


if __name__ == "__main__" and "--write-base-shaders" in sys.argv:
    BASE_SHADERS.write_text(json.dumps(base_hashes(), indent=0, sort_keys=True) + "\n")
    print(f"wrote {BASE_SHADERS}")
