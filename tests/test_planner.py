"""Automatic mixed precision on the built-in ViT (calibration: Fashion-MNIST training images): plans
stay within the budget (the codebook tables counted), more budget never costs accuracy on the
calibration set, sensitivities for a GPTQ plan measure what GPTQ writes, and the commands refuse
conflicting or impossible requests with one line."""

import json

import numpy as np
import pytest
from support import run_cli

from ulpq_build.architectures import describe_model, float_operands, model_tensors
from ulpq_build.calibration import calibration_for, distortion
from ulpq_build.errors import UserError
from ulpq_build.gptq import quantize_model
from ulpq_build.model_source import open_model
from ulpq_build.planner import (
    CODEBOOK_TABLE_BYTES,
    candidates_for,
    float_inputs,
    is_codebook,
    plan_for_budget,
    sensitivities,
)
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import matrix_shape
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


def test_gptq_sensitivities_are_what_gptq_writes_and_less_than_rounding(vit):
    model, tensors, weights, calibration = vit
    shapes = {n: s for n, s, _ in tensors}
    # a linear layer whose rows take the codebooks, a wider one, and the patch convolution (rows of 49)
    names = ["vit.encoder.layer.0.attention.attention.query.weight", "vit.encoder.layer.2.output.dense.weight",
             "vit.embeddings.patch_embeddings.projection.weight"]
    matrices = [(n, shapes[n]) for n in names]
    two_bit = {n: [c for c in candidates_for(shapes[n]) if c.format in ("int2-ternary", "e8p") and c.group_size == 0]
               for n in names}
    assert [len(two_bit[n]) for n in names] == [2, 2, 1]  # no codebook for rows of 49
    hessians, means = float_inputs(calibration, weights, set(names))
    assert sorted(hessians) == sorted(means) == sorted(names)
    assert all(h.shape == (matrix_shape(shapes[n])[1],) * 2 == means[n].shape * 2 for n, h in hessians.items())
    rounded = sensitivities(matrices, two_bit, weights, calibration, lambda m: None)
    uncorrected = sensitivities(matrices, two_bit, weights, calibration, lambda m: None, hessians)
    after = sensitivities(matrices, two_bit, weights, calibration, lambda m: None, hessians, means)
    reference = calibration.run_subset(weights)
    for name in names:
        for j, spec in enumerate(two_bit[name]):
            # the sensitivity is exactly the distortion of what gptq.quantize_model writes for that matrix
            # alone: its codes, and with bias_correction its corrected bias (the only other tensor it returns)
            for corrected, cost in ((False, uncorrected), (True, after)):
                written = quantize_model(model, weights, {name: spec}, calibration.run, bias_correction=corrected)
                assert sorted(written) == sorted([name] + [name.removesuffix("weight") + "bias"] * corrected)
                trial = {**weights, **{n: dequantize(qt) for n, qt in written.items()}}
                measured = distortion(model, reference, calibration.run_subset(trial))
                assert cost[name][j] == pytest.approx(measured, rel=1e-9, abs=1e-12), (name, spec.format, corrected)
            assert after[name][j] != uncorrected[name][j]  # the planner applies the correction
            # and GPTQ leaves less than rounding did: what the rounding-based planner over-charged these layers
            assert 0 < uncorrected[name][j] < rounded[name][j], (name, spec.format, uncorrected[name][j], rounded[name][j])


def test_codebook_tables_are_counted_in_the_budget(vit):
    model, tensors, weights, calibration = vit
    keep = float_operands(model)
    plan = plan_for_budget(tensors, weights, calibration, target_bpw=2.25, keep_float=keep, cache_key=("vit", "test"),
                           log=lambda m: None)
    quantized = [e for e in plan.entries if e.spec.fmt.quantized]
    assert any(is_codebook(e.spec) for e in quantized)  # else the check below tests nothing
    weights_count = sum(int(np.prod(e.shape)) for e in quantized)
    assert sum(e.bytes for e in quantized) + CODEBOOK_TABLE_BYTES <= 2.25 * weights_count / 8


def test_rounded_and_gptq_sensitivities_are_kept_apart(vit):
    _, tensors, weights, calibration = vit
    few = [t for t in tensors if t[0].startswith("vit.encoder.layer.1.attention.attention.")]
    logs = {}
    for gptq in (False, True, False):
        lines = []
        plan_for_budget(few, weights, calibration, target_bpw=3, cache_key=("vit", "few"), gptq=gptq, log=lines.append)
        logs.setdefault(gptq, []).append(lines)
    assert [line.split(" (")[1].split(")")[0] for line in logs[True][0]] == ["gptq"] * 3
    lines = []
    plan_for_budget(few, weights, calibration, target_bpw=3, cache_key=("vit", "few"), gptq=True, bias_correction=True,
                    log=lines.append)
    assert [line.split(" (")[1].split(")")[0] for line in lines] == ["gptq, bias corrected"] * 3  # a kind of its own
    assert logs[False][0][0].startswith("sensitivity 1/3") and "(rounded)" in logs[False][0][0]
    # the cache keeps one kind at a time: the third plan measures the rounded ones again, not the gptq ones
    assert logs[False][1] == logs[False][0]


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


def test_q_k_and_v_get_one_format_so_the_runtime_can_fuse_them(vit):
    """The runtime runs a layer's Q, K and V as one product (one rotation for the codebook formats)
    only when they share a format: the planner allocates them as one unit (fused_units), inside the
    budget, with the sensitivities it measured for each; untied, the same sensitivities choose freely."""
    from ulpq_build.planner import fused_units

    model, tensors, weights, calibration = vit
    keep = float_operands(model)
    log = lambda m: None
    qkv = [tuple(layer[r]["weight"] for r in ("query", "key", "value")) for layer in model["layers"]]
    options = {n: candidates_for(s) for n, s, _ in tensors if n in {w for t in qkv for w in t} or n == "patch.weight"}
    units = fused_units(model, {n: options[n] for n in options})
    assert set(qkv) <= set(units) and all(len(u) == 1 for u in units if u not in qkv)
    for bits in (2.25, 3):
        tied = plan_for_budget(tensors, weights, calibration, target_bpw=bits, keep_float=keep, cache_key=("vit", "test"),
                               log=log)
        specs = {e.name: e.spec for e in tied.entries}
        assert all(specs[q] == specs[k] == specs[v] for q, k, v in qkv), bits
        assert tied.quantized_bits_per_weight <= bits + 1e-9
    free = plan_for_budget(tensors, weights, calibration, target_bpw=2.25, keep_float=keep, cache_key=("vit", "test"),
                           tie_fused=False, log=log)
    specs = {e.name: e.spec for e in free.entries}
    assert any(not specs[q] == specs[k] == specs[v] for q, k, v in qkv)  # what tying changes on this model
