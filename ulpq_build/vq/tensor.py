"""Registry codebook formats (formats.py, levels "codebook") as bundle tensors: quantize a matrix into
the stored parts (codes packed by packing.pack_vq, float16 row scales, the rotation seed) and
dequantize them back to the original basis, rotations undone.

Rotation: the inputs of a matrix are rotated by RandomHadamard(k, seed) (incoherence.py) when
  - its row says `rotate`,
  - k has a flat Hadamard (k = 2^m or 12 * 2^m: the WGSL and JS kernels do just those), and
  - it is not a table (roles.is_embedding: "embed", GPT-2's wte/wpe): a gather reads stored rows as they lie,
    and no kernel un-rotates after it; tables are coded unrotated.
The seed is a function of k alone, so every matrix reading the same activations (query, key and
value) has the same rotation: the runtime rotates an input once for all of them and Q|K|V still fuse.
An unrotated matrix stores seed 0. Output rotations (the study's R_out) are not used here: undoing
one would take a Hadamard after every product, before its bias and activation.
"""

from __future__ import annotations

import zlib

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.formats import CODEBOOK_STAGES, CODEBOOK_TABLE_WORDS, GROUP_DIM, Format
from ulpq_build.packing import pack_vq, unpack_vq
from ulpq_build.roles import is_embedding
from ulpq_build.vq.codebook import (
    CODEBOOK_FORMATS,
    CodedMatrix,
    quantize_ldlq,
    quantize_rtn,
)
from ulpq_build.vq.e8 import e8p_table, e81b_grid, lut8_table
from ulpq_build.vq.incoherence import RandomHadamard, split_size


def rotation_seed(k: int) -> int:
    """The nonzero seed of the input rotation of every rotated matrix with k inputs."""
    return (zlib.crc32(f"ulpq-rotation-{k}".encode()) | 1) & 0xFFFFFFFF


def rotation_for(name: str, fmt: Format, k: int) -> RandomHadamard | None:
    """The input rotation a matrix of this format gets (module docstring), or None."""
    if not fmt.rotate or is_embedding(name) or split_size(k)[0] not in (1, 12) or k < 2:
        return None
    return RandomHadamard(k, rotation_seed(k))


def codebook_tables() -> np.ndarray:
    """The bundle's one codebook buffer: every stage's 256-entry decode table at its registry offset."""
    tables = np.zeros(CODEBOOK_TABLE_WORDS, np.uint32)
    makers = {"e8p": e8p_table, "e81b": lambda: lut8_table(e81b_grid())}
    for name, stage in CODEBOOK_STAGES.items():
        tables[stage["offset"] : stage["offset"] + 256] = makers[name]()
    return tables


def manifest_codebooks() -> dict:
    """The manifest's `codebooks` section (bundles with codebook formats): the stages, their tables, and
    the bytes those take in the bundle (counted once per bundle, beside every tensor's own bytes)."""
    return {"stages": CODEBOOK_STAGES, "tables": [int(v) for v in codebook_tables()], "bytes": 4 * CODEBOOK_TABLE_WORDS}


def quantize_codebook(name: str, w: np.ndarray, fmt: Format, h: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The stored parts of matrix w [rows, k] (float) in codebook format `fmt`; h: its inputs' Hessian
    [k, k] for block LDLQ (GPTQ over groups of 8), None to round each group to its nearest codeword."""
    rows, k = w.shape
    if k % GROUP_DIM:
        raise UserError(f"tensor {name!r}: format {fmt.name} codes groups of {GROUP_DIM} inputs, but its rows hold {k}; "
                        f"choose a scalar format for it (e.g. int2 or int4)")
    rotation = rotation_for(name, fmt, k)
    w = np.asarray(w, np.float64)
    if rotation is not None:
        w = rotation.forward(w)  # each row r -> R r: W R^T
        h = None if h is None else rotation.forward(rotation.forward(h).T)
    cb = CODEBOOK_FORMATS[fmt.name]
    coded = quantize_rtn(w, cb) if h is None else quantize_ldlq(w, cb, h)
    parts = {"codes": pack_vq(coded.codes, fmt), "scales": coded.scales.reshape(rows, 1).astype(np.float16)}
    if fmt.rotate:
        parts["seeds"] = np.array([0 if rotation is None else rotation.seed], np.uint32)
    return parts


def decode_rotated(parts: dict[str, np.ndarray], fmt: Format, rows: int, k: int) -> np.ndarray:
    """The stored matrix as the kernels see it (still rotated), float32 [rows, k]."""
    codes = unpack_vq(parts["codes"], fmt, k)
    return CodedMatrix(CODEBOOK_FORMATS[fmt.name], codes, parts["scales"].reshape(rows)).dequantize().astype(np.float32)


def check_codebook_parts(parts: dict[str, np.ndarray], fmt: Format, k: int, where: str) -> None:
    """Parts read from a file decode to finite values and a rotation the runtime can run."""
    if not np.isfinite(parts["scales"].astype(np.float32)).all():
        raise UserError(f"{where}: its scales hold NaN or Inf; the file is damaged, re-run `python -m ulpq_build quantize`")
    seed = int(parts["seeds"][0]) if "seeds" in parts else 0
    if seed and split_size(k)[0] not in (1, 12):
        raise UserError(f"{where}: a rotation of {k} inputs, which no kernel runs; the file is damaged, re-run quantize")


def dequantize_codebook(parts: dict[str, np.ndarray], fmt: Format, rows: int, k: int, where: str = "tensor") -> np.ndarray:
    """The matrix in its original basis (the input rotation undone), float32 [rows, k]."""
    check_codebook_parts(parts, fmt, k, where)
    w = decode_rotated(parts, fmt, rows, k)
    seed = int(parts["seeds"][0]) if "seeds" in parts else 0
    if seed:
        w = RandomHadamard(k, seed).inverse(w.astype(np.float64)).astype(np.float32)
    return w
