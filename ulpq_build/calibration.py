"""Calibration inputs per architecture, and how far a model's outputs move when its weights change:
what GPTQ (gptq.py) and the mixed-precision planner (planner.py) need. Calibration data never
overlaps the evaluation data (evaluation.py): Lee background documents for text, Fashion-MNIST
training images for images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.errors import UserError
from ulpq_build.reference import bert_forward, vit_forward

TEXT_DOCUMENTS = 64
TEXT_TOKENS = 128
IMAGES = 512


@dataclass
class Calibration:
    """run(weights, hook) -> outputs over the calibration inputs (one batch: GPTQ needs every
    layer's inputs at once); `small` the same over a subset in float32, for the many runs of the
    planner (which compares runs with each other, so float32's rounding cancels out)."""

    model: dict
    run_all: object
    run_small: object

    def run(self, weights: dict, hook=None) -> np.ndarray:
        return self.run_all(weights, hook)

    def run_subset(self, weights: dict) -> np.ndarray:
        return self.run_small(weights, None)


def calibration_for(model: dict, folder: Path | None, texts: list[str] | None = None) -> Calibration:
    arch = model["architecture"]
    if arch == "bert":
        tokenizer = folder / "tokenizer.json" if folder else None
        if tokenizer is None or not tokenizer.is_file():
            raise UserError("calibration for a BERT model needs its tokenizer.json in the model folder")
        docs = texts or ev.lee_background(TEXT_DOCUMENTS)
        batch = ev.tokenize(tokenizer, docs, TEXT_TOKENS)
        small = ev.TextBatch(batch.ids[:16], batch.mask[:16])
        return Calibration(model, lambda w, hook: bert_forward(model, w, batch.ids, batch.mask, hook=hook),
                           lambda w, hook: bert_forward(model, w, small.ids, small.mask, hook=hook, dtype=np.float32))
    if arch == "vit":
        images, _ = ev.fashion_mnist("train")
        rng = np.random.default_rng(0)
        pick = rng.choice(len(images), IMAGES, replace=False)
        pixels = ev.grey_to_pixels(_resize(images[pick], model["image_size"]), model["preprocess"])
        return Calibration(model, lambda w, hook: vit_forward(model, w, pixels, hook=hook),
                           lambda w, hook: vit_forward(model, w, pixels[:128], hook=hook, dtype=np.float32))
    raise UserError(f"calibration is defined for bert and vit models, not {arch!r}, and --method gptq, --target-bpw and "
                    f"--target-size measure on it; choose the formats with --format or --config instead")


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    idx = (np.arange(size) * images.shape[1] / size).astype(int)  # nearest neighbour: calibration only
    return images[:, idx][:, :, idx]


def distortion(model: dict, reference: np.ndarray, outputs: np.ndarray) -> float:
    """How far outputs moved from the float32 model's: 1 - mean cosine for embeddings, the mean squared
    error over the reference logits' variance for classifiers (both 0 when nothing moved)."""
    if model.get("output") == "logits":
        return float(np.mean((outputs - reference) ** 2) / max(np.var(reference), 1e-12))
    return 1.0 - ev.mean_cosine(outputs, reference)
