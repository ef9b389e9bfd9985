"""Automatic mixed precision: give every matrix the format that buys the most accuracy per byte,
under a budget of bits per weight or bytes.

1. Sensitivity: for each matrix and each candidate storage, quantize that matrix alone the way the
   bundle will quantize it, run the calibration subset, and measure how far the model's outputs
   moved from the float32 model's (calibration.distortion). With `gptq`, the linear layers are
   quantized by GPTQ on their inputs' Hessian in the float32 model (one calibration run), the
   tables by rounding, as gptq.quantize_model then does: rounding alone would credit every linear
   layer with errors that GPTQ later shrinks several-fold (and the tables with none of that), so
   the allocation would starve the tables (MiniLM's word table, 52 % of its weights, at 1 bit:
   docs/two_bit_study.md). With `bias_correction` (gptq.quantize_model's option, off by default), each
   layer's bias is corrected for that matrix alone as quantize_model corrects it, from the float32
   model's mean input.
   The codebook formats (e81b, e8p, e8p-rvq3, e8p-rvq4) are candidates beside the scalar ones for
   every matrix whose rows are a multiple of 8 long; their sensitivity is measured the same way,
   on rotated inputs (nearest codeword, or block LDLQ with `gptq`).
2. Allocation: start every matrix at its cheapest candidate; repeatedly take the upgrade (a matrix
   to a costlier candidate) with the largest drop in distortion per byte added, while it fits the
   budget. Distortions of different matrices are treated as additive, the usual approximation.
   A layer's Q, K and V (and a gated FFN's gate and up) move together, one format for the group
   (fused_units): the GPU runs them as one product only then.
   The codebook formats' decode tables (one copy per bundle, 2 KiB) count once, with the first
   matrix that takes one of them: on a model as small as the ViT they are a tenth of a bit per weight.

The result is a Plan of explicit per-tensor rules, printed and stored like any other plan.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from ulpq_build import row_blocks
from ulpq_build.architectures import architecture_of
from ulpq_build.calibration import Calibration, distortion
from ulpq_build.errors import UserError
from ulpq_build.formats import CODEBOOK_FORMATS, CODEBOOK_TABLE_BYTES, GROUP_DIM
from ulpq_build.gptq import (
    BIAS_CORRECTION,
    _linear_weights,
    corrected_bias,
    gptq_quantize,
    hessian,
    linear_nodes,
)
from ulpq_build.plan import FLOAT32, Plan, Rule, is_matrix, resolve_plan
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec, matrix_shape, stored_bytes
from ulpq_build.reference import memoized

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



def is_codebook(spec: QuantSpec) -> bool:
    return spec.fmt.levels == "codebook"


def candidates_for(shape: tuple[int, ...]) -> list[QuantSpec]:
    """The candidates that fit this matrix, in ascending order of stored bytes."""
    k = matrix_shape(shape)[1]
    fitting = [c for c in CANDIDATES if (c.group_size <= 0 or k % c.group_size == 0)
               and (not is_codebook(c) or k % GROUP_DIM == 0)]
    return sorted(fitting, key=lambda c: stored_bytes(c, shape))


# Sensitivities depend only on the model, the calibration inputs and the candidates, not on the
# budget: `bench` plans several budgets for one model and measures them once.
_SENSITIVITY_CACHE: dict[tuple, dict[str, list[float]]] = {}


def plan_for_budget(tensors: list[tuple[str, tuple[int, ...], str]], weights: dict[str, np.ndarray], calibration: Calibration,
                    *, target_bpw: float | None = None, target_bytes: int | None = None, keep_float: set[str] = frozenset(),
                    cache_key: tuple | None = None, gptq: bool = False, bias_correction: bool = BIAS_CORRECTION,
                    tie_fused: bool = True, log=print) -> Plan:
    """The plan that minimises calibration distortion within the budget (bits per weight over the
    matrices, or total bytes of every tensor). `keep_float`: tensors that must stay float32;
    `cache_key`: identifies the model's weights, to reuse sensitivities measured in this process;
    `gptq`: the plan will be quantized by GPTQ (gptq.quantize_model), so measure what GPTQ leaves;
    `bias_correction`: and GPTQ will correct the biases (quantize_model's option of that name).
    `tie_fused`: matrices the runtime fuses (fused_units: Q, K and V) get one format together.
    Tables the runtime gathers block by block (the architecture's row_block_tables) are planned as
    blocks of rows (row_blocks.py): the plan names a block per run of rows that got one format."""
    split = set(architecture_of(calibration.model).row_block_tables(calibration.model)) - set(keep_float)
    tensors = row_blocks.expand(tensors, split)
    weights = {**weights, **{n: row_blocks.tensor(weights.__getitem__, n) for n, _, _ in tensors if row_blocks.parse(n)}}
    matrices = [(n, s) for n, s, d in tensors if is_matrix(s, d) and n not in keep_float]
    fixed_bytes = sum(4 * math.prod(s) for n, s, d in tensors if not is_matrix(s, d) or n in keep_float)
    params = sum(math.prod(s) for _, s in matrices)
    budget = (target_bpw * params / 8) if target_bpw is not None else (target_bytes - fixed_bytes)
    options = {n: candidates_for(s) for n, s in matrices}
    tables = any(is_codebook(options[n][0]) for n, _ in matrices)  # the bundle stores the codebook tables
    cheapest = sum(stored_bytes(options[n][0], s) for n, s in matrices) + (CODEBOOK_TABLE_BYTES if tables else 0)
    if budget < cheapest:
        floor = 8 * cheapest / params
        what = f"--target-bpw {target_bpw}" if target_bpw is not None else f"--target-size {target_bytes / 1e6:.2f} MB"
        raise UserError(f"{what} is below the smallest plan ({floor:.3f} bits per weight, "
                        f"{(cheapest + fixed_bytes) / 1e6:.2f} MB); raise the target")
    kind = "gptq+bias-correction" if gptq and bias_correction else gptq  # rounded, gptq, gptq with corrected biases
    key = None if cache_key is None else (cache_key, kind, tuple(matrices), tuple(tuple(o) for o in options.values()))
    cost = _SENSITIVITY_CACHE.get(key) if key is not None else None
    if cost is None:
        hessians, means = float_inputs(calibration, weights, {n for n, _ in matrices}) if gptq else (None, None)
        cost = sensitivities(matrices, options, weights, calibration, log, hessians, means if bias_correction else None)
        if key is not None:
            _SENSITIVITY_CACHE.clear()  # one model at a time: the table is small, the weights behind it are not
            _SENSITIVITY_CACHE[key] = cost
    else:
        log("sensitivities: measured earlier in this run")
    choice = {n: 0 for n, _ in matrices}
    size = {n: s for n, s in matrices}
    used = cheapest
    # matrices the runtime runs as one product when they share a format get one format together: their
    # bytes and distortions add (the additive model), and each upgrade moves all of them
    units = fused_units(calibration.model, options) if tie_fused else [(n,) for n, _ in matrices]
    while True:
        best = None
        for unit in units:
            here = choice[unit[0]]
            for j in range(here + 1, len(options[unit[0]])):
                extra = sum(stored_bytes(options[n][j], size[n]) - stored_bytes(options[n][here], size[n]) for n in unit)
                if not tables and is_codebook(options[unit[0]][j]):
                    extra += CODEBOOK_TABLE_BYTES
                gain = sum(cost[n][here] - cost[n][j] for n in unit)
                if extra <= 0 or gain <= 0 or used + extra > budget:
                    continue
                ratio = gain / extra
                if best is None or ratio > best[0]:
                    best = (ratio, unit, j, extra)
        if best is None:
            break
        _, unit, j, extra = best
        for n in unit:
            choice[n] = j
        used += extra
        tables = tables or is_codebook(options[unit[0]][j])
    rules = [Rule(name, options[name][choice[name]], f"planner (distortion {cost[name][choice[name]]:.2e})", frozenset([name]))
             for name, _ in matrices]
    rules += [Rule(name, FLOAT32, "kept float32", frozenset([name])) for name in sorted(keep_float)]
    plan = resolve_plan(tensors, FLOAT32, rules)
    plan.entries = row_blocks.merge(plan.entries, lambda name, shape, e: dataclasses.replace(e, name=name, shape=shape))
    return plan


# Q, K and V of a layer (and a gated FFN's gate and up) read one input: the WebGPU runtime runs them as
# one product, one rotation of the input for the codebook formats (backend_webgpu.js fusedLayout), when
# they share a format. The planner keeps them together so a planned bundle keeps that fusion.
FUSED_ROLES = (("query", "key", "value"), ("gate", "up"))


def fused_units(model: dict, options: dict[str, list[QuantSpec]]) -> list[tuple[str, ...]]:
    """The planner's units of allocation: each group of FUSED_ROLES of a layer whose matrices are all
    planned with the same candidates, then every other matrix alone, in `options`' order."""
    grouped: dict[str, tuple[str, ...]] = {}
    for layer in model.get("layers", []):
        for roles in FUSED_ROLES:
            names = tuple(layer[r]["weight"] for r in roles if isinstance(layer.get(r), dict) and "weight" in layer[r])
            if len(names) == len(roles) and all(n in options for n in names) \
                    and all(options[n] == options[names[0]] for n in names):
                grouped.update({n: names for n in names})
    units, seen = [], set()
    for name in options:
        unit = grouped.get(name, (name,))
        if unit[0] not in seen:
            seen.add(unit[0])
            units.append(unit)
    return units


def float_inputs(calibration: Calibration, weights: dict[str, np.ndarray], names: set[str]) -> tuple[dict, dict]:
    """GPTQ's Hessian (gptq.hessian) and the mean of the inputs of every linear layer in `names`, from
    one calibration run of the float32 model; layers reading the same activations (query, key, value)
    share one."""
    linear = _linear_weights(calibration.model) & names
    hessians: dict[str, np.ndarray] = {}
    means: dict[str, np.ndarray] = {}
    last: list = [None, None, None]

    def hook(node, x):
        name = node["weight"]
        if name not in linear or name in hessians:
            return
        same = last[0] is not None and last[0].shape == x.shape and np.array_equal(last[0], x)
        if not same:
            last[:] = [x, hessian(x), x.mean(axis=0, dtype=np.float64)]
        hessians[name], means[name] = last[1], last[2]

    calibration.run(weights, hook)
    return hessians, means


def sensitivities(matrices: list[tuple[str, tuple[int, ...]]], options: dict[str, list[QuantSpec]], weights: dict[str, np.ndarray],
                  calibration: Calibration, log, hessians: dict[str, np.ndarray] | None = None,
                  means: dict[str, np.ndarray] | None = None) -> dict[str, list[float]]:
    """cost[name][j]: the calibration distortion with only matrix `name` quantized to options[name][j];
    by GPTQ (gptq.gptq_quantize) on hessians[name] where given, else by rounding to nearest; with
    means[name] (its mean input), its bias corrected as gptq.quantize_model corrects it."""
    with memoized():  # each trial repeats the reference run up to its matrix (reference.Memo)
        reference = calibration.run_subset(weights)
        biases = {n: node["bias"] for n, node in linear_nodes(calibration.model).items() if node.get("bias")}
        job = _SensitivityJob(matrices, options, weights, calibration, hessians, means, reference, biases)
        workers = sensitivity_workers(len(matrices))
        if workers > 1:
            results = _in_forked_workers(job, workers)
        else:
            results = (job.costs(i) for i in range(len(matrices)))
        cost: dict[str, list[float]] = {}
        for i, ((name, _), costs) in enumerate(zip(matrices, results)):
            cost[name] = costs
            how = "rounded" if name not in (hessians or {}) else "gptq" if means is None else "gptq, bias corrected"
            log(f"sensitivity {i + 1}/{len(matrices)} {name} ({how}): " + ", ".join(
                f"{c.format}/{c.group_size or 'chan'}:{d:.2e}" for c, d in zip(options[name], costs)))
    return cost


# Processes the sensitivity pass runs in (each takes whole matrices; one is the loop in this process):
# at most this many, and as many as the CPUs this process may use hold at the BLAS threads each
# process runs (the command line's one: ulpq_build/__main__.py; unset, numpy's BLAS takes every CPU,
# so one process). Forked, so the model, the calibration inputs and the reference run's memo are
# shared, not copied or pickled. MiniLM, 3 matrices on 2 cores, one BLAS thread: 29.1 s in one
# process, 17.6 s in two; with two BLAS threads each, two processes took 49.7 s.
MAX_SENSITIVITY_WORKERS = 4


def sensitivity_workers(matrices: int) -> int:
    # Linux only: macOS offers fork, but its system BLAS (numpy's Accelerate builds) is not fork-safe
    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = next((int(os.environ[v]) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                        if os.environ.get(v, "").isdigit() and int(os.environ[v]) > 0), cpus)
    return max(1, min(MAX_SENSITIVITY_WORKERS, cpus // per_process, matrices))


@dataclass
class _SensitivityJob:
    matrices: list
    options: dict
    weights: dict
    calibration: Calibration
    hessians: dict | None
    means: dict | None
    reference: np.ndarray
    biases: dict

    def costs(self, i: int) -> list[float]:
        """The distortion of each of matrix i's options, that matrix alone quantized."""
        name = self.matrices[i][0]
        h = (self.hessians or {}).get(name)
        out = []
        for spec in self.options[name]:
            if not spec.fmt.quantized:
                out.append(0.0)
                continue
            trial = dict(self.weights)
            qt = quantize(name, self.weights[name], spec) if h is None else gptq_quantize(name, self.weights[name], spec, h)
            row_blocks.put(trial, name, dequantize(qt))  # a block: its rows of the table
            if self.means is not None and name in self.means and name in self.biases:
                bias = self.biases[name]
                trial[bias] = corrected_bias(self.weights[bias], self.weights[name], trial[name], self.means[name])
            out.append(distortion(self.calibration.model, self.reference, self.calibration.run_subset(trial)))
        return out


_FORKED_JOB: _SensitivityJob | None = None  # what forked workers read (set before the fork, never pickled)


def _forked_costs(i: int) -> list[float]:
    return _FORKED_JOB.costs(i)


def _in_forked_workers(job: _SensitivityJob, workers: int):
    """job.costs(i) for every matrix, in order, from `workers` forked processes. Consecutive matrices go
    to one process (the memo then reuses the most), in chunks small enough to even out the load."""
    global _FORKED_JOB
    _FORKED_JOB = job
    # a forked child of a process whose tokenizer ran threads would warn on stderr and go serial anyway
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    chunk = max(1, len(job.matrices) // (4 * workers))
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(_forked_costs, range(len(job.matrices)), chunksize=chunk)
    finally:
        _FORKED_JOB = None
