"""Vector-quantized matrices: every row of W [rows, k] is cut into groups of 8 consecutive inputs,
each group coded jointly by an E8 codebook (e8.py), with one float16 scale per row:

    w[r, 8j:8j+8] = scale[r] * (c1 + c2 / resid_scale)      c1 from the first stage, c2 from the residual one

Formats (after QuIP#'s, github.com/Cornell-RelaxML/quip-sharp lib/codebook/; `opt_scale` is the
RMS the codebook is tuned for, `resid_scale` how much the residual is magnified before its own
codebook: QuIP#'s constants, except where CODEBOOK_FORMATS says otherwise; row_scales then
searches a factor around `opt_scale` per matrix):

    e81b       E81B alone                        8 bits per 8 weights  = 1 bit per weight (this
               project's: for tables that tolerate it, such as a word-embedding table)
    e8p        E8P alone                        16 bits per 8 weights  = 2 bits per weight
    e8p-rvq3   E8P + E81B on the residual       24 bits per 8 weights  = 3 (QuIP#'s E8P12RVQ3B)
    e8p-rvq4   E8P + E8P on the residual        32 bits per 8 weights  = 4 (QuIP#'s E8P12RVQ4B)

plus 16 bits of scale per row. Codes are chosen by rounding to the nearest codeword (`quantize_rtn`)
or with GPTQ-style error feedback over blocks of 8 columns (`quantize_ldlq`: QuIP#'s BlockLDLQ,
i.e. GPTQ with the columns of one group quantized jointly), from the Hessian that gptq.py builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from ulpq_build.formats import CODEBOOK_FORMATS as REGISTRY_CODEBOOKS
from ulpq_build.formats import FORMATS
from ulpq_build.gptq import BLOCK, DAMPING, upper_cholesky_of_inverse
from ulpq_build.vq.e8 import DIM, e8p_grid, e8p_nearest, e81b_grid, e81b_nearest

SCALE_DTYPE = np.float16
SCALE_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2)  # tried on each matrix's rms scale
SCALE_SAMPLE_ROWS = 192  # rows that choose the factor


STAGES = {  # codebook: (nearest search, decode table, bits per group of 8)
    "e8p": (e8p_nearest, e8p_grid, 16),
    "e81b": (e81b_nearest, lambda: e81b_grid().astype(np.float32), 8),
}


@dataclass(frozen=True)
class CodebookFormat:
    """Stages: the first codes the group, each further one the residual left, magnified by
    resid_scale before its search (and divided by it on decoding)."""

    name: str
    stages: tuple[str, ...]
    opt_scale: float
    resid_scale: float = 1.0

    @property
    def code_bits(self) -> int:
        """Stored bits per group of 8 weights."""
        return sum(STAGES[s][2] for s in self.stages)

    def stored_bytes(self, rows: int, k: int) -> int:
        """Codes and float16 row scales of a [rows, k] matrix."""
        return rows * (k // DIM) * self.code_bits // 8 + rows * np.dtype(SCALE_DTYPE).itemsize

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes [n, stages], values [n, 8]) for groups x [n, 8] already divided by their scale."""
        x = np.asarray(x, np.float32).reshape(-1, DIM)
        codes, values, magnify = [], np.zeros_like(x), np.float32(1.0)
        for stage in self.stages:
            c, v = STAGES[stage][0]((x - values) * magnify)
            codes.append(c)
            values = values + v / magnify
            magnify = magnify * np.float32(self.resid_scale)
        return np.stack(codes, axis=1).astype(np.int32), values

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """values [n, 8] of codes [n, stages] (by table lookup)."""
        values, magnify = 0, np.float32(1.0)
        for i, stage in enumerate(self.stages):
            values = values + STAGES[stage][1]()[codes[:, i]] / magnify
            magnify = magnify * np.float32(self.resid_scale)
        return values


# The registry's codebook rows (formats.py), the single source of their stages and constants
CODEBOOK_FORMATS = {
    f.name: CodebookFormat(f.name, f.stages, f.opt_scale, f.resid_scale)
    for f in (FORMATS[name] for name in REGISTRY_CODEBOOKS)
}


@dataclass
class CodedMatrix:
    """A matrix in a codebook format: codes [rows, k/8, stages] and float16 scales [rows]."""

    fmt: CodebookFormat
    codes: np.ndarray
    scales: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape[0], self.codes.shape[1] * DIM

    @property
    def nbytes(self) -> int:
        return self.fmt.stored_bytes(*self.shape)

    def dequantize(self) -> np.ndarray:
        rows, k = self.shape
        values = self.fmt.decode(self.codes.reshape(-1, self.codes.shape[2])).reshape(rows, k)
        return values * self.scales.astype(np.float32)[:, None]


def _check(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] % DIM:
        raise ValueError(f"codebook formats need a matrix whose rows are a multiple of {DIM} long, not {w.shape}")
    return w


def row_scales(w: np.ndarray, fmt: CodebookFormat) -> np.ndarray:
    """float16 scales, one per row: the row's RMS over the codebook's `opt_scale`, times the factor of
    SCALE_FACTORS that gives the least squared error on a sample of rows (rounding to nearest)."""
    w = np.asarray(w, np.float32)
    rms = np.sqrt(np.mean(w.astype(np.float64) ** 2, axis=1)).astype(np.float32)
    rms = np.where(rms > 0, rms, np.float32(1.0))
    base = rms / np.float32(fmt.opt_scale)
    sample = np.linspace(0, len(w) - 1, min(len(w), SCALE_SAMPLE_ROWS)).astype(np.int64)
    best, best_err = 1.0, np.inf
    for factor in SCALE_FACTORS:
        s = (base[sample] * factor).astype(SCALE_DTYPE).astype(np.float32)
        _, v = fmt.nearest(w[sample] / s[:, None])
        err = float(np.sum((v.reshape(len(sample), -1) * s[:, None] - w[sample]) ** 2))
        if err < best_err:
            best, best_err = factor, err
    return (base * best).astype(SCALE_DTYPE)


def quantize_rtn(w: np.ndarray, fmt: CodebookFormat) -> CodedMatrix:
    """Every group rounded to its nearest codeword, under row_scales."""
    w = _check(w)
    scales = row_scales(w, fmt)
    s = scales.astype(np.float32)
    codes, _ = fmt.nearest(np.asarray(w, np.float32) / s[:, None])
    return CodedMatrix(fmt, codes.reshape(w.shape[0], w.shape[1] // DIM, -1), scales)


def quantize_ldlq(w: np.ndarray, fmt: CodebookFormat, h: np.ndarray) -> CodedMatrix:
    """GPTQ over blocks of 8 columns (QuIP#'s BlockLDLQ): the 8 columns of a group are coded jointly,
    and their error E is fed into the later columns as GPTQ does for one column, E U_bb^-1 U_b,rest
    with U the upper Cholesky factor of H^-1 (gptq.upper_cholesky_of_inverse; for a single column it
    is GPTQ's err / U_ii update). h: the Hessian of this matrix's inputs [k, k] (gptq.hessian), in the
    same basis as w (rotate it with the weights). Columns in their natural order: no act-order, so
    each group of 8 stays 8 consecutive inputs."""
    w = _check(w)
    rows, k = w.shape
    scales = row_scales(w, fmt)
    s = scales.astype(np.float64)[:, None]
    H = np.array(h, np.float64, copy=True)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W = np.asarray(w, np.float64).copy()
    W[:, dead] = 0.0
    H[np.diag_indices(k)] += DAMPING * np.mean(np.diag(H))
    U = upper_cholesky_of_inverse(H)
    codes = np.zeros((rows, k // DIM, len(fmt.stages)), np.int32)
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        for j in range(0, i2 - i1, DIM):
            cols = slice(j, j + DIM)
            c, v = fmt.nearest((W1[:, cols] / s).astype(np.float32))
            codes[:, (i1 + j) // DIM] = c
            q = v.astype(np.float64) * s
            ubb = U[i1 + j : i1 + j + DIM, i1 + j : i1 + j + DIM]
            err = solve_triangular(ubb, (W1[:, cols] - q).T, trans="T", lower=False).T  # (W_b - Q_b) U_bb^-1
            W1[:, j + DIM :] -= err @ U[i1 + j : i1 + j + DIM, i1 + j + DIM : i2]
            E1[:, cols] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return CodedMatrix(fmt, codes, scales)
