"""E8-lattice codebooks for groups of 8 weights, after QuIP# (Tseng, Chee, Sun, Kuleshov, De Sa,
"QuIP#: Even Better LLM Quantization with Hadamard Incoherence and Lattice Codebooks", ICML 2024),
following its reference code github.com/Cornell-RelaxML/quip-sharp, lib/codebook/:

E8P (latticee8_padded12.py), 65536 codewords, 16 bits per 8 weights (2 bits per weight):
    abs grid  256 vectors a of non-negative half-integers: the 227 distinct |v| of the points v of
              D8 + 1/2 (half-integer vectors with an even sum) with |v|^2 <= 10, then QuIP#'s 29
              vectors of norm^2 12 (five 3/2 and three 1/2), in that order (the 227 sorted
              lexicographically, as torch.unique sorts them)
    codeword  s * a + t, s a sign vector with (#negative signs) = sum(a) (mod 2), so that s * a is
              a point of E8 (an even coordinate sum), and t = +1/4 or -1/4 on every coordinate:
              256 abs vectors x 128 sign vectors x 2 shifts.
    code      this module's own 16-bit layout (QuIP#'s packs the same set differently, for its CUDA
              kernel; tests/test_e8_codebook.py checks that the two sets are equal):
                  bit 0       shift: 0 -> +1/4, 1 -> -1/4
                  bits 1..7   signs of coordinates 0..6 (1 = negative)
                  bits 8..15  index into the abs grid
              coordinate 7's sign follows from the parity rule above, so a decoder needs the abs
              grid (256 x 8 nibbles, or 256 u32 packed), its parity bits, and three bit operations.
E81B (latticee8_padded12_rvq3bit.py get_e81bgrid), 256 codewords, 8 bits per 8 weights: the
    E8 points with |v|^2 <= 2 (zero and the 240 roots) and 15 of the 16 vectors +-2 e_i (all but
    -2 e_7), the residual stage of QuIP#'s 3-bit E8P12RVQ3B.

Nearest-codeword search: exact, and structured rather than brute force over 65536 codewords. For
a shift t and an abs vector a, the best sign vector is sign(y) (y = x - t) unless its parity is
wrong; then one coordinate must flip, and the cheapest is the one with the least a_i |y_i|
(flipping it costs 4 a_i |y_i|). So per group: a 256-column matrix product for |y| . a, the
parity penalty for each a, twice (one per shift).
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

DIM = 8
CHUNK = 4096  # groups per search chunk: the [chunk, 256] score arrays stay a few MiB

NORM12 = np.array([
    [3, 1, 1, 1, 3, 3, 3, 3], [1, 3, 1, 1, 3, 3, 3, 3], [1, 1, 3, 1, 3, 3, 3, 3], [1, 1, 1, 3, 3, 3, 3, 3],
    [3, 3, 3, 1, 3, 3, 1, 1], [3, 3, 3, 1, 3, 1, 3, 1], [3, 3, 3, 1, 1, 3, 3, 1], [3, 3, 3, 1, 3, 1, 1, 3],
    [3, 3, 3, 1, 1, 3, 1, 3], [3, 3, 3, 1, 1, 1, 3, 3], [3, 3, 1, 3, 3, 3, 1, 1], [3, 3, 1, 3, 3, 1, 3, 1],
    [3, 3, 1, 3, 1, 3, 3, 1], [3, 3, 1, 3, 3, 1, 1, 3], [3, 3, 1, 3, 1, 3, 1, 3], [3, 3, 1, 3, 1, 1, 3, 3],
    [3, 1, 3, 3, 3, 3, 1, 1], [3, 1, 3, 3, 3, 1, 3, 1], [3, 1, 3, 3, 1, 3, 3, 1], [3, 1, 3, 3, 3, 1, 1, 3],
    [3, 1, 3, 3, 1, 3, 1, 3], [1, 3, 3, 3, 1, 1, 3, 3], [1, 3, 3, 3, 3, 3, 1, 1], [1, 3, 3, 3, 3, 1, 3, 1],
    [1, 3, 3, 3, 1, 3, 3, 1], [1, 3, 3, 3, 3, 1, 1, 3], [1, 3, 3, 3, 1, 3, 1, 3], [1, 1, 3, 3, 1, 3, 3, 3],
    [3, 3, 1, 1, 3, 3, 3, 1],
], np.float64) / 2  # QuIP#'s get_norm12(), verbatim


@cache
def abs_grid() -> np.ndarray:
    """The 256 x 8 abs vectors of E8P (module docstring). Every |v| of a half-integer vector with
    |v|^2 <= 10 occurs for some v with an even sum (one sign flip changes the sum's parity), so the
    abs vectors are simply those of {1/2, 3/2, 5/2, 7/2}^8 within the ball."""
    values = np.array(list(itertools.product((0.5, 1.5, 2.5, 3.5), repeat=DIM)))
    inside = values[(values**2).sum(axis=1) <= 10]
    d8abs = np.unique(inside, axis=0)  # lexicographic, as torch.unique(dim=0)
    grid = np.concatenate([d8abs, NORM12])
    assert grid.shape == (256, DIM), grid.shape
    grid.setflags(write=False)
    return grid


@cache
def abs_parity() -> np.ndarray:
    """sum(a) mod 2 per abs vector: the parity that the count of negative signs must have."""
    return (np.rint(abs_grid().sum(axis=1)).astype(np.int64) % 2).astype(np.uint8)


def e8p_decode(codes: np.ndarray) -> np.ndarray:
    """Codewords [..., 8] (float32) of 16-bit E8P codes (this module's layout), computed from the bits."""
    codes = np.asarray(codes).astype(np.int64)
    a = abs_grid()[codes >> 8]
    sign_bits = (codes[..., None] >> np.arange(1, 8)) & 1  # coordinates 0..6
    last = (sign_bits.sum(axis=-1) + abs_parity()[codes >> 8]) & 1
    negative = np.concatenate([sign_bits, last[..., None]], axis=-1)
    shift = np.where(codes & 1, -0.25, 0.25)
    return (a * (1 - 2 * negative) + shift[..., None]).astype(np.float32)


@cache
def e8p_grid() -> np.ndarray:
    """All 65536 codewords, row c = e8p_decode(c) (float32, 2 MiB): decoding by lookup."""
    grid = e8p_decode(np.arange(1 << 16))
    grid.setflags(write=False)
    return grid


def e8p_nearest(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint16 [n], codewords float32 [n, 8]): the nearest E8P codeword to each row of x [n, 8]
    in Euclidean distance (exact; ties broken towards the lower abs index, then +1/4)."""
    x = np.asarray(x, np.float32).reshape(-1, DIM)
    codes = np.empty(len(x), np.uint16)
    for start in range(0, len(x), CHUNK):
        codes[start : start + CHUNK] = _e8p_chunk(x[start : start + CHUNK])
    return codes, e8p_grid()[codes]


@cache
def _search_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The abs grid reordered even-parity first (so each parity is one contiguous slice of columns),
    that order, the [9, 256] matrix whose product with [|y|, 1] is || |y| - a ||^2 - |y|^2, and the
    count of even-parity abs vectors."""
    order = np.argsort(abs_parity(), kind="stable")
    grid = abs_grid()[order].astype(np.float32)
    score = np.concatenate([-2 * grid.T, (grid**2).sum(axis=1)[None, :]]).astype(np.float32)
    return grid, order, score, int(np.count_nonzero(abs_parity() == 0))


def _e8p_chunk(x: np.ndarray) -> np.ndarray:
    grid, order, score, n_even = _search_tables()
    n = len(x)
    best_cost = np.full(n, np.inf, np.float32)
    best_code = np.zeros(n, np.int64)
    ones = np.ones((n, 1), np.float32)
    for shift_bit, t in ((0, 0.25), (1, -0.25)):
        y = x - np.float32(t)
        ay = np.abs(y)
        negative = y < 0
        odd = (negative.sum(axis=1) & 1).astype(bool)
        cost = np.hstack([ay, ones]) @ score  # || |y| - a ||^2 - |y|^2, columns in `order`
        chosen = np.empty(n, np.int64)  # column of the winner
        chosen_cost = np.empty(n, np.float32)
        flip_at = np.full(n, -1, np.int64)
        for parity in (False, True):
            rows = np.nonzero(odd == parity)[0]
            if not len(rows):
                continue
            # abs vectors whose parity matches sign(y)'s need no flip; the others need the cheapest one
            right = slice(n_even, None) if parity else slice(0, n_even)
            wrong = slice(0, n_even) if parity else slice(n_even, None)
            c_right, c_wrong = cost[rows, right], cost[rows, wrong]
            r_arg = c_right.argmin(axis=1)
            r_best = c_right[np.arange(len(rows)), r_arg]
            # a wrong-parity abs vector wins only if its cost before the flip penalty is below the best
            # right-parity cost: the penalty 4 min_i a_i |y_i| is computed for those pairs alone
            g, a = np.nonzero(c_wrong < r_best[:, None])
            w_cols = grid[wrong]
            prod = ay[rows[g]] * w_cols[a]
            penalised = np.full(c_wrong.shape, np.inf, np.float32)
            penalised[g, a] = c_wrong[g, a] + 4 * prod.min(axis=1)
            w_arg = penalised.argmin(axis=1)
            w_best = penalised[np.arange(len(rows)), w_arg]
            use_wrong = w_best < r_best
            chosen[rows] = np.where(use_wrong, w_arg + wrong.start, r_arg + right.start)
            chosen_cost[rows] = np.where(use_wrong, w_best, r_best)
            flipped = rows[use_wrong]
            flip_at[flipped] = (ay[flipped] * grid[chosen[flipped]]).argmin(axis=1)
        neg = negative
        hit = np.nonzero(flip_at >= 0)[0]
        neg[hit, flip_at[hit]] ^= True
        sign_bits = (neg[:, :7].astype(np.int64) << np.arange(1, 8)).sum(axis=1)
        code = (order[chosen].astype(np.int64) << 8) | sign_bits | shift_bit
        c = chosen_cost + (ay**2).sum(axis=1)
        better = c < best_cost
        best_cost = np.where(better, c, best_cost)
        best_code = np.where(better, code, best_code)
    return best_code.astype(np.uint16)


@cache
def e81b_grid() -> np.ndarray:
    """The 256 x 8 codewords of QuIP#'s 1-bit E8 residual codebook (module docstring), in its order:
    integer points before half-integer ones, each in itertools/cartesian_prod order, then +-2 e_i."""
    # |v|^2 <= 2 leaves integer coordinates in {-1, 0, 1} and half-integer ones in {-1/2, 1/2}:
    # enumerating those keeps QuIP#'s order (cartesian_prod over -4..3, then over -3.5..3.5, filtered)
    ints = np.array(list(itertools.product((-1, 0, 1), repeat=DIM)), np.float64)
    halves = np.array(list(itertools.product((-0.5, 0.5), repeat=DIM)), np.float64)
    candidates = np.concatenate([ints, halves])
    keep = (np.rint(candidates.sum(axis=1)).astype(np.int64) % 2 == 0) & ((candidates**2).sum(axis=1) <= 2)
    norm4 = np.concatenate([2 * np.eye(DIM), -2 * np.eye(DIM)[:7]])
    grid = np.concatenate([candidates[keep], norm4])
    assert grid.shape == (256, DIM), grid.shape
    grid.setflags(write=False)
    return grid


def e81b_nearest(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 [n], codewords float32 [n, 8]): nearest E81B codeword, by brute force over 256."""
    x = np.asarray(x, np.float32).reshape(-1, DIM)
    grid = e81b_grid().astype(np.float32)
    grid_sq = (grid**2).sum(axis=1)
    codes = np.empty(len(x), np.uint8)
    for start in range(0, len(x), CHUNK):
        part = x[start : start + CHUNK]
        codes[start : start + CHUNK] = (2 * (part @ grid.T) - grid_sq[None, :]).argmax(axis=1)
    return codes, grid[codes]


def quip_sharp_e8p_grid() -> np.ndarray:
    """QuIP#'s own 65536 x 8 E8P grid, by its construction (get_packed_abs_grid + get_full_grid of
    latticee8_padded12.py, vectorised): the oracle our codebook is compared with as a set."""
    cba = abs_grid()[:, [0, 2, 4, 6, 1, 3, 5, 7]].copy()
    cba[:, 7] *= 1 - 2 * (cba.sum(axis=1) % 2)
    c = np.arange(1 << 16)
    signs = c & 255
    abs_index = c >> 8
    parity = np.bitwise_xor.reduce((signs[:, None] >> np.arange(8)) & 1, axis=1)
    signs = signs ^ parity
    shuffle_map = [0, 4, 1, 5, 2, 6, 3, 7]
    grid = np.zeros((1 << 16, DIM))
    for i in range(DIM):
        ii = shuffle_map[i]
        grid[:, i] = cba[abs_index, ii] * np.where((signs >> ii) & 1, -1, 1)
    return grid + np.where(parity, -0.25, 0.25)[:, None]


def e8p_table() -> np.ndarray:
    """E8P's decode table for kernels (formats.CODEBOOK_STAGES "e8p"): entry i = the abs vector i as
    8 2-bit magnitudes m_j = |a_j| - 1/2 at bits 2j, 2j+1, and its parity at bit 16."""
    m = np.rint(abs_grid() - 0.5).astype(np.uint32)
    assert m.max() <= 3
    return ((m << (2 * np.arange(DIM, dtype=np.uint32))).sum(axis=1, dtype=np.uint32)
            | (abs_parity().astype(np.uint32) << np.uint32(16))).astype(np.uint32)


def lut8_table(grid: np.ndarray) -> np.ndarray:
    """A 256-codeword decode table (formats.CODEBOOK_STAGES "lut8"): entry c = 8 nibbles u_j with
    coordinate j = u_j / 2 - 2 (every value of E81B is a multiple of 1/2 in [-2, 2])."""
    u = np.rint(np.asarray(grid, np.float64) * 2 + 4)
    assert len(u) == 256 and u.min() >= 0 and u.max() <= 15 and np.array_equal((u - 4) / 2, grid)
    return (u.astype(np.uint32) << (4 * np.arange(DIM, dtype=np.uint32))).sum(axis=1, dtype=np.uint32).astype(np.uint32)
