"""The CLI as a user runs it: the default bundle, reproducibility, and bad input (exit 2, one
line, no traceback, no output left behind)."""

import json
import hashlib

import numpy as np
import pytest

from support import run_cli
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.default_model import default_mlp_tensors
from ulpq_build.profiles import PROFILES


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_help_lists_subcommands():
    out = run_cli("--help", check=0).stdout
    for command in ("bundle", "serve"):
        assert command in out


def test_default_bundle_is_complete_and_reproducible(tmp_path):
    run_cli("bundle", cwd=tmp_path, check=0)
    out = tmp_path / "ulpq-bundle"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["model"]["architecture"] == "bert"  # all-MiniLM-L6-v2
    # the default: int4 per output channel by GPTQ, calibrated on the text the package ships (calibration.py)
    quantization = manifest["quantization"]
    assert quantization["method"] == "gptq" and quantization["default"]["format"] == "int4", quantization
    assert quantization["default"]["group_size"] == 0
    wasm = {f["file"] for f in manifest["wasm"]["files"].values()}  # the CPU path's kernels, listed with sha256
    assert {f["file"] for f in manifest["files"]} == {"tokenizer.json", "vocab.txt"} | wasm
    assert (out / "index.html").is_file() and (out / "ulpq.js").is_file()
    assert {s["profile"] for s in manifest["shaders"]} == set(PROFILES)
    shader_sha = {f["file"]: f["sha256"] for f in manifest["shader_files"]}
    for shader in manifest["shaders"]:
        text = (out / shader["file"]).read_text()
        assert text.startswith("// ulpq_build shader") and f"@workgroup_size({shader['workgroup_size']})" in text
        assert hashlib.sha256(text.encode()).hexdigest() == shader_sha[shader["file"]]
    for entry in manifest["tensors"]:
        for part in entry["parts"].values():
            data = (out / part["file"]).read_bytes()[part["offset"] : part["offset"] + part["length"]]
            assert hashlib.sha256(data).hexdigest() == part["sha256"]
    # every path in the manifest is relative
    assert all(not s["file"].startswith(("/", "http")) for s in manifest["shards"] + manifest["shader_files"])
    run_cli("bundle", "--out", tmp_path / "again", cwd=tmp_path, check=0)
    assert tree_digest(out) == tree_digest(tmp_path / "again")


@pytest.mark.parametrize("fmt", ["int8", "int4", "int2"])
def test_bundle_weights_are_the_quantized_model(tmp_path, fmt):
    run_cli("bundle", "--model", "builtin:mlp", "--format", fmt, "--out", tmp_path / "b", check=0)
    loaded = load_bundle(tmp_path / "b")
    original = default_mlp_tensors()
    for name, value in original.items():
        restored = loaded.weights[name]
        assert restored.shape == value.shape
        if value.ndim == 1:
            np.testing.assert_array_equal(restored, value)  # biases stay float32
        else:
            err = np.sqrt(np.mean((restored - value) ** 2) / np.mean(value**2))
            assert 0 < err < {"int8": 0.01, "int4": 0.15, "int2": 0.5}[fmt]


def assert_clean_failure(proc, out_dir, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]


def test_missing_model(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", tmp_path / "nope.safetensors", "--out", out), out, "nope.safetensors")


def test_not_safetensors(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", bad, "--out", out), out, "not a valid safetensors")


def test_unknown_extension(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", bad, "--out", out), out, "unknown model format")


def test_unknown_builtin_model(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", "builtin:gpt", "--out", out), out, "unknown built-in model")


def test_unsupported_architecture(tmp_path):
    import safetensors.numpy

    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "t5"}')
    safetensors.numpy.save_file({"wte.weight": np.ones((4, 4), np.float32)}, folder / "model.safetensors")
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", folder, "--out", out), out, "unsupported architecture 't5'", "bert")


def test_unknown_format(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--format", "int5", "--out", out), out, "unknown format 'int5'")


def test_group_size_that_does_not_divide(tmp_path):
    out = tmp_path / "out"
    # the demo MLP has rows of 288 and 160: 64 divides neither
    assert_clean_failure(run_cli("bundle", "--model", "builtin:mlp", "--group-size", "64", "--out", out), out, "does not divide")


def test_nan_weights(tmp_path):
    import safetensors.numpy

    tensors = default_mlp_tensors()
    tensors["layers.1.weight"][3, 4] = np.nan
    path = tmp_path / "nan.safetensors"
    safetensors.numpy.save_file(tensors, path)
    out = tmp_path / "out"
    assert_clean_failure(run_cli("bundle", "--model", path, "--out", out), out, "layers.1.weight", "NaN")


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    proc = run_cli("bundle", "--model", "builtin:mlp", "--out", out)
    assert proc.returncode == 2 and "not a ulpq bundle" in proc.stderr
    assert (out / "thesis.txt").read_text() == "do not delete"


def test_a_failed_rebuild_keeps_the_previous_bundle(tmp_path):
    out = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--out", out, check=0)
    before = tree_digest(out)
    proc = run_cli("bundle", "--model", "builtin:mlp", "--format", "int5", "--out", out)
    assert proc.returncode == 2 and tree_digest(out) == before
