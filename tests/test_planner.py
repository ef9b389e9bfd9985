"""Automatic mixed precision on the built-in ViT (calibration: Fashion-MNIST training images): plans
stay within the budget, more budget never costs accuracy on the calibration set, and the commands
refuse conflicting or impossible requests with one line."""

import json

import numpy as np
import pytest

from support import run_cli
from ulpq_build.architectures import describe_model, float_operands, model_tensors
from ulpq_build.calibration import calibration_for, distortion
from ulpq_build.errors import UserError
from ulpq_build.model_source import open_model
from ulpq_build.planner import plan_for_budget
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.resources import models_dir

VIT = models_dir() / "vit-fashion-mnist"


@pytest.fixture(scope="module")
def vit():
    source = open_model(VIT)
    model = describe_model(source)
    names = model_tensors(model)
    tensors = [(n, source.weights.shape(n), source.weights.dtype(n)) for n in names]
    weights = {n: np.asarray(source.weights.tensor(n), np.float32) for n in names}
    return model, tensors, weights, calibration_for(model, VIT)


def planned_distortion(model, weights, calibration, plan):
    trial = dict(weights)
    for e in plan.entries:
        if e.spec.fmt.quantized:
            trial[e.name] = dequantize(quantize(e.name, weights[e.name], e.spec))
    return distortion(model, calibration.run_subset(weights), calibration.run_subset(trial))


def test_budgets_are_kept_and_more_budget_never_hurts(vit):
    model, tensors, weights, calibration = vit
    keep = float_operands(model)
    results, logs = [], []
    for bits in (2.5, 3.5, 5.0):
        lines = []
        plan = plan_for_budget(tensors, weights, calibration, target_bpw=bits, keep_float=keep, cache_key=("vit", "test"),
                               log=lines.append)
        logs.append(lines)
        assert plan.quantized_bits_per_weight <= bits + 1e-9
        assert all(e.spec.format == "float32" for e in plan.entries if e.name in keep)
        results.append(planned_distortion(model, weights, calibration, plan))
    assert results[0] >= results[1] >= results[2]
    # sensitivities do not depend on the budget: measured for the first plan, reused by the others
    assert any(line.startswith("sensitivity 1/") for line in logs[0]) and "measured earlier" not in " ".join(logs[0])
    assert logs[1] == logs[2] == ["sensitivities: measured earlier in this run"]
    size = plan_for_budget(tensors, weights, calibration, target_bytes=80_000, keep_float=keep, log=lambda m: None)
    assert size.bytes <= 80_000


def test_a_budget_below_the_cheapest_plan_is_refused(vit):
    model, tensors, weights, calibration = vit
    with pytest.raises(UserError, match="below the smallest plan"):
        plan_for_budget(tensors, weights, calibration, target_bpw=1.0, keep_float=float_operands(model), log=lambda m: None)


def test_commands(tmp_path):
    run_cli("quantize", VIT, "--out", tmp_path / "q.safetensors", "--target-bpw", "3", "--method", "gptq", check=0)
    meta = json.loads(__import__("ulpq_build.safetensors_io", fromlist=["x"]).SafetensorsFile(tmp_path / "q.safetensors").metadata["ulpq"])
    assert meta["method"] == "gptq" and meta["plan"]["totals"]["quantized_bits_per_weight"] <= 3
    for args, message in [(["--target-bpw", "3", "--format", "int4"], "drop --format"),
                          (["--target-bpw", "0.5"], "below the smallest plan"),
                          (["--target-bpw", "3", "--target-size", "1"], "not both")]:
        proc = run_cli("bundle", "--model", "builtin:vit", *args, "--out", tmp_path / "b")
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not (tmp_path / "b").exists()
    proc = run_cli("bundle", "--model", "builtin:mlp", "--method", "gptq", "--out", tmp_path / "m")
    assert proc.returncode == 2 and "calibration is defined for bert and vit" in proc.stderr
