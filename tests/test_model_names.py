"""Every command that takes a model takes the same names (model_source.resolve_model): a file, a
folder or a built-in. Each runs here with a built-in, and each answers a name that is neither with
the same one line listing the built-ins (exit status 2, nothing written)."""

import json

import pytest

from ulpq_build.checkpoint import Checkpoint
from ulpq_build.model_source import BUILTIN_MODELS


def test_every_model_command_takes_a_builtin(main, tmp_path):
    status, _, err = main("bundle", "--model", "builtin:mlp", "--format", "int8", "--out", "b")
    assert status == 0, err
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["model"]["name"] == "default-mlp"

    status, _, err = main("quantize", "builtin:mlp", "--format", "int4", "--out", "q.safetensors")  # was "no such file"
    assert status == 0, err
    assert {t.spec.format for t in Checkpoint(tmp_path / "q.safetensors").tensors if t.spec} == {"int4"}

    status, out, err = main("inspect", "builtin:vit")
    assert status == 0 and "vit.encoder.layer.0.attention.attention.query.weight" in out, err
    status, out, err = main("inspect", "q.safetensors", "--reference", "builtin:mlp", "--json")
    assert status == 0, err
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    assert 0 < rows["layers.0.weight"]["rel_rmse"] < 0.2  # measured against the generated reference

    status, _, err = main("dequantize", "builtin:mlp", "--out", "f.safetensors")  # a float model: said so, by name
    assert status == 2 and "builtin:mlp: is a float model, not a quantized checkpoint" in err, err
    assert not (tmp_path / "f.safetensors").exists()


def test_bench_takes_a_builtin(main, tmp_path):
    status, out, err = main("bench", "--model", "builtin:vit", "--formats", "float32", "--browsers", "", "--out", "bench")
    assert status == 0, err
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert result["model"] == "vit-fashion-mnist" and result["rows"][0]["accuracy"]["ratio"] == 100.0


BAD = [("bundle", "--model", "{}", "--out", "b"), ("quantize", "{}", "--out", "q.safetensors"), ("inspect", "{}"),
       ("inspect", "model.safetensors", "--reference", "{}"), ("bench", "--model", "{}", "--browsers", "", "--out", "b")]


@pytest.mark.parametrize("name", ["builtin:resnet", "no-such-model"])
@pytest.mark.parametrize("command", BAD, ids=lambda c: "-".join(a for a in c if not a.startswith(("{", "-")))[:40])
def test_a_bad_model_name_is_one_line_listing_the_builtins(main, tmp_path, command, name):
    from ulpq_build.default_model import write_default_model

    write_default_model(tmp_path)  # a real model.safetensors, for inspect's FILE when the bad name is the reference
    before = sorted(p.name for p in tmp_path.iterdir())
    status, _, err = main(*[a.replace("{}", name) for a in command])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {name}: ") and all(b in lines[0] for b in BUILTIN_MODELS), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_dequantize_names_a_bad_builtin_the_same_way(main):
    status, _, err = main("dequantize", "builtin:resnet", "--out", "f.safetensors")
    assert status == 2 and err.strip() == "error: builtin:resnet: unknown built-in model; choose one of " + \
        ", ".join(BUILTIN_MODELS)
