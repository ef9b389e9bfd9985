"""Calibration inputs per architecture, and how far a model's outputs move when its weights change:
what GPTQ (gptq.py) and the mixed-precision planner (planner.py) need. Calibration data never
overlaps the evaluation data (evaluation.py):

    text   data/calibration_text.txt, which ships inside the package: a few hundred English
           sentences written for this project (news, science, daily life, questions, instructions;
           short and long), so GPTQ needs nothing downloaded and the text may be redistributed under
           the project's own license. Never the Lee corpus, which `bench` evaluates on.
    image  Fashion-MNIST training images (Debian's dataset-fashion-mnist), never the test images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.errors import UserError
from ulpq_build.reference import bert_forward, vit_forward

CALIBRATION_TEXT = Path(__file__).resolve().parent / "data" / "calibration_text.txt"
PASSAGE_SENTENCES = 6
TEXT_TOKENS = 128
PLANNER_TEXT_STRIDE = 4  # the planner's many runs see every 4th passage (a quarter, spread over every topic)
IMAGES = 512


def calibration_text() -> list[str]:
    """The shipped calibration text as passages of PASSAGE_SENTENCES consecutive lines (the file keeps
    related sentences together). Passages rather than single sentences: the model then sees long
    contexts and late positions as paragraphs give them, and the batch carries little padding (every
    row is computed, padded or not). Measured on MiniLM int4 GPTQ against the Lee corpus, in
    docs/benchmarks.md: single sentences 99.87 % of float32's Pearson, mean cosine 0.918;
    passages 101.12 %, 0.944."""
    lines = [line.strip() for line in CALIBRATION_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [" ".join(lines[i : i + PASSAGE_SENTENCES]) for i in range(0, len(lines), PASSAGE_SENTENCES)]


def ships_calibration(model: dict, source) -> bool:
    """Whether this model (a model_source.ModelSource) calibrates on data inside the package, so GPTQ
    can be the default without asking the user to install anything: a text model whose tokenizer.json
    the tokenizers package reads and whose ids fit the model's word table. Anything less and the
    default rounds to nearest, as it would have, instead of failing."""
    if model.get("architecture") != "bert" or source.folder is None or not (source.folder / "tokenizer.json").is_file():
        return False
    try:
        tokenizer = ev.load_tokenizer(source.folder / "tokenizer.json")
    except UserError:
        return False
    return tokenizer.get_vocab_size() <= source.weights.shape(model["embeddings"]["word"]["table"])[0]


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
        batch = ev.tokenize(tokenizer, texts or calibration_text(), TEXT_TOKENS)
        small = _trim(ev.TextBatch(batch.ids[::PLANNER_TEXT_STRIDE], batch.mask[::PLANNER_TEXT_STRIDE]))
        batch = _trim(batch)
        table = model["embeddings"]["word"]["table"]

        def fits(w):
            # a tokenizer.json from another model gives ids past the word table: say so, not an IndexError
            rows, top = w[table].shape[0], int(batch.ids.max())
            if top >= rows:
                raise UserError(f"{tokenizer}: its token ids reach {top} but the model's word table has {rows} rows, so "
                                f"this tokenizer is not the model's; put the model's own tokenizer.json in the folder")
            return w

        return Calibration(model, lambda w, hook: bert_forward(model, fits(w), batch.ids, batch.mask, hook=hook),
                           lambda w, hook: bert_forward(model, fits(w), small.ids, small.mask, hook=hook, dtype=np.float32))
    if arch == "vit":
        images, _ = ev.fashion_mnist("train")
        rng = np.random.default_rng(0)
        pick = rng.choice(len(images), IMAGES, replace=False)
        pixels = ev.grey_to_pixels(_resize(images[pick], model["image_size"]), model["preprocess"])
        return Calibration(model, lambda w, hook: vit_forward(model, w, pixels, hook=hook),
                           lambda w, hook: vit_forward(model, w, pixels[:128], hook=hook, dtype=np.float32))
    raise UserError(f"calibration is defined for bert and vit models, not {arch!r}, and --method gptq, --target-bpw and "
                    f"--target-size measure on it; choose the formats with --format or --config instead")


def _trim(batch):
    """Drop the columns that are padding in every row (the longest sentence sets the width)."""
    width = int(batch.mask.sum(axis=1).max())
    return type(batch)(batch.ids[:, :width], batch.mask[:, :width])


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
