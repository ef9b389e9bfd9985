"""Incoherence processing: random orthogonal rotations that spread every weight matrix's outliers
over all its entries, so that a codebook (or a scalar grid) fitted to Gaussian-like data fits them.

A rotation of size n is R = (B kron H_p / sqrt(p)) D, stored as a seed:

    D     a diagonal of random signs drawn from the seed (`sign_bits`: a 32-bit hash of seed and index,
          which the WGSL and JS runtimes compute the same way)
    H_p   the Sylvester Walsh-Hadamard matrix of order p = 2^m (the largest power of two dividing n,
          or n / 12 when that leaves a factor 12), applied by the fast transform (n log n adds)
    B     a small orthogonal block for what is left of n (n = b * p):
            b = 1        nothing (n a power of two)
            b = 12       the Paley Hadamard matrix of order 12 / sqrt(12): MiniLM's 384 = 12 * 32
                         and 1536 = 12 * 128 are rotated by flat Hadamard matrices, as QuIP#'s
                         `matmul_hadU` does with its had12 block (Tseng et al. 2024, QuIP#, section 3)
            other b      a seeded random orthogonal b x b matrix (QR of a Gaussian; b is odd here): still
                         exact and orthogonal, but its entries are not flat, so it spreads outliers
                         less evenly, and it costs b^2 per b values (fine for b up to ~64)

Padding n up to a power of two was the other choice; it was not taken because the padded matrix
would have to be stored (384 -> 512 is a third more codes), and a rotation that changes the shape
does not restore the original basis exactly on dequantize.

A linear layer y = W x with input rotation R_in and output rotation R_out stores
W' = R_out W R_in^T; the runtime computes y = R_out^T (W' (R_in x)); `unrotate_weight` gives W back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform along the last axis (length a power of two), in the
    Sylvester (natural) order: x @ H_p with H_{2p} = [[H_p, H_p], [H_p, -H_p]] (symmetric). A new array."""
    x = np.array(x, copy=True)
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht: length {n} is not a power of two")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a = y[..., 0, :].copy()
        y[..., 0, :] += y[..., 1, :]
        y[..., 1, :] = a - y[..., 1, :]
        h *= 2
    return x


@cache
def paley_hadamard_12() -> np.ndarray:
    """The Hadamard matrix of order 12 by Paley's first construction (q = 11, q = 3 mod 4):
    H = I + S, S = [[0, 1^T], [-1, Q]], Q the Jacobsthal matrix of the quadratic residues mod 11."""
    q = 11
    residues = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if a in residues else -1 for a in range(1, q)], np.float64)
    jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]
    s = np.zeros((q + 1, q + 1))
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jacobsthal
    h = np.eye(q + 1) + s
    assert np.array_equal(h @ h.T, (q + 1) * np.eye(q + 1))
    return h


def split_size(n: int) -> tuple[int, int]:
    """(b, p) with n = b * p, p the power-of-two part handled by the fast transform (see the module
    docstring: b = 12 whenever n = 3 * 2^m with m >= 2)."""
    if n < 1:
        raise ValueError(f"rotation size {n} must be positive")
    p = n & -n  # the largest power of two dividing n
    b = n // p
    if b == 3 and p >= 4:
        return 12, p // 4
    return b, p


@dataclass(frozen=True)
class RandomHadamard:
    """R = (B kron H_p / sqrt(p)) D of size n, from `seed` alone (module docstring)."""

    n: int
    seed: int

    @property
    def block(self) -> np.ndarray:
        return _block(self.n, self.seed)

    @property
    def signs(self) -> np.ndarray:
        return _signs(self.n, self.seed)

    @property
    def flat(self) -> bool:
        """Whether every entry of R has magnitude 1/sqrt(n) (a true randomized Hadamard transform)."""
        return split_size(self.n)[0] in (1, 12)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """R x for every vector x along the last axis (x @ R^T for a matrix of row vectors)."""
        x = np.asarray(x)
        if x.shape[-1] != self.n:
            raise ValueError(f"rotation of size {self.n} applied to vectors of length {x.shape[-1]}")
        return self._mix(x * self.signs.astype(x.dtype, copy=False), transpose=False)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """R^T y along the last axis: forward's exact inverse (R is orthogonal)."""
        y = np.asarray(y)
        if y.shape[-1] != self.n:
            raise ValueError(f"rotation of size {self.n} applied to vectors of length {y.shape[-1]}")
        return self._mix(y, transpose=True) * self.signs.astype(y.dtype, copy=False)

    def _mix(self, x: np.ndarray, transpose: bool) -> np.ndarray:
        b, p = split_size(self.n)
        lead = x.shape[:-1]
        dtype = x.dtype.type if np.issubdtype(x.dtype, np.floating) else np.float64
        y = np.asarray(x, dtype).reshape(*lead, b, p)
        if b > 1:
            block = self.block.astype(dtype)
            # (B kron H) x = B (x viewed as b x p) H: the block mixes the b rows of each vector
            y = np.einsum("ij,...jk->...ik", block.T if transpose else block, y)
        y = fwht(y) * dtype(1.0 / np.sqrt(p))  # H_p is symmetric: the same transform both ways
        return y.reshape(*lead, self.n)

    def matrix(self) -> np.ndarray:
        """R as a dense matrix (tests and small checks only)."""
        return self.forward(np.eye(self.n)).T


def sign_bits(n: int, seed: int) -> np.ndarray:
    """1 where D's entry i is -1: the top bit of a 32-bit integer hash (Wellons' lowbias32) of
    seed + i * 0x9E3779B9 (mod 2^32). A counter-based hash rather than numpy's generator, so the
    WGSL kernel and the JS runtime draw the same signs from the seed alone, with no table."""
    x = (np.uint32(seed) + np.arange(n, dtype=np.uint32) * np.uint32(0x9E3779B9)).astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return (x >> np.uint32(31)).astype(np.uint8)


@lru_cache(maxsize=64)
def _signs(n: int, seed: int) -> np.ndarray:
    return (1 - 2 * sign_bits(n, seed).astype(np.float64))


@lru_cache(maxsize=64)
def _block(n: int, seed: int) -> np.ndarray:
    b, _ = split_size(n)
    if b == 1:
        return np.ones((1, 1))
    if b == 12:
        return paley_hadamard_12() / np.sqrt(12.0)
    # a different stream from the signs' (same seed), so the two are independent
    rng = np.random.default_rng([seed, 1])
    q, r = np.linalg.qr(rng.standard_normal((b, b)))
    return q * np.sign(np.diag(r))[None, :]  # Haar-distributed (Mezzadri's sign fix)


@dataclass(frozen=True)
class MatrixRotation:
    """The rotations of one [rows, k] matrix: `inner` on its inputs, `outer` (or None) on its outputs.
    Stored as two seeds (STORED_BYTES)."""

    inner: RandomHadamard
    outer: RandomHadamard | None = None

    STORED_BYTES = 8  # two u32 seeds (the sizes follow from the matrix's shape)

    @classmethod
    def for_shape(cls, rows: int, k: int, seed: int, rotate_outputs: bool = True) -> MatrixRotation:
        """Input rotation always; output rotation only when rows has a flat Hadamard (b in 1, 12):
        a word table's 30522 rows would need a random orthogonal 15261 x 15261 block."""
        outer = None
        if rotate_outputs and split_size(rows)[0] in (1, 12) and rows > 1:
            outer = RandomHadamard(rows, (seed * 2 + 1) & 0xFFFFFFFF)
        return cls(RandomHadamard(k, (seed * 2) & 0xFFFFFFFF), outer)

    def rotate_weight(self, w: np.ndarray) -> np.ndarray:
        """W' = R_out W R_in^T."""
        w = self.inner.forward(w)  # each row r -> R_in r, i.e. W R_in^T
        if self.outer is not None:
            w = self.outer.forward(w.T).T
        return w

    def unrotate_weight(self, w: np.ndarray) -> np.ndarray:
        """W = R_out^T W' R_in: the original basis, exactly (up to float rounding)."""
        if self.outer is not None:
            w = self.outer.inverse(w.T).T
        return self.inner.inverse(w)

    def rotate_hessian(self, h: np.ndarray) -> np.ndarray:
        """R_in H R_in^T: the Hessian of the rotated inputs R_in x (H = E[x x^T] up to a factor)."""
        return self.inner.forward(self.inner.forward(h).T)

    def rotate_input(self, x: np.ndarray) -> np.ndarray:
        return self.inner.forward(x)

    def restore_output(self, y: np.ndarray) -> np.ndarray:
        return y if self.outer is None else self.outer.inverse(y)
