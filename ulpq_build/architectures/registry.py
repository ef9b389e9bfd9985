"""The architecture record and the table of them. One `Architecture` per model family ties together
everything of that family the toolchain needs (llama.cpp's `LLM_ARCH` table, MLC-LLM's `MODELS`):
how to read its checkpoint, its numpy reference forward, the operator kernels a bundle ships for it,
its calibration, verification and demo inputs, and how `bench` scores it. Modules that used to
branch on the architecture's name ask the table instead, so a new family is a new row (plus its
genuinely new operators, graph and JS row in web_runtime/architectures.js).

Kept apart from the package's __init__ so the rows (bert.py, vit.py, mlp.py) and the reading helpers
can import it while the package is still being initialised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS


# The planner runs the model once per matrix and candidate (39 x 16 for MiniLM) on a subset of the
# calibration passages: the subset's size is its time, and it compares runs with each other, so a
# subset serves where GPTQ needs every token. 15 passages: MiniLM's planner saw every 4th of the 58
# it had before the second calibration file came.
PLANNER_PASSAGES = 15


@dataclass(frozen=True)
class CalibrationInputs:
    """What an architecture calibrates on, as inputs of its `reference_forward`: `full` for GPTQ
    (every layer's inputs at once), `subset` for the planner's many runs; both run in float32.
    `check_weights(weights)` returns the weights, or raises a UserError when the inputs cannot run on
    them (a tokenizer whose ids pass the word table) instead of a numpy IndexError deep in a run."""

    full: Any
    subset: Any
    check_weights: Callable[[dict], dict] = lambda weights: weights

    @classmethod
    def of_tokens(cls, full, tokenizer, table: str) -> CalibrationInputs:
        """Token-id inputs (a TextBatch of passages) whose check is that `tokenizer`'s ids fit the word
        `table`: a tokenizer.json from another model gives ids past it, said so here, not as an
        IndexError. The planner's subset: at most PLANNER_PASSAGES passages, evenly spaced, so it
        spans every file and topic of the text."""
        step = max(1, -(-full.ids.shape[0] // PLANNER_PASSAGES))
        subset = type(full)(full.ids[::step], full.mask[::step]).trimmed()

        def fits(weights: dict) -> dict:
            rows, top = weights[table].shape[0], int(full.ids.max())
            if top >= rows:
                raise UserError(f"{tokenizer}: its token ids reach {top} but the model's word table has {rows} rows, so "
                                f"this tokenizer is not the model's; put the model's own tokenizer.json in the folder")
            return weights

        return cls(full, subset, fits)


@dataclass(frozen=True)
class Goal:
    """An accuracy goal of `bench` as a ratio to float32, over the presets that qualify for it."""
    label: str
    min_ratio: float  # % of float32
    bits: int | None = None  # qualifies: presets whose (base) format has these bits ...
    mixed: bool = False  # ... or mixed-precision presets ...
    max_bpw: float | None = None  # ... at most this many bits per weight on average, scales included

    def qualifies(self, row) -> bool:
        """`row`: a bench.Row (preset, format, bits_per_weight)."""
        if self.max_bpw is not None and row.bits_per_weight > self.max_bpw + 1e-9:
            return False
        if row.format == "mixed":
            return self.mixed
        return self.bits is not None and FORMATS[row.format].bits == self.bits


def _nothing(*_args) -> list:
    return []


@dataclass(frozen=True)
class Architecture:
    """One model family. The callables take the `model` description (`describe`'s result, the
    manifest's `model` section) first.

    name                the manifest's model.architecture, and the JS row's key
    model_types         the config.json model_type values it reads (None: a config without one)
    summary             how `supported()` lists it in errors
    describe            ModelSource -> model description (graph nodes and tensor names), or a UserError
    reference_forward   (model, weights, inputs, hook=None, dtype=np.float64) -> outputs [batch, ...]:
                        the numpy oracle; `inputs` as calibration_inputs and verification_input build them
    input_kind          what the runtime's process() takes: "texts", "images" or "rows" (browser_check
                        hands the verification payload over as this kind)
    verification_input  (model, bundle folder, manifest, images) -> (browser payload, numpy inputs,
                        compare(expected, got) -> (metric, value)): the fixed input `verify` runs
    demo                model -> the manifest's `demo` section (what the demo page runs on load)
    operator_kernels    model -> [(role, kernel, WeightStorage | None, options)]: the weightless
                        operators its graph runs, as model.op_kernels[profile][role]
    bundle_files        (model, ModelSource) -> names of files copied from the model folder
    float_operands      model -> names of tensors kernels read as plain float32 (never packed)
    row_block_tables    model -> names of tables the runtime gathers block by block, so the planner may
                        give blocks of their rows formats of their own (ulpq_build/row_blocks.py)
    calibration_inputs  (model, folder, texts) -> CalibrationInputs, or None: GPTQ and the planner
                        cannot run on it (`texts`: the calibration passages, for text models)
    ships_calibration   (model, ModelSource) -> whether its calibration data ships in the package, so
                        GPTQ may be the default
    accuracy            (model, folder, float32 weights) -> scorer with `.base` (float32's score) and
                        __call__(weights) -> {"metric", "value", "ratio", ...}, or None: `bench` cannot
                        score it
    bench_presets       `bench`'s presets when --formats is not given
    bench_goals         the accuracy goals `bench` reports as met or missed
    preset_overrides    bench preset name -> the QuantSpec fields this family builds it with, where
                        they differ from the general rule (bench.Preset.parse)
    stored_transposed   ModelSource -> names of matrices the checkpoint stores [in, out] (GPT-2's Conv1D):
                        open_model presents them [out, in], as every other matrix, to describe, the
                        quantizer, the reference and the bundle alike; never raises (any checkpoint opens)
    bundle_unsupported  model -> None, or the one-line reason `bundle` refuses this model (checked before
                        quantizing: no runtime runs the family, or a file the runtime needs is missing)
    webgpu_graph        whether the JS runtime has a WebGPU graph for it: the bundle ships its shaders
                        (False: no WGSL is planned and the runtime runs it on the CPU path)
    verification_forward  (model, weights, inputs) -> what the browser's output is compared with, for
                        a row whose check is not reference_forward's output (a decoder's greedy tokens)
    verification_case   (model, ModelSource folder, dequantized weights) -> the manifest's `verification`
                        section (a fixed input and the reference's answer over the bundle's own weights),
                        or None
    """

    name: str
    model_types: tuple[str | None, ...]
    summary: str
    describe: Callable[..., dict]
    reference_forward: Callable[..., Any]
    input_kind: str
    verification_input: Callable[..., tuple]
    demo: Callable[[dict], dict]
    operator_kernels: Callable[[dict], list] = _nothing
    bundle_files: Callable[..., list] = _nothing
    float_operands: Callable[[dict], set] = lambda model: set()
    row_block_tables: Callable[[dict], list] = _nothing
    calibration_inputs: Callable[..., CalibrationInputs] | None = None
    ships_calibration: Callable[..., bool] = lambda model, source: False
    accuracy: Callable[..., Any] | None = None
    bench_presets: tuple[str, ...] = ("float32", "int8", "int4")
    bench_goals: tuple[Goal, ...] = ()
    preset_overrides: dict[str, dict] = field(default_factory=dict)
    stored_transposed: Callable[..., frozenset] = lambda source: frozenset()
    bundle_unsupported: Callable[[dict], str | None] = lambda model: None
    webgpu_graph: bool = True
    verification_forward: Callable[..., Any] | None = None
    verification_case: Callable[..., dict] | None = None


ARCHITECTURES: dict[str, Architecture] = {}  # name -> row, in the order `supported()` lists them


def register(arch: Architecture) -> Architecture:
    taken = {t for other in ARCHITECTURES.values() if other.name != arch.name for t in other.model_types}
    if arch.model_types and taken & set(arch.model_types):
        raise ValueError(f"architecture {arch.name!r}: model_type {sorted(taken & set(arch.model_types), key=str)} "
                         f"is already read by another row")
    ARCHITECTURES[arch.name] = arch
    return arch


def supported() -> str:
    """The supported architectures, as every "unsupported" error names them."""
    return ", ".join(a.summary for a in ARCHITECTURES.values())


def for_model_type(model_type) -> Architecture | None:
    return next((a for a in ARCHITECTURES.values() if model_type in a.model_types), None)


def architecture_of(model: dict) -> Architecture:
    """The row of a model description (or a manifest's model section)."""
    name = model.get("architecture")
    if name not in ARCHITECTURES:
        raise UserError(f"architecture {name!r} is unknown to this ulpq_build (it knows {', '.join(ARCHITECTURES)}); "
                        f"rebuild the bundle or upgrade ulpq_build")
    return ARCHITECTURES[name]
