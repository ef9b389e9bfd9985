"""quantize / dequantize / inspect as a user runs them, configs (JSON and TOML, mixed precision,
rules) and the quantized checkpoint read back by the reference safetensors implementation."""

import json

import numpy as np
import pytest
import safetensors.numpy

from support import run_cli
from ulpq_build.checkpoint import Checkpoint
from ulpq_build.config import resolve_options
from ulpq_build.plan import resolve_plan
from ulpq_build.safetensors_io import SafetensorsFile, to_bfloat16_bits, write_safetensors


def bert_like(rng):
    """A tiny BERT-named checkpoint with the dtypes real ones carry."""
    t = {"embeddings.word_embeddings.weight": rng.standard_normal((100, 64)).astype(np.float32),
         "embeddings.position_ids": np.arange(32, dtype=np.int64)[None, :],
         "embeddings.LayerNorm.weight": np.ones(64, np.float32)}
    for i in range(3):
        p = f"encoder.layer.{i}."
        t[p + "attention.self.query.weight"] = rng.standard_normal((64, 64)).astype(np.float32)
        t[p + "attention.self.query.bias"] = rng.standard_normal(64).astype(np.float32)
        t[p + "attention.output.dense.weight"] = rng.standard_normal((64, 64)).astype(np.float32)
        t[p + "intermediate.dense.weight"] = rng.standard_normal((128, 64)).astype(np.float32)
        t[p + "output.dense.weight"] = rng.standard_normal((64, 128)).astype(np.float32)
    t["pooler.dense.weight"] = rng.standard_normal((64, 64)).astype(np.float16)
    return t


@pytest.fixture
def model(tmp_path, rng):
    path = tmp_path / "model.safetensors"
    tensors = bert_like(rng)
    specs = [(n, str(v.dtype), v.shape) for n, v in tensors.items()]
    extra = rng.standard_normal((64, 32)).astype(np.float32)
    specs.append(("classifier.weight", "bfloat16", extra.shape))
    write_safetensors(path, specs, [*tensors.values(), to_bfloat16_bits(extra)])
    return path


def test_quantize_dequantize_round_trip(tmp_path, model):
    q = tmp_path / "q.safetensors"
    out = run_cli("quantize", model, "--out", q, "--format", "int4", "--group-size", "32", check=0).stdout
    assert "encoder.layer.0.intermediate.dense.weight" in out and "total:" in out
    ref = safetensors.numpy.load_file(q)  # the reference implementation reads our checkpoint
    assert ref["encoder.layer.0.intermediate.dense.weight:codes"].dtype == np.uint32
    assert ref["encoder.layer.0.intermediate.dense.weight:scales"].shape == (128, 2)
    assert ref["embeddings.position_ids"].dtype == np.int64  # integers pass through
    meta = json.loads(SafetensorsFile(q).metadata["ulpq"])
    assert meta["plan"]["tensors"][0]["name"] == "embeddings.word_embeddings.weight"

    restored = tmp_path / "r.safetensors"
    run_cli("dequantize", q, "--out", restored, check=0)
    original, back = SafetensorsFile(model), SafetensorsFile(restored)
    assert back.names == original.names
    for name in original.names:
        assert back.shape(name) == original.shape(name) and back.dtype(name) == original.dtype(name), name
        a, b = original.tensor(name).astype(np.float64), back.tensor(name).astype(np.float64)
        if original.dtype(name).startswith("int") or a.ndim == 1:
            np.testing.assert_array_equal(a, b)
        else:
            rel = np.sqrt(((a - b) ** 2).sum() / (a**2).sum())
            assert 0 < rel < 0.2, name


def test_inspect_table_and_json(tmp_path, model):
    q = tmp_path / "q.safetensors"
    run_cli("quantize", model, "--out", q, "--format", "int2-optimal", check=0)
    report = json.loads(run_cli("inspect", q, "--json", "--reference", model, check=0).stdout)
    assert report["kind"] == "quantized checkpoint"
    rows = {r["name"]: r for r in report["tensors"]}
    row = rows["encoder.layer.1.output.dense.weight"]
    assert row["format"] == "int2-optimal" and row["group"] == "channel"
    assert row["bits_per_weight"] == pytest.approx(2 + 32 / 128 + 4 * 32 / (64 * 128), abs=1e-3)
    assert 0.2 < row["rel_rmse"] < 0.5 and row["max_abs_error"] > 0
    assert rows["embeddings.LayerNorm.weight"]["format"] == "float32" and rows["embeddings.LayerNorm.weight"]["rel_rmse"] == 0
    totals = report["totals"]
    assert totals["bytes"] == sum(r["bytes"] for r in report["tensors"])
    assert totals["reduction_vs_float32"] > 5
    table = run_cli("inspect", model, check=0).stdout
    assert "(model)" in table and "total: 20 tensors" in table


CONFIG_TOML = """
bitsPerWeight = 3
distributeOptimalValues = true
groupSize = 32

[mixedPrecision]
embeddingBits = 8
firstLayerBits = 8
lastLayerBits = 4
feedForwardBits = 2

[[rules]]
pattern = "encoder.layer.1.attention.*.weight"
format = "int2-ternary"
"""


def tensors_of(path):
    f = SafetensorsFile(path)
    return [(n, f.shape(n), f.dtype(n)) for n in f.names]


def test_mixed_precision_config(tmp_path, model):
    config = tmp_path / "mixed.toml"
    config.write_text(CONFIG_TOML)
    plan = resolve_plan(tensors_of(model), *resolve_options(config, {}, tensors_of(model)))
    fmt = {e.name: e.spec.format for e in plan.entries}
    assert fmt["embeddings.word_embeddings.weight"] == "int8"  # embeddingBits
    assert fmt["encoder.layer.0.intermediate.dense.weight"] == "int8"  # first layer beats feed-forward
    assert fmt["encoder.layer.2.attention.self.query.weight"] == "int4-optimal"  # last layer, optimal values
    assert fmt["encoder.layer.1.attention.self.query.weight"] == "int2-ternary"  # the explicit rule wins
    assert fmt["encoder.layer.1.intermediate.dense.weight"] == "int2-optimal"  # feed-forward
    assert fmt["pooler.dense.weight"] == "int3-optimal"  # default: 3 bits, optimal values
    assert fmt["embeddings.LayerNorm.weight"] == "float32" and fmt["embeddings.position_ids"] == "float32"
    assert all(e.spec.group_size == 32 for e in plan.entries if e.spec.fmt.quantized)
    # the same config as JSON, through the CLI, with a flag overriding its default
    as_json = tmp_path / "mixed.json"
    as_json.write_text(json.dumps({"bitsPerWeight": 3, "distributeOptimalValues": True, "groupSize": 32,
                                   "mixedPrecision": {"embeddingBits": 8}}))
    q = tmp_path / "q.safetensors"
    run_cli("quantize", model, "--out", q, "--config", as_json, "--scale-dtype", "float16", check=0)
    ck = Checkpoint(q)
    specs = {t.name: t.spec for t in ck.tensors if t.spec}
    assert specs["embeddings.word_embeddings.weight"].format == "int8"
    assert all(s.scale_dtype == "float16" for s in specs.values())


@pytest.mark.parametrize("config, message", [
    ({"rules": [{"pattern": "decoder.*", "format": "int4"}]}, "matches no tensor"),
    ({"mixedPrecision": {"embedingBits": 8}}, "unknown option 'embedingBits'"),
    ({"bitsPerWeight": 5}, "unsupported bit width 5"),
    ({"rules": [{"pattern": "embeddings.position_ids", "format": "int4"}]}, "dtype int64 and cannot be quantized"),
    ({"rules": [{"pattern": "*", "format": "int2-ternary", "asymmetric": True}]}, "zero points"),
    ({"groupSize": 48}, "group size 48 is not supported"),
])
def test_bad_configs(tmp_path, model, config, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "q.safetensors"
    proc = run_cli("quantize", model, "--out", out, "--config", path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".q.safetensors*"))


def test_bad_inputs(tmp_path, model, rng):
    out = tmp_path / "q.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model.read_bytes()[:-100])
    nan = tmp_path / "nan.safetensors"
    safetensors.numpy.save_file({"w": np.array([[1.0, np.nan]], np.float32)}, nan)
    cases = [
        (["quantize", truncated, "--out", out], "truncated"),
        (["quantize", nan, "--out", out], "NaN"),
        (["quantize", model, "--out", out, "--format", "int5"], "unknown format"),
        (["quantize", model, "--out", out, "--group-size", "128"], "does not divide"),
        (["dequantize", model, "--out", out], "not a quantized checkpoint"),
        (["inspect", tmp_path / "nope.safetensors"], "no such file"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and not out.exists()


def test_bundle_takes_a_mixed_config(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bitsPerWeight": 2, "distributeOptimalValues": True,
                                  "mixedPrecision": {"firstLayerBits": 8, "lastLayerBits": 4}}))
    run_cli("bundle", "--model", "builtin:mlp", "--config", config, "--out", tmp_path / "b", check=0)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    formats = {t["name"]: t["format"] for t in manifest["tensors"]}
    assert formats == {"layers.0.weight": "int8", "layers.0.bias": "float32", "layers.1.weight": "int2-optimal",
                       "layers.1.bias": "float32", "layers.2.weight": "int4-optimal", "layers.2.bias": "float32"}
    assert {s["weight"]["format"] for s in manifest["shaders"] if s["weight"]} == {"int8", "int2-optimal", "int4-optimal"}
