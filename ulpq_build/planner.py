"""Automatic mixed precision: give every matrix the format that buys the most accuracy per byte,
under a budget of bits per weight or bytes.

1. Sensitivity: for each matrix and each candidate storage, quantize that matrix alone (round to
   nearest), run the calibration subset, and measure how far the model's outputs moved from the
   float32 model's (calibration.distortion).
   The codebook formats (e81b, e8p, e8p-rvq3, e8p-rvq4) are candidates beside the scalar ones for
   every matrix whose rows are a multiple of 8 long; their sensitivity is measured the same way,
   rounding to the nearest codeword on rotated inputs.
2. Allocation: start every matrix at its cheapest candidate; repeatedly take the upgrade (a matrix
   to a costlier candidate) with the largest drop in distortion per byte added, while it fits the
   budget. Distortions of different matrices are treated as additive, the usual approximation.

The result is a Plan of explicit per-tensor rules, printed and stored like any other plan.
"""

from __future__ import annotations

import math

import numpy as np

from ulpq_build.calibration import Calibration, distortion
from ulpq_build.errors import UserError
from ulpq_build.formats import CODEBOOK_FORMATS, GROUP_DIM
from ulpq_build.plan import FLOAT32, Plan, Rule, is_matrix, resolve_plan
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec, matrix_shape, stored_bytes

# The storages a matrix may get (those whose groups divide its rows), tried from the cheapest. Scales
# per output channel give the small steps between bit widths (a 1-bit or 2-bit table beside 3-4-bit
# matrices); groups of 64 or 32 with float16 scales buy accuracy for a quarter or half bit more.
CANDIDATES = [
    QuantSpec("int1", 0),
    QuantSpec("int2-ternary", 0),
    QuantSpec("int2-ternary", 64, scale_dtype="float16"),
    QuantSpec("int2-ternary", 32, scale_dtype="float16"),
    QuantSpec("int3-dense", 0),
    QuantSpec("int3-dense", 64, scale_dtype="float16"),
    QuantSpec("int3-dense", 32, scale_dtype="float16"),
    QuantSpec("int4", 0),
    QuantSpec("int4", 64, scale_dtype="float16"),
    QuantSpec("int4", 32, scale_dtype="float16"),
    QuantSpec("int8", 0),
    FLOAT32,
    # the codebook rows (ulpq_build/vq/: 8 weights jointly, rotated inputs, a float16 scale per row): at
    # each width they move a matrix's outputs less than the scalar storage of about the same bytes
    # (docs/two_bit_study.md), so the allocation takes them where their distortion per byte is best
    *(QuantSpec(name) for name in CODEBOOK_FORMATS),
]


def candidates_for(shape: tuple[int, ...]) -> list[QuantSpec]:
    """The candidates that fit this matrix, in ascending order of stored bytes."""
    k = matrix_shape(shape)[1]
    fitting = [c for c in CANDIDATES if (c.group_size <= 0 or k % c.group_size == 0)
               and (c.fmt.levels != "codebook" or k % GROUP_DIM == 0)]
    return sorted(fitting, key=lambda c: stored_bytes(c, shape))


# Sensitivities depend only on the model, the calibration inputs and the candidates, not on the
# budget: `bench` plans several budgets for one model and measures them once.
_SENSITIVITY_CACHE: dict[tuple, dict[str, list[float]]] = {}


def plan_for_budget(tensors: list[tuple[str, tuple[int, ...], str]], weights: dict[str, np.ndarray], calibration: Calibration,
                    *, target_bpw: float | None = None, target_bytes: int | None = None, keep_float: set[str] = frozenset(),
                    cache_key: tuple | None = None, log=print) -> Plan:
    """The plan that minimises calibration distortion within the budget (bits per weight over the
    matrices, or total bytes of every tensor). `keep_float`: tensors that must stay float32;
    `cache_key`: identifies the model's weights, to reuse sensitivities measured in this process."""
    matrices = [(n, s) for n, s, d in tensors if is_matrix(s, d) and n not in keep_float]
    fixed_bytes = sum(4 * math.prod(s) for n, s, d in tensors if not is_matrix(s, d) or n in keep_float)
    params = sum(math.prod(s) for _, s in matrices)
    budget = (target_bpw * params / 8) if target_bpw is not None else (target_bytes - fixed_bytes)
    options = {n: candidates_for(s) for n, s in matrices}
    cheapest = sum(stored_bytes(options[n][0], s) for n, s in matrices)
    if budget < cheapest:
        floor = 8 * cheapest / params
        what = f"--target-bpw {target_bpw}" if target_bpw is not None else f"--target-size {target_bytes / 1e6:.2f} MB"
        raise UserError(f"{what} is below the smallest plan ({floor:.3f} bits per weight, "
                        f"{(cheapest + fixed_bytes) / 1e6:.2f} MB); raise the target")
    key = None if cache_key is None else (cache_key, tuple(matrices), tuple(tuple(o) for o in options.values()))
    cost = _SENSITIVITY_CACHE.get(key) if key is not None else None
    if cost is None:
        cost = sensitivities(matrices, options, weights, calibration, log)
        if key is not None:
            _SENSITIVITY_CACHE.clear()  # one model at a time: the table is small, the weights behind it are not
            _SENSITIVITY_CACHE[key] = cost
    else:
        log("sensitivities: measured earlier in this run")
    choice = {n: 0 for n, _ in matrices}
    size = {n: s for n, s in matrices}
    used = cheapest
    while True:
        best = None
        for name, _ in matrices:
            here = choice[name]
            here_bytes = stored_bytes(options[name][here], size[name])
            for j in range(here + 1, len(options[name])):
                extra = stored_bytes(options[name][j], size[name]) - here_bytes
                gain = cost[name][here] - cost[name][j]
                if extra <= 0 or gain <= 0 or used + extra > budget:
                    continue
                ratio = gain / extra
                if best is None or ratio > best[0]:
                    best = (ratio, name, j, extra)
        if best is None:
            break
        _, name, j, extra = best
        choice[name] = j
        used += extra
    rules = [Rule(name, options[name][choice[name]], f"planner (distortion {cost[name][choice[name]]:.2e})", frozenset([name]))
             for name, _ in matrices]
    rules += [Rule(name, FLOAT32, "kept float32", frozenset([name])) for name in sorted(keep_float)]
    return resolve_plan(tensors, FLOAT32, rules)


def sensitivities(matrices: list[tuple[str, tuple[int, ...]]], options: dict[str, list[QuantSpec]], weights: dict[str, np.ndarray],
                  calibration: Calibration, log) -> dict[str, list[float]]:
    """cost[name][j]: the calibration distortion with only matrix `name` quantized to options[name][j]."""
    reference = calibration.run_subset(weights)
    cost: dict[str, list[float]] = {}
    for i, (name, shape) in enumerate(matrices):
        cost[name] = []
        for spec in options[name]:
            if not spec.fmt.quantized:
                cost[name].append(0.0)
                continue
            trial = dict(weights)
            trial[name] = dequantize(quantize(name, weights[name], spec))
            cost[name].append(distortion(calibration.model, reference, calibration.run_subset(trial)))
        log(f"sensitivity {i + 1}/{len(matrices)} {name}: " + ", ".join(
            f"{c.format}/{c.group_size or 'chan'}:{d:.2e}" for c, d in zip(options[name], cost[name])))
    return cost
