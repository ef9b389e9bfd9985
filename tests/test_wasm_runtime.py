"""The wasm CPU path end to end under Node: cpu_select.js picks it, the bundle's kernels run every
format on one and on two worker threads (worker_threads over a shared memory), and whole models
match numpy over the bundle's own weights (MiniLM cosine per sentence, ViT logits). Without wasm
SIMD (or without kernels in the bundle) the plain-JS path runs and says why."""

import json

import numpy as np
import pytest
from support import ROOT, node_json, run_cli, run_node
from test_models import sample_pixels

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.reference import (
    bert_forward,
    cosine,
    mlp_forward,
    relative_error,
    vit_forward,
)

# float32 sums in the kernels vs numpy's float64, relative to the output's scale
MLP_TOLERANCE = 1e-5
MINILM_COSINE = 0.9999  # issue 11: per sentence, vs numpy over the same weights
VIT_LOGITS_TOLERANCE = 1e-3
SENTENCES = ["A man is playing a guitar on the stage tonight.", "Someone is playing an instrument.",
             "The new movie is awesome, everyone says so.", "A cheetah is running behind its prey across the plain.",
             "The weather is cold and rainy today.", "She reads a book in the quiet library.",
             "Stock markets fell sharply after the announcement.", "Naïve façades, résumés — and [MASK]!"]


def run(bundle, request, tmp_path, flags=()):
    return node_json(ROOT / "tests/js/run_cpu_backend.mjs", bundle, request=request, tmp_path=tmp_path, flags=flags)


MLP_CASES = [["float32"], ["int8"], ["int4"], ["int3"], ["int2"], ["int2-4values"], ["int2-ternary"], ["int2-optimal"],
             ["int3-optimal"], ["int4-optimal"], ["int1"], ["int3-dense", "--group-size", "32", "--asymmetric"],
             ["int4", "--group-size", "32"], ["int2", "--asymmetric"], ["int8", "--group-size", "-1", "--scale-dtype", "float16"],
             ["int3-optimal", "--codebook", "channel", "--group-size", "32"], ["int2-4values", "--scale-dtype", "float16"],
             ["int1", "--group-size", "32"]]


@pytest.mark.parametrize("options", MLP_CASES, ids=lambda o: " ".join(o))
def test_mlp_every_format_on_wasm(options, tmp_path, rng):
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", *options, "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    x = rng.standard_normal((5, loaded.model["input_size"])).round(5)
    expected = mlp_forward(loaded.model, loaded.weights, x)
    threads = [1, 2] if options[0] in ("int4", "int3-dense") else [1]
    for n in threads:
        out = run(bundle, {"options": {"cpu": "wasm", "threads": n}, "rows": x.tolist()}, tmp_path)
        assert out["kind"] == "wasm-simd" and out["threads"] == n, out["notes"]
        assert relative_error(np.asarray(out["output"]).reshape(expected.shape), expected) < MLP_TOLERANCE, n


def test_profile_times_each_product_by_shape(tmp_path, rng):
    """backend.profile (benchmarks' per-operator times, one thread) names each product by its kernel and
    shape, rows x k x n, so a report can tell MiniLM's three product shapes apart; the output is the
    same as without it."""
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--group-size", "32", "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    x = rng.standard_normal((5, loaded.model["input_size"])).round(5)
    expected = mlp_forward(loaded.model, loaded.weights, x)
    out = run(bundle, {"options": {"cpu": "wasm", "threads": 1}, "rows": x.tolist(), "repeats": 2, "profile": True}, tmp_path)
    assert out["kind"] == "wasm-simd" and out["threads"] == 1, out["notes"]
    assert relative_error(np.asarray(out["output"]).reshape(expected.shape), expected) < MLP_TOLERANCE
    shapes = {f"gemm_int4_f32_s {x.shape[0]}x{layer['in_features']}x{layer['out_features']}" for layer in loaded.model["layers"]}
    assert set(out["profile"]) == shapes, out["profile"]
    assert all(ms >= 0 for ms in out["profile"].values())


@pytest.fixture(scope="module")
def minilm_int4(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("minilm") / "b"
    run_cli("bundle", "--format", "int4", "--group-size", "32", "--out", bundle, check=0)
    return bundle


# Node 20's V8 has relaxed SIMD behind a flag (browsers ship it): both builds of the kernels run
@pytest.mark.parametrize("flags", [(), ("--experimental-wasm-relaxed-simd",)], ids=["simd", "relaxed-simd"])
def test_minilm_on_two_threads_matches_numpy(minilm_int4, tmp_path, flags):
    out = run(minilm_int4, {"options": {"threads": 2}, "sentences": SENTENCES}, tmp_path, flags)
    notes = " ".join(out["notes"])
    assert out["kind"] == "wasm-simd" and out["threads"] == 2 and "2 threads" in notes
    assert ("relaxed-SIMD FMA" in notes) == bool(flags), notes
    bundle = load_bundle(minilm_int4)
    check_minilm_output(out, bundle)
    # the weights stay packed: wasm memory holds the packed parts (plus activations), not float32
    # copies, and the tensor table reads them from there (the downloaded shards are not kept)
    packed = sum(t["bytes"] for t in bundle.manifest["tensors"])
    assert packed <= out["memory"]["weights"] < 1.01 * packed + (1 << 20)
    assert out["parts_in_wasm"] is True
    # op outputs share memory once dead: the run holds about one layer's activations (first fit
    # leaves some holes), not all 6 layers' outputs (about 8x this bound)
    m = bundle.model
    rows = len(SENTENCES) * out["seq"]
    live = rows * 4 * (5 * m["hidden_size"] + m["intermediate_size"]) + rows * 4 * 4 * 4
    assert 0 < out["memory"]["activations"] <= live, (out["memory"], live)


def check_minilm_output(out, bundle):
    """The page's embeddings of SENTENCES against numpy's forward over the bundle's own weights, on the
    token ids and mask the page used: lowest cosine per sentence >= MINILM_COSINE."""
    seq = out["seq"]
    ids, mask = np.array(out["ids"]).reshape(-1, seq), np.array(out["mask"]).reshape(-1, seq)
    expected = bert_forward(bundle.model, bundle.weights, ids, mask)
    got = np.array(out["output"]).reshape(len(SENTENCES), -1)
    assert cosine(got, expected).min() >= MINILM_COSINE


@pytest.mark.parametrize("fmt", ["float32", "int3-dense"])
def test_vit_on_wasm_matches_numpy(fmt, tmp_path):
    run_cli("bundle", "--model", "builtin:vit", "--format", fmt, "--out", tmp_path / "b", check=0)
    bundle = load_bundle(tmp_path / "b")
    pixels, _ = sample_pixels(tmp_path / "b", bundle.model)
    expected = vit_forward(bundle.model, bundle.weights, pixels)
    for threads in (1, 2):
        out = run(tmp_path / "b", {"options": {"cpu": "wasm", "threads": threads}}, tmp_path)
        assert out["kind"] == "wasm-simd" and out["threads"] == threads
        assert relative_error(np.array(out["output"]).reshape(expected.shape), expected) < VIT_LOGITS_TOLERANCE


def test_plain_js_path_when_wasm_cannot_run(tmp_path, rng):
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    x = rng.standard_normal((2, loaded.model["input_size"]))
    expected = mlp_forward(loaded.model, loaded.weights, x)
    out = run(bundle, {"rows": x.tolist(), "hideSimd": True}, tmp_path)
    assert out["kind"] == "js" and out["threads"] == 1 and "no WebAssembly SIMD" in " ".join(out["notes"])
    assert relative_error(np.asarray(out["output"]).reshape(expected.shape), expected) < MLP_TOLERANCE
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["wasm"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = run(bundle, {"rows": x.tolist()}, tmp_path)
    assert out["kind"] == "js" and "has no wasm kernels" in " ".join(out["notes"])


def test_each_bundle_runs_its_own_kernels_through_one_runtime(tmp_path, rng):
    """A runtime that loads a second bundle (a page, a benchmark importing one copy of the runtime)
    must read that bundle's kernel binaries, not those beside the runtime module: a float32
    bundle's kernels have no packed-format exports, and reading them made every packed bundle
    fall back to the plain-JS path (50-130x slower at a few rows), with only a note saying so."""
    bundles = {}
    for fmt in ("float32", "int4", "int2"):
        bundles[fmt] = tmp_path / fmt
        run_cli("bundle", "--model", "builtin:mlp", "--format", fmt, "--out", bundles[fmt], check=0)
    x = rng.standard_normal((3, load_bundle(bundles["int4"]).model["input_size"])).round(5)
    request = {"bundles": [str(b) for b in bundles.values()], "input": x.tolist(), "options": {"threads": 1}}
    results = node_json(ROOT / "tests/js/run_bundles_one_runtime.mjs", bundles["float32"], request=request, tmp_path=tmp_path)
    assert len(results) == len(bundles)
    for (fmt, bundle), out in zip(bundles.items(), results):
        assert out["kind"] == "wasm-simd", (fmt, out["notes"])
        loaded = load_bundle(bundle)
        expected = mlp_forward(loaded.model, loaded.weights, x)
        assert relative_error(np.asarray(out["output"]).reshape(expected.shape), expected) < MLP_TOLERANCE, fmt


def test_a_tampered_kernel_file_stops_the_load(tmp_path):
    """A wasm kernel file that fails its sha256 is a changed bundle: IntegrityError, never a quiet
    fall back to the plain-JS path (as for shards and shaders)."""
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--out", bundle, check=0)
    manifest = json.loads((bundle / "manifest.json").read_text())
    width = load_bundle(bundle).model["input_size"]
    for entry in manifest["wasm"]["files"].values():
        path = bundle / entry["file"]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    req = tmp_path / "request.json"
    req.write_text(json.dumps({"options": {}, "rows": [[0.5] * width]}))
    proc = run_node(ROOT / "tests/js/run_cpu_backend.mjs", bundle, req, timeout=120)
    assert proc.returncode != 0 and "IntegrityError" in proc.stderr and "sha256" in proc.stderr, (proc.stdout, proc.stderr)


# ---- codebook formats (e8p, e8p-rvq3, ...) on the wasm path: inputs rotated by hadamard_rows, products
# decoding the codes in the kernels

@pytest.mark.parametrize("fmt", ["e8p", "e8p-rvq3", "e8p-rvq4", "e81b"])
def test_mlp_codebook_formats_on_wasm(fmt, tmp_path, rng):
    """builtin:mlp (its 64-input layer rotated, the others not: no flat Hadamard for them); 5 rows
    (decode + panel) and 1 row (decoded in registers), one and two threads."""
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", fmt, "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    assert any(t["parts"].get("seeds") for t in loaded.manifest["tensors"])
    for rows in (5, 1):
        x = rng.standard_normal((rows, loaded.model["input_size"])).round(5)
        expected = mlp_forward(loaded.model, loaded.weights, x)
        for n in (1, 2):
            out = run(bundle, {"options": {"cpu": "wasm", "threads": n}, "rows": x.tolist()}, tmp_path)
            assert out["kind"] == "wasm-simd" and out["threads"] == n, out["notes"]
            assert out["parts_in_wasm"] is True
            assert relative_error(np.asarray(out["output"]).reshape(expected.shape), expected) < MLP_TOLERANCE, (rows, n)


def test_minilm_e8p_on_wasm_matches_numpy(tmp_path_factory, tmp_path):
    """all-MiniLM-L6-v2 in e8p (every matrix rotated: 384 = 12 x 32, 1536 = 12 x 128) on the wasm path,
    two threads, against numpy over the bundle's own weights (restored to their original basis)."""
    bundle = tmp_path_factory.mktemp("minilm-e8p") / "b"
    run_cli("bundle", "--format", "e8p", "--out", bundle, check=0)
    out = run(bundle, {"options": {"cpu": "wasm", "threads": 2}, "sentences": SENTENCES}, tmp_path)
    assert out["kind"] == "wasm-simd" and out["threads"] == 2, out["notes"]
    check_minilm_output(out, load_bundle(bundle))


@pytest.mark.parametrize("threads", [1, 2])
def test_decoder_e8p_on_wasm_matches_numpy(tmp_path_factory, tmp_path, threads):
    """A random Llama (GQA, untied head; hidden 64 and 128 inputs: every product rotated) in e8p through
    the wasm decoder session: prefill and six one-row decode steps against numpy's passes."""
    from test_decoder_bundle import _build, _configs
    from test_decoder_cpu_speed import check_wasm_session

    from ulpq_build.cli import main as cli_main

    config, seed = _configs()["llama-gqa-untied"]
    model = _build(tmp_path_factory.mktemp("llama"), config, seed)
    folder = tmp_path_factory.mktemp("bundles") / "llama-e8p"
    assert cli_main(["bundle", "--model", str(model), "--out", str(folder), "--format", "e8p"]) == 0
    assert any(t["parts"].get("seeds") for t in load_bundle(folder).manifest["tensors"])
    check_wasm_session(folder, threads, tmp_path, "llama-e8p")
