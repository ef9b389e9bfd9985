"""The registry's vector-quantized formats (e8p, e8p-rvq3, e8p-rvq4, e81b; levels "codebook"): their
stored parts and bits, packing, dequantize in the original basis (rotation undone), and the WGSL
kernels that run them (hadamard, the codebook GEMV, GEMM tiles and gathers through w_value),
compiled by naga and Tint and executed on lavapipe against numpy, outputs poisoned with NaN."""

import os

import numpy as np
import pytest

from ulpq_build.formats import CODEBOOK_FORMATS, FORMATS
from ulpq_build.gptq import gptq_quantize, hessian
from ulpq_build.kernels import HADAMARD_MAX_N, KernelVariant, WeightStorage, render
from ulpq_build.native_webgpu import (
    COMPILERS,
    KernelRunner,
    cached_device,
    matmul_params,
    validate,
    weight_arrays,
)
from ulpq_build.packing import pack_vq, unpack_vq
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import QuantizedTensor, dequantize, quantize
from ulpq_build.quantspec import QuantSpec, part_layout, stored_bytes
from ulpq_build.reference import ACTIVATIONS, relative_error
from ulpq_build.vq.e8 import e8p_grid, e81b_grid
from ulpq_build.vq.incoherence import RandomHadamard, sign_bits
from ulpq_build.vq.tensor import codebook_tables, decode_rotated, rotation_seed

HADAMARD_TOLERANCE = 1e-5  # float32 butterflies (log2 n rounds) against float64
MATMUL_TOLERANCE = 1e-5  # float32 sums of K <= 384 products against float64
DEQUANTIZE_TOLERANCE = 1e-6  # float64 inverse rotation of float32 values against the float64 reference
# the codebook GEMV decodes nibbles to 1 + u / 16 and adds 8-16 FMAs around an offset of about 1.5
# per weight (templates/gemv_codebook.wgsl.jinja): measured <= 2.5e-6 up to K = 8328
CODEBOOK_GEMV_TOLERANCE = 1e-5
LINEAR = "encoder.layer.0.attention.self.query.weight"  # a name that is rotated (tables are not)
ENGINE_VARIABLE = "ULPQ_CODEBOOK_TEST_ENGINE"  # "dawn" in test_gemv_executes_on_dawn's child run
ENGINE = os.environ.get(ENGINE_VARIABLE, "wgpu")


def device():
    return cached_device(ENGINE, 256)


@pytest.mark.parametrize("name", CODEBOOK_FORMATS)
def test_parts_bits_and_round_trip(name, rng):
    fmt = FORMATS[name]
    w = rng.standard_normal((24, 384)).astype(np.float32)
    qt = quantize(LINEAR, w, QuantSpec(name, 32, False, "float32"))  # group size / scale dtype do not apply
    assert set(qt.parts) == {"codes", "scales", "seeds"} and qt.parts["scales"].dtype == np.float16
    assert int(qt.parts["seeds"][0]) == rotation_seed(384)
    assert qt.nbytes == stored_bytes(qt.spec, w.shape) == 24 * 384 * fmt.bits // 8 + 24 * 2 + 4
    codes = unpack_vq(qt.parts["codes"], fmt, 384)
    assert np.array_equal(pack_vq(codes, fmt), qt.parts["codes"])
    # dequantize = the stored (rotated) matrix with the rotation undone, exactly as numpy computes it
    rotated = decode_rotated(qt.parts, fmt, 24, 384).astype(np.float64)
    restored = RandomHadamard(384, rotation_seed(384)).inverse(rotated)
    assert relative_error(dequantize(qt), restored) < DEQUANTIZE_TOLERANCE
    # and it is close to w: relative squared error of the codebook at its bits (Gaussian weights)
    limit = {1: 0.4, 2: 0.12, 3: 0.04, 4: 0.012}[fmt.bits]
    assert np.mean((dequantize(qt) - w) ** 2) / np.mean(w**2) < limit


def test_tables_are_not_rotated(rng):
    w = rng.standard_normal((50, 64)).astype(np.float32)
    qt = quantize("embeddings.word_embeddings.weight", w, QuantSpec("e8p"))
    assert int(qt.parts["seeds"][0]) == 0
    assert relative_error(dequantize(qt), decode_rotated(qt.parts, FORMATS["e8p"], 50, 64)) == 0


def test_codebook_tables_decode_the_grids():
    tables = codebook_tables()
    e8p = tables[:256]
    codes = np.arange(1 << 16)
    m = (e8p[codes >> 8][:, None] >> (2 * np.arange(8))) & 3
    parity = (e8p[codes >> 8] >> 16) & 1
    signs = (codes[:, None] >> np.arange(1, 8)) & 1
    negative = np.concatenate([signs, ((signs.sum(axis=1) + parity) & 1)[:, None]], axis=1)
    values = (m + 0.5) * (1 - 2 * negative) + np.where(codes & 1, -0.25, 0.25)[:, None]
    assert np.array_equal(values, e8p_grid())
    lut = ((tables[256:][:, None] >> (4 * np.arange(8))) & 15) / 2 - 2
    assert np.array_equal(lut, e81b_grid())


@pytest.mark.parametrize("name", ["e8p", "e8p-rvq3"])
def test_ldlq_lowers_the_output_error(name, rng):
    """GPTQ-style feedback (block LDLQ on the rotated Hessian) beats rounding on correlated inputs."""
    x = rng.standard_normal((600, 128)) @ rng.standard_normal((128, 128)) * 0.3 + rng.standard_normal((600, 128))
    w = rng.standard_normal((32, 128)).astype(np.float32)
    spec = QuantSpec(name)
    out = lambda q: np.mean((x @ (q - w).T) ** 2)
    assert out(dequantize(gptq_quantize(LINEAR, w, spec, hessian(x)))) < 0.9 * out(dequantize(quantize(LINEAR, w, spec)))


def hadamard_variants():
    return [KernelVariant.make("hadamard", p) for p in PROFILES]


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
def test_shaders_compile(compiler):
    for variant in hadamard_variants():
        validate(render(variant), variant.workgroup_size, compiler)
    for name in CODEBOOK_FORMATS:
        weight = WeightStorage.of(QuantSpec(name))
        for profile in ("chrome", "firefox", "cpu"):
            for kernel, options in [("gemv", {"bias": True, "activation": "gelu"}), ("gemm", {"size": "small"}),
                                    ("gemm", {"size": "large", "residual": True}), ("embed", {"accumulate": True})]:
                variant = KernelVariant.make(kernel, profile, weight, **options)
                validate(render(variant), variant.workgroup_size, compiler)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [8, 384, 1536, 96, 4096])
def test_hadamard_kernel_matches_numpy(n, rng):
    variant = KernelVariant.make("hadamard", "chrome")
    seed = rotation_seed(n)
    rotation = RandomHadamard(n, seed)
    x = rng.standard_normal((3, n)).astype(np.float32)
    p = n if n & (n - 1) == 0 else n // 12
    y = KernelRunner(device()).run(variant, {"x": x}, {"rows": 3, "n": n, "p": p, "seed": seed}, {"y": 3 * n})["y"]
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y.reshape(3, n), rotation.forward(x.astype(np.float64))) < HADAMARD_TOLERANCE
    assert n <= HADAMARD_MAX_N


def test_sign_hash_is_the_documented_one():
    """lowbias32 of seed + i * 0x9E3779B9, top bit: the same integer steps as the WGSL and JS."""
    def lowbias32(v):
        v ^= v >> 16
        v = (v * 0x7FEB352D) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 0x846CA68B) & 0xFFFFFFFF
        return v ^ (v >> 16)
    seed = 0xDEADBEEF
    expected = [lowbias32((seed + i * 0x9E3779B9) & 0xFFFFFFFF) >> 31 for i in range(64)]
    assert sign_bits(64, seed).tolist() == expected and 10 < sum(expected) < 54


def run_matmul(variant, name, rng, m, n, k):
    w = (rng.standard_normal((n, k)) * 0.2).astype(np.float32)
    qt = quantize(LINEAR, w, QuantSpec(name))
    x = rng.standard_normal((m, k)).astype(np.float32)  # already rotated: the kernel multiplies as stored
    check_product(variant, qt, x, rng, MATMUL_TOLERANCE)


def check_product(variant, qt, x, rng, tolerance):
    """`variant` over x and the codebook weight qt (the bundle's decode table bound, outputs poisoned),
    its epilogue (bias, activation, residual: random where the variant's options ask) against numpy
    over the matrix as stored (rotated: the kernel multiplies x as given)."""
    (m, k), n = x.shape, qt.shape[0]
    arrays = {"x": x, **weight_arrays(qt)}
    expected = x.astype(np.float64) @ decode_rotated(qt.parts, qt.fmt, n, k).astype(np.float64).T
    if variant.opts.get("bias"):
        arrays["bias"] = rng.standard_normal(n).astype(np.float32)
        expected += arrays["bias"]
    expected = ACTIVATIONS[variant.opts.get("activation", "none")](expected)
    if variant.opts.get("residual"):
        arrays["residual"] = rng.standard_normal((m, n)).astype(np.float32)
        expected += arrays["residual"]
    y = KernelRunner(device()).run(variant, arrays, matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    assert np.isfinite(y).all(), "an output element was never written (still NaN)"
    assert relative_error(y, expected) < tolerance


@pytest.mark.gpu
@pytest.mark.parametrize("name", CODEBOOK_FORMATS)
@pytest.mark.parametrize("profile", ["chrome", "firefox", "cpu"])
def test_matmul_kernels_match_numpy(name, profile, rng):
    weight = WeightStorage.of(QuantSpec(name))
    run_matmul(KernelVariant.make("gemv", profile, weight, bias=True), name, rng, 3, 45, 384)
    run_matmul(KernelVariant.make("gemm", profile, weight, size="small", residual=True), name, rng, 37, 45, 96)


# The codebook GEMV's paths (templates/gemv_codebook.wgsl.jinja): whole steps of `units` units per
# lane, the tail of units, the odd last group (K % 16 == 8), rows past n, input rows past m (x_rows),
# one thread per row (cpu), the pipelined loop and other units per step (bench tiles). Step counts
# below are at 4 units per lane (kernels.CODEBOOK_GEMV_UNITS: one-stage formats take 2 on GPU
# profiles, so twice the steps of half the units; the third case forces 4 for them).
GEMV_CASES = [
    ("chrome", {"deep": True}, None, 1, 37, 4184),  # 1 step of 256 units, 5 in the tail, the odd group
    ("chrome", {"deep": True, "activation": "gelu"}, {"pipeline": 1}, 2, 21, 8328),  # 2 steps, 8 tail units
    ("chrome", {"deep": True}, {"units": 4}, 1, 11, 8328),
    ("chrome", {"deep": True, "residual": True}, {"units": 2, "rows": 2}, 1, 19, 2184),
    ("chrome", {"bias": True}, {"x_rows": 2}, 3, 45, 1032),  # input row 3 of a 2-row workgroup: row 2 reused
    ("firefox", {"bias": True}, None, 2, 19, 136),  # the tail only
    ("cpu", {}, None, 3, 21, 264),
    ("cpu", {}, {"pipeline": 1, "units": 1}, 2, 5, 2056),
]


def random_codebook_weight(name, n, k, rng):
    """Random codes (every code of a stage is a codeword; the padding bits of a row's last word are
    random too and must be ignored) and float16 row scales."""
    spec = QuantSpec(name)
    layout = part_layout(spec, (n, k))
    parts = {"codes": rng.integers(0, 2**32, size=layout["codes"][1], dtype=np.uint32),
             "scales": (rng.standard_normal(layout["scales"][1]) * 0.05).astype(np.float16),
             "seeds": np.zeros(1, np.uint32)}
    return QuantizedTensor(LINEAR, (n, k), "float32", spec, parts)


@pytest.mark.gpu
@pytest.mark.parametrize("name", CODEBOOK_FORMATS)
@pytest.mark.parametrize("case", range(len(GEMV_CASES)))
def test_gemv_paths_match_numpy(name, case, rng):
    profile, options, tiles, m, n, k = GEMV_CASES[case]
    qt = random_codebook_weight(name, n, k, rng)
    variant = KernelVariant.make("gemv", profile, WeightStorage.of(QuantSpec(name)), tiles=tiles, **options)
    x = rng.standard_normal((m, k)).astype(np.float32)
    check_product(variant, qt, x, rng, CODEBOOK_GEMV_TOLERANCE)


@pytest.mark.gpu
def test_gemv_executes_on_dawn(tmp_path):
    """The codebook GEMV's execution tests again on Dawn (Tint's code, as Chrome runs it), in a child
    pytest over .mesa's lavapipe (support.run_again_on_dawn)."""
    from support import run_again_on_dawn

    assert ENGINE == "wgpu", f"{ENGINE_VARIABLE} is for the child run, which deselects this test"
    run_again_on_dawn(__file__, "gemv_paths_match_numpy or matmul_kernels_match_numpy", ENGINE_VARIABLE, tmp_path)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["e8p", "e8p-rvq3"])
def test_embed_gathers_codebook_rows(name, rng):
    table = rng.standard_normal((30, 64)).astype(np.float32)
    qt = quantize("embeddings.word_embeddings.weight", table, QuantSpec(name))
    ids = np.array([3, 29, 0, 31, 7], np.uint32)  # 31 >= n: a zero row
    variant = KernelVariant.make("embed", "chrome", WeightStorage.of(QuantSpec(name)), accumulate=False)
    layout = qt.matrix_layout()
    params = {"tokens": 5, "n": 30, "count": 5 * 64, **{k: layout[k] for k in ("k", "words_per_row", "groups_per_row",
                                                                                 "group_size", "codebook_stride")}}
    y = KernelRunner(device()).run(variant, {"ids": ids, **weight_arrays(qt), "w.codebook": codebook_tables()}, params,
                                   {"y": 5 * 64})["y"].reshape(5, 64)
    expected = np.concatenate([dequantize(qt), np.zeros((2, 64), np.float32)])[np.minimum(ids, 30)]
    assert relative_error(y, expected) < MATMUL_TOLERANCE


CPU_TOLERANCE = 1e-5  # the JS decode and rotation in float64 against numpy's float32 decode and float64 rotation


def test_js_cpu_path_decodes_and_runs(tmp_path, rng):
    """The plain-JS CPU path over an MLP bundle in e8p-rvq3 (its 64-input layer rotated, the 288- and
    160-input ones not: no flat Hadamard there): every tensor decoded back to the original basis, and
    the forward pass, match numpy over the bundle's own weights."""
    from support import ROOT, node_json, run_cli
    from test_js_runtime import CPU_PATH_TOLERANCE, mlp_forward

    from ulpq_build.bundle_reader import load_bundle

    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "e8p-rvq3", "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    assert loaded.manifest["codebooks"]["tables"] == codebook_tables().tolist()
    seeds = {t["name"]: t["parts"].get("seeds") for t in loaded.manifest["tensors"]}
    assert seeds["layers.0.weight"] is not None
    x = rng.standard_normal((3, loaded.model["input_size"])).round(5)
    result = node_json(ROOT / "tests/js/node_runtime.mjs", bundle, request={"inputs": x.tolist()}, tmp_path=tmp_path, timeout=300)
    for name, restored in loaded.weights.items():
        got = np.asarray(result["tensors"][name], np.float32)
        assert relative_error(got, restored.ravel()) < CPU_TOLERANCE, name
    expected = mlp_forward(loaded.model, loaded.weights, x)
    assert relative_error(np.asarray(result["outputs"]).reshape(expected.shape), expected) < CPU_PATH_TOLERANCE


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_bert_bundle_in_browsers(browser, tmp_path_factory):
    """`verify`'s check of a small BERT in e8p (hidden 48 = 12 * 4 and 96 = 12 * 8: the Paley block and
    the butterflies both run) on WebGPU (hadamard + codebook GEMV/GEMM) and on the CPU path (the wasm
    kernels, rotation included). A browser that does not start fails the test."""
    import shutil

    from support import tiny_bert

    from ulpq_build.browser_check import check_in_browser
    from ulpq_build.browsers import launch
    from ulpq_build.bundle_reader import load_bundle
    from ulpq_build.cli import main as cli_main
    from ulpq_build.model_source import resolve_model
    from ulpq_build.serve import BundleServer

    root = tmp_path_factory.mktemp("vq-bert")
    # MiniLM's tokenizer (the check encodes real sentences), a small random BERT behind it
    model = tiny_bert(root / "bert", hidden=48, inter=96, heads=2, layers=2, vocab=30522, positions=128)
    minilm, _ = resolve_model("builtin:minilm", root)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, model / name)
    out = root / "e8p"
    assert cli_main(["bundle", "--model", str(model), "--format", "e8p", "--out", str(out)]) == 0
    bundle = load_bundle(out)
    rotated = [t["name"] for t in bundle.manifest["tensors"] if "seeds" in t["parts"]]
    assert any("query" in n for n in rotated) and any("output.dense" in n for n in rotated)
    server = BundleServer(root, 0).start_in_background()
    session = launch(browser)
    try:
        for query, path in (("", "webgpu"), ("&hardware=cpu", "cpu")):
            result = check_in_browser(session, f"{server.url}{out.name}/index.html", bundle, browser, query=query)
            assert result.passed and result.error is None and result.path == path, result
            if path == "cpu":
                assert any("WebAssembly SIMD kernels" in n for n in result.notes), result.notes
    finally:
        session.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_bert_qkv_fuses_with_one_rotation_in_browsers(browser, tmp_path_factory):
    """Q, K and V in e8p share their input's rotation (one seed per input width) and the bundle's one
    set of codebook tables, so the WebGPU backend fuses them as it fuses scalar formats: one rotation
    and one product per layer for the three (each layer 4 hadamard dispatches, not 6), and the output
    still matches numpy. Hidden 128: every piece of Q, K and V is 256-byte aligned, which an
    encoder's fusion needs (backend_webgpu.js fusedLayout)."""
    import shutil

    from support import tiny_bert

    from ulpq_build.browser_check import check_in_browser
    from ulpq_build.browsers import launch
    from ulpq_build.bundle_reader import load_bundle
    from ulpq_build.cli import main as cli_main
    from ulpq_build.model_source import resolve_model
    from ulpq_build.serve import BundleServer

    root = tmp_path_factory.mktemp("vq-bert-fused")
    layers = 2
    model = tiny_bert(root / "bert", hidden=128, inter=256, heads=2, layers=layers, vocab=30522, positions=128)
    minilm, _ = resolve_model("builtin:minilm", root)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, model / name)
    out = root / "e8p"
    assert cli_main(["bundle", "--model", str(model), "--format", "e8p", "--out", str(out)]) == 0
    server = BundleServer(root, 0).start_in_background()
    session = launch(browser)
    try:
        result = check_in_browser(session, f"{server.url}{out.name}/index.html", load_bundle(out), browser,
                                  query="&hardware=webgpu")
        assert result.passed and result.error is None and result.path == "webgpu", result
        ran = session.evaluate("""() => {
          const m = window.ulpqDemo.model;
          const layouts = [...m.backend.layouts.values()].map((l) => l.steps.map((s) => s.key ?? ''));
          return { fused: m.backend.fused.size,
                   hadamard: layouts.map((keys) => keys.filter((k) => k.startsWith('hadamard')).length) };
        }""")
        # the model's run (the layout with the most rotations; the self-test's one product has its own)
        assert ran["fused"] == layers and max(ran["hadamard"]) == 4 * layers, ran
    finally:
        session.close()
        server.shutdown()
        server.server_close()


def reference_dequantize(parts, fmt, rows, k):
    """Codebook parts to float64 by the slow, independent route: each code's bits read one by one,
    codewords from the full grids (e8.e8p_grid: every code decoded from its bits; e81b_grid), the
    stages summed with their magnification, the row scales, then the dense R^T (RandomHadamard.matrix)."""
    grids = {"e8p": e8p_grid().astype(np.float64), "e81b": e81b_grid().astype(np.float64)}
    words = np.asarray(parts["codes"], np.uint64)
    values = np.zeros((rows, k))
    start, magnify = 0, 1.0
    for stage, count in zip(fmt.stages, fmt.stage_words(k)):
        bits = {"e8p": 16, "e81b": 8}[stage]
        for g in range(k // 8):
            bit = g * bits
            code = (words[:, start + bit // 32] >> np.uint64(bit % 32)) & np.uint64((1 << bits) - 1)
            values[:, 8 * g : 8 * g + 8] += grids[stage][code.astype(np.int64)] / magnify
        start += count
        magnify *= np.float32(fmt.resid_scale)
    values *= parts["scales"].astype(np.float64)
    seed = int(parts["seeds"][0])
    return values @ RandomHadamard(k, seed).matrix() if seed else values  # rows r -> R^T r


@pytest.mark.parametrize("name", ["e8p", "e8p-rvq3"])
def test_dequantize_restores_the_original_basis(name, tmp_path):
    """`quantize --format NAME` then `dequantize`: every matrix in its original basis, equal to the
    slow numpy reference over the checkpoint's own parts, and close to the float32 weights."""
    from support import run_cli

    from ulpq_build.checkpoint import Checkpoint
    from ulpq_build.safetensors_io import SafetensorsFile

    ck, out = tmp_path / "q.safetensors", tmp_path / "f.safetensors"
    run_cli("quantize", "builtin:mlp", "--format", name, "--out", ck, check=0)
    run_cli("dequantize", ck, "--out", out, check=0)
    checkpoint, restored = Checkpoint(ck), SafetensorsFile(out)
    fmt = FORMATS[name]
    checked = 0
    for t in checkpoint.tensors:
        if t.spec is None or t.spec.format != name:
            continue
        qt = checkpoint.quantized_tensor(t)
        rows, k = qt.matrix_layout()["rows"], qt.matrix_layout()["k"]
        expected = reference_dequantize(qt.parts, fmt, rows, k)
        got = np.asarray(restored.tensor(t.name), np.float64).reshape(rows, k)
        assert relative_error(got, expected) < DEQUANTIZE_TOLERANCE, t.name
        checked += 1
    assert checked == 3


def test_planner_offers_codebooks_where_rows_fit():
    """The planner's candidates include every codebook row for rows a multiple of 8 long, none otherwise,
    and order them by the bytes they store (a 2-bit codebook between 1-bit and ternary 2-bit storage)."""
    from ulpq_build.planner import candidates_for

    names = [c.format for c in candidates_for((384, 384))]
    assert set(CODEBOOK_FORMATS) <= set(names)
    assert names.index("e81b") < names.index("e8p") < names.index("int2-ternary") < names.index("e8p-rvq3")
    assert not set(CODEBOOK_FORMATS) & {c.format for c in candidates_for((10, 100))}
