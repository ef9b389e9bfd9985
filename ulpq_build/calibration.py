"""Calibration runs, and how far a model's outputs move when its weights change: what GPTQ (gptq.py)
and the mixed-precision planner (planner.py) need. Each architecture's row builds its calibration
inputs (architectures/*.py calibration_inputs) from the data below, which never overlaps the
evaluation data (evaluation.py):

    text   data/calibration_text.txt and data/calibration_text_more.txt, which ship inside the
           package: 1787 English sentences written for this project (news and public affairs,
           science and health, daily life, sport and culture, longer expository prose; questions,
           instructions; short and long), so GPTQ needs nothing downloaded and the text may be
           redistributed under the project's own license. Never the Lee corpus, which `bench`
           evaluates on. The second file (1440 sentences) came because GPTQ's Hessians were short of
           data with the first alone (5,491 tokens for inputs up to 1536 wide): halving that text
           cost MiniLM's Lee cosine, and both files (35,372 tokens) took the planned 4.1-bit mix from
           0.9889 to 0.9908 (docs/two_bit_study.md, "More calibration text").
    image  Fashion-MNIST training images (Debian's dataset-fashion-mnist), never the test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures import ARCHITECTURES, architecture_of
from ulpq_build.errors import UserError

DATA = Path(__file__).resolve().parent / "data"
# in order; the first is also the trained decoder's training text (scripts/train_decoder.py hashes it)
CALIBRATION_TEXTS = (DATA / "calibration_text.txt", DATA / "calibration_text_more.txt")
PASSAGE_SENTENCES = 6


def calibration_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def calibration_text() -> list[str]:
    """The shipped calibration text as passages of PASSAGE_SENTENCES consecutive lines of one file (the
    files keep related sentences together), the files in order. Passages rather than single sentences:
    the model then sees long contexts and late positions as paragraphs give them, and the batch
    carries little padding (every row is computed, padded or not). Measured on MiniLM int4 GPTQ against
    the Lee corpus, in docs/benchmarks.md: single sentences 99.87 % of float32's Pearson, mean cosine
    0.918; passages 101.12 %, 0.944 (the first file alone)."""
    passages = []
    for path in CALIBRATION_TEXTS:
        lines = calibration_lines(path)
        passages += [" ".join(lines[i : i + PASSAGE_SENTENCES]) for i in range(0, len(lines), PASSAGE_SENTENCES)]
    return passages


def ships_calibration(model: dict, source) -> bool:
    """Whether this model (a model_source.ModelSource) calibrates on data inside the package, so GPTQ
    can be the default without asking the user to install anything (its row decides: a text model
    whose tokenizer.json the tokenizers package reads and whose ids fit the model's word table).
    Anything less and the default rounds to nearest, as it would have, instead of failing."""
    return architecture_of(model).ships_calibration(model, source)


@dataclass
class Calibration:
    """run(weights, hook) -> outputs over the calibration inputs (one batch: GPTQ needs every
    layer's inputs at once); `small` the same over a subset, for the many runs of the planner.
    Both run in float32: activations rounded at 1e-7 feed Hessians and distortions that quantization
    moves by 1e-3 and more, and MiniLM's full run with GPTQ's hook over 35k tokens took 68 s in
    float64 on 2 cores (gelu's erf and page faults alone 30 s) against 32 s in float32, both under
    cProfile (docs/benchmarks.md, "The default bundle"). gptq.hessian sums its float32 products in
    float64."""

    model: dict
    run_all: object
    run_small: object

    def run(self, weights: dict, hook=None) -> np.ndarray:
        return self.run_all(weights, hook)

    def run_subset(self, weights: dict) -> np.ndarray:
        return self.run_small(weights, None)


def calibration_for(model: dict, folder: Path | None, texts: list[str] | None = None) -> Calibration:
    """The calibration runs of `model` (its row's reference forward over its row's calibration inputs);
    `texts`: passages for text models instead of the shipped text."""
    arch = architecture_of(model)
    if arch.calibration_inputs is None:
        able = " and ".join(a.name for a in ARCHITECTURES.values() if a.calibration_inputs is not None)
        raise UserError(f"calibration is defined for {able} models, not {arch.name!r}, and --method gptq, --target-bpw "
                        f"and --target-size measure on it; choose the formats with --format or --config instead")
    inputs = arch.calibration_inputs(model, folder, texts or calibration_text())
    forward, check = arch.reference_forward, inputs.check_weights
    return Calibration(model, lambda w, hook: forward(model, check(w), inputs.full, hook=hook, dtype=np.float32),
                       lambda w, hook: forward(model, check(w), inputs.subset, hook=hook, dtype=np.float32))


def distortion(model: dict, reference: np.ndarray, outputs: np.ndarray) -> float:
    """How far outputs moved from the float32 model's: 1 - mean cosine for embeddings, the mean squared
    error over the reference logits' variance for classifiers (both 0 when nothing moved)."""
    if model.get("output") == "logits":
        return float(np.mean((outputs - reference) ** 2) / max(np.var(reference), 1e-12))
    return 1.0 - ev.mean_cosine(outputs, reference)
