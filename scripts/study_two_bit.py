"""What incoherence processing (random Hadamard rotations) and E8 codebooks each contribute on
all-MiniLM-L6-v2, measured in one run (issue 15): for each configuration, every matrix of the
model (the word, position and token-type tables included) is quantized, restored to its original
basis, and scored on the Lee corpus as `bench` scores it (Pearson of the embedding cosines with the
human scores, as % of float32's; mean cosine of each document's embedding to its float32 one).
Bits per weight count every stored byte of every quantized matrix (codes, scales, rotation seeds)
over their weights; LayerNorm parameters and biases stay float32 and are not counted, as in bench.

    nice -n 5 python scripts/study_two_bit.py [--runs NAME,...] [--max-minutes M] [--json FILE]
                                             [--sensitivity-cache FILE]

The rot-mix rows mix formats per matrix (rotated E81B, E8P, E8P+E81B, E8P+E8P, int8) by this script's own
allocation (the planner's rule, greedy distortion drop per byte, over sensitivities measured here
with rotations and rounding), from before the codebook formats were registry rows. The reg- rows go
through the toolchain itself: registry formats (formats.py e8p, e8p-rvq3, ...) quantized by
gptq.quantize_model, and reg-mixed-B planned by planner.plan_for_budget (sensitivities after GPTQ,
gptq=True) and then GPTQ'd, as `bundle --target-bpw B --method gptq` does; reg-mixed-B-rounded plans on sensitivities by rounding, as
the planner did before; -bias rows turn on GPTQ's bias correction (gptq.quantize_model's option, off by
default) in the sensitivities and in GPTQ, -bias-gptq-only rows in GPTQ alone. The planner's sensitivity pass takes many
minutes: --sensitivity-cache keeps its table in a file between runs of this script.
docs/two_bit_study.md holds a run's table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI: threaded BLAS on 2 shared cores is slower

import argparse
import dataclasses
import datetime
import json
import math
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ulpq_build import calibration as cal
from ulpq_build import row_blocks
from ulpq_build import planner
from ulpq_build.architectures import describe_model, float_operands, model_tensors
from ulpq_build.architectures.bert import LeeSimilarity
from ulpq_build.formats import CODEBOOK_TABLE_WORDS
from ulpq_build.gptq import BIAS_CORRECTION, _linear_weights, quantize_model
from ulpq_build.model_source import open_model, resolve_model
from ulpq_build.planner import plan_for_budget
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec, matrix_shape, stored_bytes
from ulpq_build.vq.codebook import CODEBOOK_FORMATS
from ulpq_build.vq.incoherence import MatrixRotation
from ulpq_build.vq.model import Recipe, quantize_matrix, quantize_weights

TERNARY = QuantSpec("int2-ternary", 0)
TERNARY_G32 = QuantSpec("int2-ternary", 32, scale_dtype="float16")  # bench's int2-gptq preset
INT3 = QuantSpec("int3-dense", 0)
INT4 = QuantSpec("int4", 0)
INT8 = QuantSpec("int8", 0)
# What the mixed rows choose from per matrix, cheapest first: rotated codebooks of 1 to 4 bits per
# weight and rotated scalar int8 (a registry row today) for the few matrices worth 8 bits.
MIX_OPTIONS = (Recipe(codebook="e81b", rotate=True), Recipe(codebook="e8p", rotate=True),
               Recipe(codebook="e8p-rvq3", rotate=True), Recipe(codebook="e8p-rvq4", rotate=True),
               Recipe(spec=INT8, rotate=True))


def uniform(**kw):
    return lambda study: {n: Recipe(**kw) for n in study.matrices}


# Rows through the toolchain itself: registry formats (formats.py: e8p, e8p-rvq3, ... with the bundle's
# rotations: inputs only, tables unrotated, seeds by input width) quantized by gptq.quantize_model as
# `bundle --format F --method gptq` does, or planned by planner.plan_for_budget (the codebook rows
# among its candidates) and then GPTQ'd, as `bundle --target-bpw B --method gptq` and bench's mixed-B.
def registry(fmt: str, **options):
    """options: gptq.quantize_model's keywords (bias_correction=...), else its defaults."""
    return lambda study: ("registry", {n: QuantSpec(fmt) for n in study.matrices}, options)


def planned(bpw: float, gptq: bool = True, bias_correction: bool = BIAS_CORRECTION, plan_bias: bool | None = None,
            pin: dict[str, QuantSpec] | None = None):
    """bias_correction: gptq.quantize_model's option; plan_bias: the planner's sensitivities measured with
    it or not (default: as quantize_model); pin: these matrices get these specs, the planner the rest."""
    plan_bias = bias_correction if plan_bias is None else plan_bias
    return lambda study: ("registry", study.plan(bpw, gptq, plan_bias, pin or {}), {"bias_correction": bias_correction})


def mixed(budget: float, floors: dict[str, int] | None = None, gptq_gain: float = 1.0):
    return lambda study: study.mix(budget, floors or {}, gptq_gain)


# The allocation rounds each matrix alone, but GPTQ then roughly halves what the linear layers cost
# and does nothing for the tables: 1 - cosine 0.430 (rot-e8p-rtn) -> 0.208 (rot-e8p-gptq), measured
# 2026-11-29 (docs/two_bit_study.md). The -gain rows scale the linear layers' sensitivities by this.
GPTQ_GAIN = 0.5


# (name, target bits per weight, what it measures, recipes of the study's matrices), most telling first
RUNS = [
    ("reg-e8p-rtn", "~2", "toolchain: `bundle --format e8p` (rotations + codebook, nearest codeword)", registry("e8p")),
    ("reg-mixed-2.25", "~2.25", "toolchain: `bundle --target-bpw 2.25 --method gptq` (planner with the codebook rows)", planned(2.25)),
    ("reg-mixed-2.5", "~2.5", "toolchain: `bundle --target-bpw 2.5 --method gptq`", planned(2.5)),
    ("reg-mixed-3", "~3", "toolchain: `bundle --target-bpw 3 --method gptq`", planned(3.0)),
    ("reg-mixed-4.1", "~4.1", "toolchain: `bundle --target-bpw 4.1 --method gptq`", planned(4.1)),
    ("reg-mixed-2.25-bias", "~2.25", "as reg-mixed-2.25, with bias correction (in the sensitivities and in GPTQ)",
     planned(2.25, bias_correction=True)),
    ("reg-mixed-2.5-bias", "~2.5", "as reg-mixed-2.5, with bias correction", planned(2.5, bias_correction=True)),
    ("reg-mixed-4.1-bias", "~4.1", "as reg-mixed-4.1, with bias correction", planned(4.1, bias_correction=True)),
    ("reg-mixed-2.25-bias-gptq-only", "~2.25", "as reg-mixed-2.25, biases corrected by GPTQ but planned on sensitivities without",
     planned(2.25, bias_correction=True, plan_bias=False)),
    ("reg-mixed-2.5-bias-gptq-only", "~2.5", "as reg-mixed-2.5, biases corrected by GPTQ but planned on sensitivities without",
     planned(2.5, bias_correction=True, plan_bias=False)),
    ("reg-mixed-4.1-bias-gptq-only", "~4.1", "as reg-mixed-4.1, biases corrected by GPTQ but planned on sensitivities without",
     planned(4.1, bias_correction=True, plan_bias=False)),
    ("reg-mixed-4.1-word-int4g64", "~4.1", ("as reg-mixed-4.1-bias, the word table pinned one step up (int4, groups of 64), "
                                            "the rest planned in the bytes left: the planner's main choice re-measured"),
     planned(4.1, bias_correction=True, pin={"word_embeddings": QuantSpec("int4", 64, scale_dtype="float16")})),
    ("reg-mixed-2.5-word-rvq3", "~2.5", "as reg-mixed-2.5-bias, the word table pinned one width up (e8p-rvq3), the rest planned",
     planned(2.5, bias_correction=True, pin={"word_embeddings": QuantSpec("e8p-rvq3")})),
    ("reg-mixed-2.25-rounded", "~2.25", "as reg-mixed-2.25, planned on sensitivities by rounding (the planner before)",
     planned(2.25, gptq=False)),
    ("reg-mixed-2.5-rounded", "~2.5", "as reg-mixed-2.5, planned on sensitivities by rounding", planned(2.5, gptq=False)),
    ("reg-mixed-4.1-rounded", "~4.1", "as reg-mixed-4.1, planned on sensitivities by rounding", planned(4.1, gptq=False)),
    ("reg-int4-gptq", "~4.1", "toolchain: `bundle` (its default for MiniLM: int4, per-channel scales, GPTQ)", registry("int4")),
    ("reg-int4-gptq-bias", "~4.1", "as reg-int4-gptq, with bias correction", registry("int4", bias_correction=True)),
    ("reg-e8p-gptq", "~2", "toolchain: `bundle --format e8p --method gptq` (rotations + codebook + LDLQ)", registry("e8p")),
    ("reg-e8p-rvq3-gptq", "~3", "toolchain: `bundle --format e8p-rvq3 --method gptq`", registry("e8p-rvq3")),
    ("rot-in-int2-gptq", "~2", "rotations alone (inputs only, as bundles rotate), scalar int2, GPTQ",
     uniform(spec=TERNARY, rotate=True, rotate_outputs=False, gptq=True)),
    ("rot-in-int3-gptq", "~3", "rotations alone (inputs only), scalar int3, GPTQ",
     uniform(spec=INT3, rotate=True, rotate_outputs=False, gptq=True)),
    ("int2-rtn", "~2", "scalar int2 (ternary levels, per-channel scales), round to nearest", uniform(spec=TERNARY)),
    ("int2-gptq", "~2", "scalar int2, GPTQ (today's baseline)", uniform(spec=TERNARY, gptq=True)),
    ("rot-int2-rtn", "~2", "rotations alone, round to nearest", uniform(spec=TERNARY, rotate=True)),
    ("rot-int2-gptq", "~2", "rotations alone, GPTQ", uniform(spec=TERNARY, rotate=True, gptq=True)),
    ("e8p-rtn", "~2", "codebook alone (E8P), nearest codeword", uniform(codebook="e8p")),
    ("e8p-gptq", "~2", "codebook alone, block GPTQ (LDLQ)", uniform(codebook="e8p", gptq=True)),
    ("rot-e8p-rtn", "~2", "rotations + codebook, nearest codeword", uniform(codebook="e8p", rotate=True)),
    ("rot-e8p-gptq", "~2", "rotations + codebook + block GPTQ", uniform(codebook="e8p", rotate=True, gptq=True)),
    ("rot-mix-2.25-gptq", "~2.25", "rotations + formats mixed per matrix + GPTQ", mixed(2.25)),
    ("rot-mix-2.25-word2-gptq", "~2.25", "as rot-mix-2.25, the word table held at E8P (2 bits) or above",
     mixed(2.25, {"word_embeddings": 1})),
    ("rot-mix-2.5-gptq", "~2.5", "rotations + formats mixed per matrix + GPTQ", mixed(2.5)),
    ("int2-g32-gptq", "~2.5", "scalar int2, groups of 32, float16 scales, GPTQ (bench's int2-gptq)", uniform(spec=TERNARY_G32, gptq=True)),
    ("rot-int2-g32-gptq", "~2.5", "rotations alone, groups of 32, GPTQ", uniform(spec=TERNARY_G32, rotate=True, gptq=True)),
    ("int4-gptq", "~4.1", "scalar int4, GPTQ (today's default)", uniform(spec=INT4, gptq=True)),
    ("rot-int4-gptq", "~4.1", "rotations alone, int4, GPTQ", uniform(spec=INT4, rotate=True, gptq=True)),
    ("rot-e8p-rvq4-gptq", "~4", "rotations + codebook (E8P + E8P residual) + block GPTQ", uniform(codebook="e8p-rvq4", rotate=True, gptq=True)),
    ("rot-mix-4.1-gptq", "~4.1", "rotations + formats mixed per matrix + GPTQ", mixed(4.1)),
    ("rot-mix-2.5-word2-gptq", "~2.5", "as rot-mix-2.5, the word table held at E8P (2 bits) or above",
     mixed(2.5, {"word_embeddings": 1})),
    ("rot-mix-4.1-word3-gptq", "~4.1", "as rot-mix-4.1, the word table held at E8P+E81B (3 bits) or above",
     mixed(4.1, {"word_embeddings": 2})),
    ("int3-gptq", "~3", "scalar int3 (dense), GPTQ", uniform(spec=INT3, gptq=True)),
    ("rot-int3-gptq", "~3", "rotations alone, int3, GPTQ", uniform(spec=INT3, rotate=True, gptq=True)),
    ("rot-e8p-rvq3-gptq", "~3", "rotations + codebook (E8P + E81B residual) + block GPTQ", uniform(codebook="e8p-rvq3", rotate=True, gptq=True)),
    ("rot-mix-3-gptq", "~3", "rotations + formats mixed per matrix + GPTQ", mixed(3.0)),
    ("rot-mix-2.25-gain-gptq", "~2.25", "as rot-mix-2.25, linear layers' sensitivities x GPTQ_GAIN", mixed(2.25, None, GPTQ_GAIN)),
    ("rot-mix-2.5-gain-gptq", "~2.5", "as rot-mix-2.5, linear layers' sensitivities x GPTQ_GAIN", mixed(2.5, None, GPTQ_GAIN)),
    ("rot-mix-4.1-gain-gptq", "~4.1", "as rot-mix-4.1, linear layers' sensitivities x GPTQ_GAIN", mixed(4.1, None, GPTQ_GAIN)),
    ("int4-rtn", "~4.1", "scalar int4, round to nearest", uniform(spec=INT4)),
    ("e8p-rvq4-gptq", "~4", "codebook alone (E8P + E8P), block GPTQ", uniform(codebook="e8p-rvq4", gptq=True)),
]


class Study:
    def __init__(self, log, sensitivity_cache: Path | None = None):
        self.log = log
        self.sensitivity_cache = sensitivity_cache
        folder, _ = resolve_model("builtin:minilm", Path("."))
        source = open_model(folder)
        self.model = describe_model(source)
        self.weights = {n: np.asarray(source.weights.tensor(n), np.float32) for n in model_tensors(self.model)}
        keep = float_operands(self.model)
        self.matrices = [n for n, w in self.weights.items() if w.ndim == 2 and n not in keep]
        self.params = sum(self.weights[n].size for n in self.matrices)
        self.score = LeeSimilarity(self.model, folder, self.weights)
        self.calibration = cal.calibration_for(self.model, folder)
        self._sensitivity = None
        self._reference = None

    def run(self, recipes, gptq: bool = True) -> dict:
        if isinstance(recipes, tuple):  # ("registry", specs[, quantize_model options]): the toolchain's own quantizers
            weights, stored = self.run_registry(recipes[1], gptq, *recipes[2:])
        else:
            weights, stored = quantize_weights(self.model, self.weights, recipes, self.calibration.run)
        result = self.score(weights)
        if self._reference is None:
            self._reference = self.calibration.run_subset(self.weights)
        # what the planner sees: 1 - mean cosine on the calibration subset (the package's text, not Lee)
        calibration = cal.distortion(self.model, self._reference, self.calibration.run_subset(weights))
        return {"bits_per_weight": 8 * sum(stored.values()) / self.params, "pearson_pct": result["ratio"],
                "pearson": result["value"], "mean_cosine": result["mean_cosine_to_float32"],
                "calibration_distortion": calibration}

    def run_registry(self, specs: dict[str, QuantSpec], gptq: bool, options: dict | None = None):
        """Every matrix by the toolchain (GPTQ in graph order, or rounding), dequantized, with the biases
        GPTQ's bias correction rewrote; stored bytes of the matrices (biases stay float32 and are not
        counted, as in bench), the bundle's one copy of the codebook tables (2 KiB) counted once when a
        codebook format is used."""
        if gptq:
            tensors = quantize_model(self.model, self.weights, specs, self.calibration.run, lambda m: None, **(options or {}))
        else:
            tensors = {n: quantize(n, self.weights[n], s) for n, s in specs.items()}
        weights = dict(self.weights)
        for n, t in tensors.items():  # a word table planned in row blocks: each block's rows (row_blocks.py)
            row_blocks.put(weights, n, dequantize(t))
        stored = {n: t.nbytes for n, t in tensors.items() if n in specs}
        if any(s.fmt.levels == "codebook" for s in specs.values()):
            stored["<codebook tables>"] = 4 * CODEBOOK_TABLE_WORDS
        return weights, stored

    def plan(self, bpw: float, gptq: bool = True, bias_correction: bool = BIAS_CORRECTION,
             pin: dict[str, QuantSpec] | None = None) -> dict[str, QuantSpec]:
        """planner.plan_for_budget's choice at bpw over the study's matrices (sensitivities measured once
        per kind, gptq or rounded, and kept in --sensitivity-cache when given); `pin`: matrices (by a part
        of their name) given these specs, the rest planned in the bytes left, on the same sensitivities."""
        pinned = {n: spec for n in self.matrices for part, spec in (pin or {}).items() if part in n}
        tensors = [(n, self.weights[n].shape, "float32") for n in self.matrices if n not in pinned]
        start = time.time()
        cached = {}
        if self.sensitivity_cache is not None and self.sensitivity_cache.exists():
            cached = pickle.loads(self.sensitivity_cache.read_bytes())
        planner._SENSITIVITY_CACHE.update(cached)  # the planner keeps one model's table: this is the same model
        if pinned:
            self._restrict_sensitivities(set(pinned))
        budget = {"target_bpw": bpw} if not pinned else {
            "target_bytes": int(bpw * self.params / 8) - sum(stored_bytes(s, self.weights[n].shape) for n, s in pinned.items())}
        plan = plan_for_budget(tensors, self.weights, self.calibration, **budget, cache_key=("study",),
                               gptq=gptq, bias_correction=bias_correction, log=self.log)
        if self.sensitivity_cache is not None and not pinned:
            cached.update(planner._SENSITIVITY_CACHE)
            self.sensitivity_cache.write_bytes(pickle.dumps(cached))
        chosen = {**{e.name: e.spec for e in plan.entries}, **pinned}
        shapes = {**{e.name: e.shape for e in plan.entries}, **{n: self.weights[n].shape for n in pinned}}
        counts: dict[str, int] = {}
        word = []
        for n, s in chosen.items():
            label = s.format + ("" if s.group_size == 0 else f"/g{s.group_size}")
            counts[label] = counts.get(label, 0) + math.prod(shapes[n])
            if row_blocks.table_of(n) == "embeddings.word_embeddings.weight":
                word.append(f"{n.removeprefix('embeddings.word_embeddings.weight')} {label}")
        self.log(f"plan at {bpw} bpw, {('gptq, bias corrected' if bias_correction else 'gptq') if gptq else 'rounded'} sensitivities ({time.time() - start:.0f} s): word table "
                 f"{', '.join(word)}; weights per format "
                 + ", ".join(f"{k} {v / self.params:.1%}" for k, v in sorted(counts.items())))
        return chosen

    def _restrict_sensitivities(self, pinned: set[str]) -> None:
        """Add to the planner's cache, for every whole-model table it holds, the same table without the
        pinned matrices (the key the planner computes for the rest), so a pinned plan measures nothing."""
        for key, cost in list(planner._SENSITIVITY_CACHE.items()):
            cache_key, kind, matrices, options = key
            if cache_key != ("study",) or len(matrices) != len(self.matrices):
                continue
            keep = [i for i, (n, _) in enumerate(matrices) if n not in pinned]
            planner._SENSITIVITY_CACHE[(cache_key, kind, tuple(matrices[i] for i in keep), tuple(options[i] for i in keep))] = {
                n: c for n, c in cost.items() if n not in pinned}

    def option_bytes(self, name: str, option: Recipe) -> int:
        shape = self.weights[name].shape
        rows, k = matrix_shape(shape)
        stored = CODEBOOK_FORMATS[option.codebook].stored_bytes(rows, k) if option.codebook else stored_bytes(option.spec, shape)
        return stored + (MatrixRotation.STORED_BYTES if option.rotate else 0)

    def sensitivities(self) -> dict[str, list[float]]:
        """cost[name][j]: calibration distortion with only `name` quantized by MIX_OPTIONS[j], rounding to nearest."""
        if self._sensitivity is None:
            start = time.time()
            reference = self.calibration.run_subset(self.weights)
            cost = {}
            for name in self.matrices:
                cost[name] = []
                for option in MIX_OPTIONS:
                    trial = dict(self.weights)
                    trial[name], _ = quantize_matrix(name, self.weights[name], option)
                    cost[name].append(cal.distortion(self.model, reference, self.calibration.run_subset(trial)))
            self.log(f"sensitivities of {len(self.matrices)} matrices x {len(MIX_OPTIONS)} formats: {time.time() - start:.0f} s")
            self._sensitivity = cost
        return self._sensitivity

    def mix(self, budget_bpw: float, floors: dict[str, int], gptq_gain: float = 1.0) -> dict[str, Recipe]:
        """The planner's greedy rule over MIX_OPTIONS: start every matrix at the cheapest, take the
        upgrade with the largest distortion drop per byte while the total fits budget_bpw; then GPTQ.
        floors: {part of a matrix name: the lowest MIX_OPTIONS index it may take}; gptq_gain: factor on
        the sensitivities of the layers GPTQ will quantize (GPTQ_GAIN)."""
        linear = _linear_weights(self.model)
        cost = {n: [c * (gptq_gain if n in linear else 1.0) for c in costs] for n, costs in self.sensitivities().items()}
        budget = budget_bpw * self.params / 8
        choice = {n: max([j for part, j in floors.items() if part in n], default=0) for n in self.matrices}
        used = sum(self.option_bytes(n, MIX_OPTIONS[choice[n]]) for n in self.matrices)
        while True:
            best = None
            for name in self.matrices:
                here = choice[name]
                for j in range(here + 1, len(MIX_OPTIONS)):
                    extra = self.option_bytes(name, MIX_OPTIONS[j]) - self.option_bytes(name, MIX_OPTIONS[here])
                    gain = cost[name][here] - cost[name][j]
                    if extra > 0 and gain > 0 and used + extra <= budget and (best is None or gain / extra > best[0]):
                        best = (gain / extra, name, j, extra)
            if best is None:
                break
            _, name, j, extra = best
            choice[name], used = j, used + extra
        self.log(f"mix at {budget_bpw} bits per weight: "
                 + ", ".join(f"{n.removeprefix('encoder.layer.')}={MIX_OPTIONS[j].label}" for n, j in choice.items()))
        return {n: dataclasses.replace(MIX_OPTIONS[j], gptq=True) for n, j in choice.items()}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{platform.machine()}, {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", help="comma-separated run names (default: all): " + ", ".join(r[0] for r in RUNS))
    parser.add_argument("--max-minutes", type=float, default=60.0, help="start no new run after this many minutes")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--sensitivity-cache", type=Path, help="keep the planner's sensitivities in this file between runs")
    args = parser.parse_args(argv)
    names = args.runs.split(",") if args.runs else [r[0] for r in RUNS]
    unknown = [n for n in names if n not in {r[0] for r in RUNS}]
    if unknown:
        print(f"--runs: unknown run {unknown[0]!r}; choose from {', '.join(r[0] for r in RUNS)}", file=sys.stderr)
        return 2
    log = lambda message: print(message, flush=True)
    start = time.time()
    started = datetime.datetime.now(datetime.UTC)
    log(f"{started:%Y-%m-%d %H:%M} UTC on {machine()}, load average {os.getloadavg()[0]:.1f}")
    study = Study(log, args.sensitivity_cache)
    log(f"all-MiniLM-L6-v2: {len(study.matrices)} matrices, {study.params} weights; float32 Lee Pearson "
        f"{study.score.base:.4f} ({time.time() - start:.0f} s)")
    rows, skipped = [], []
    for name, target, what, recipes in RUNS:
        if name not in names:
            continue
        if time.time() - start > 60 * args.max_minutes:
            skipped.append(name)
            continue
        t0 = time.time()
        row = {"run": name, "target": target, "what": what, **study.run(recipes(study), gptq=not name.endswith("-rtn")),
               "seconds": round(time.time() - t0)}
        rows.append(row)
        log(f"{name:20s} {row['bits_per_weight']:.3f} bpw  Pearson {row['pearson_pct']:6.2f}%  "
            f"cosine {row['mean_cosine']:.4f}  calibration 1-cos {row.get('calibration_distortion', float('nan')):.5f}"
            f"  ({row['seconds']} s)")
    log("")
    log(f"Measured {started:%Y-%m-%d} on {machine()}; load average {os.getloadavg()[0]:.1f} at the end; "
        f"total {time.time() - start:.0f} s. float32 Lee Pearson {study.score.base:.4f}.")
    log("")
    log("| run | target bpw | what | bits/weight | Lee Pearson % of fp32 | mean cosine to fp32 | seconds |")
    log("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        log(f"| {r['run']} | {r['target']} | {r['what']} | {r['bits_per_weight']:.3f} | {r['pearson_pct']:.2f} | "
            f"{r['mean_cosine']:.4f} | {r['seconds']} |")
    if skipped:
        log(f"\nnot run (--max-minutes {args.max_minutes}): {', '.join(skipped)}")
    if args.json:
        sensitivity = {n: dict(zip((o.label for o in MIX_OPTIONS), c)) for n, c in (study._sensitivity or {}).items()}
        args.json.write_text(json.dumps({"date": f"{started:%Y-%m-%d}", "machine": machine(), "rows": rows,
                                         "sensitivity": sensitivity}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
