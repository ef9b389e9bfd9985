"""Quantize a whole model with rotations and/or codebooks, matrix by matrix, as a `Recipe` says:
the numpy reference for measuring what incoherence processing and E8 codebooks contribute
(scripts/study_two_bit.py), in more combinations than the registry's codebook rows (vq/tensor.py:
those, as bundles store them) offer: rotated scalar formats, output rotations, unrotated codebooks.

Every matrix comes back in its original basis (rotations undone), as float32, with the bytes its
stored form takes (codes, scales, codebook parts, rotation seeds). Linear layers with `gptq` are
quantized in graph order while the calibration inputs run through the model, each seeing the
outputs of the layers already quantized before it, with the Hessian gptq.py builds (gptq.hessian);
scalar formats go through gptq.gptq_quantize itself, codebooks through codebook.quantize_ldlq.
Tables (word, position embeddings) have no Hessian: rounded to nearest.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ulpq_build.gptq import _linear_weights, gptq_quantize, hessian
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec, matrix_shape
from ulpq_build.vq.codebook import CODEBOOK_FORMATS, quantize_ldlq, quantize_rtn
from ulpq_build.vq.incoherence import MatrixRotation


@dataclass(frozen=True)
class Recipe:
    """How one matrix is stored: a codebook format name, or a scalar registry QuantSpec; rotated or
    not; codes by GPTQ-style feedback (linear layers reached by calibration) or rounding."""

    codebook: str | None = None
    spec: QuantSpec | None = None
    rotate: bool = False
    gptq: bool = False
    rotate_outputs: bool = True  # with rotate: the output dimension too where it has a flat Hadamard

    def __post_init__(self):
        if (self.codebook is None) == (self.spec is None):
            raise ValueError("a recipe names a codebook format or a scalar spec, not both")
        if self.codebook is not None and self.codebook not in CODEBOOK_FORMATS:
            raise ValueError(f"unknown codebook format {self.codebook!r}; one of {', '.join(CODEBOOK_FORMATS)}")

    @property
    def label(self) -> str:
        if self.codebook:
            what = self.codebook
        else:
            s = self.spec
            what = f"{s.format}/{'chan' if s.group_size == 0 else s.group_size}" + ("/f16" if s.scale_dtype == "float16" else "")
        rot = ("rot+" if self.rotate_outputs else "rot-in+") if self.rotate else ""
        return rot + what + ("+gptq" if self.gptq else "")


def matrix_seed(name: str) -> int:
    """A matrix's rotation seed: fixed by its name, so a run is reproducible."""
    return zlib.crc32(name.encode())


def quantize_matrix(name: str, w: np.ndarray, recipe: Recipe, h: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(the dequantized matrix in its original basis and shape, float32; stored bytes). h: the
    Hessian of its inputs, for GPTQ (None: round to nearest)."""
    shape = np.shape(w)
    rows, k = matrix_shape(shape)
    w = np.asarray(w, np.float64).reshape(rows, k)
    rotation = MatrixRotation.for_shape(rows, k, matrix_seed(name), recipe.rotate_outputs) if recipe.rotate else None
    if rotation is not None:
        w = rotation.rotate_weight(w)
        h = None if h is None else rotation.rotate_hessian(h)
    use_h = h if recipe.gptq else None
    if recipe.codebook is not None:
        fmt = CODEBOOK_FORMATS[recipe.codebook]
        coded = quantize_rtn(w, fmt) if use_h is None else quantize_ldlq(w, fmt, use_h)
        q, nbytes = coded.dequantize().astype(np.float64), coded.nbytes
    else:
        qt = quantize(name, w.astype(np.float32), recipe.spec) if use_h is None else gptq_quantize(name, w, recipe.spec, use_h)
        q, nbytes = np.asarray(dequantize(qt), np.float64).reshape(rows, k), qt.nbytes
    if rotation is not None:
        q = rotation.unrotate_weight(q)
        nbytes += MatrixRotation.STORED_BYTES
    return q.reshape(shape).astype(np.float32), int(nbytes)


def quantize_weights(model: dict, weights: dict[str, np.ndarray], recipes: dict[str, Recipe], run_calibration=None,
                     log=lambda message: None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(weights with every matrix of `recipes` replaced by its dequantized form, stored bytes per
    matrix). run_calibration(weights, hook): calibration.Calibration.run, needed when a recipe asks
    for GPTQ."""
    linear = _linear_weights(model)
    current = dict(weights)
    stored: dict[str, int] = {}
    deferred = {n for n, r in recipes.items() if r.gptq and n in linear}
    for name, recipe in recipes.items():
        if name not in deferred:
            current[name], stored[name] = quantize_matrix(name, weights[name], recipe)
    if deferred:
        if run_calibration is None:
            raise ValueError("GPTQ recipes need calibration runs")
        last: list = [None, None]  # query, key and value read the same input: one Hessian

        def hook(node, x):
            name = node["weight"]
            if name not in deferred or name in stored:
                return
            same = last[0] is not None and last[0].shape == x.shape and np.array_equal(last[0], x)
            h = last[1] if same else hessian(x)
            last[:] = [x, h]
            current[name], stored[name] = quantize_matrix(name, weights[name], recipes[name], h)
            log(f"  {recipes[name].label} {name}")

        run_calibration(current, hook)
        for name in deferred - set(stored):  # layers the calibration never reached
            current[name], stored[name] = quantize_matrix(name, weights[name], recipes[name])
    return current, stored
