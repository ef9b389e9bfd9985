"""E8 codebooks (ulpq_build/vq/e8.py) and codebook-quantized matrices (vq/codebook.py): the codebook
equals QuIP#'s as a set, the structured nearest search equals brute force, codes decode from their
bits, and block GPTQ (LDLQ) lowers the Hessian-weighted error below rounding."""

import numpy as np
import pytest

from ulpq_build.gptq import hessian
from ulpq_build.vq import e8
from ulpq_build.vq.codebook import CODEBOOK_FORMATS, quantize_ldlq, quantize_rtn
from ulpq_build.vq.incoherence import MatrixRotation
from ulpq_build.vq.model import Recipe, quantize_matrix

DIST_TOL = 1e-5  # squared distances of float32 searches agree to this (values are O(1))


def test_abs_grid_has_quip_sharp_counts():
    grid = e8.abs_grid()
    assert grid.shape == (256, 8)
    assert len(np.unique(grid, axis=0)) == 256
    within = (grid**2).sum(axis=1) <= 10
    assert within.sum() == 227  # QuIP#'s docstring: |D8^| has 227 entries; then 29 of norm^2 12
    np.testing.assert_allclose((grid[~within] ** 2).sum(axis=1), 12)


def test_e8p_is_quip_sharps_codebook_as_a_set_and_lies_on_shifted_e8():
    ours = e8.e8p_grid().astype(np.float64)
    theirs = e8.quip_sharp_e8p_grid()
    assert len(np.unique(ours, axis=0)) == 1 << 16
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(theirs, axis=0))
    for shift_bit, t in ((0, 0.25), (1, -0.25)):
        v = ours[np.arange(1 << 16) & 1 == shift_bit] - t
        assert np.all(np.abs(v * 2 - np.rint(v * 2)) < 1e-9)  # half-integers
        assert np.all(np.rint(v.sum(axis=1)) % 2 == 0)  # even sum: points of E8


def test_decoding_from_bits_matches_the_layout():
    """Bits 8..15 abs index, bits 1..7 signs of coordinates 0..6, bit 0 the shift; coordinate 7's
    sign from the parity rule."""
    code = (200 << 8) | (0b1010011 << 1) | 1
    a = e8.abs_grid()[200]
    negative = [1, 1, 0, 0, 1, 0, 1]
    negative.append((sum(negative) + round(a.sum())) % 2)
    expected = a * (1 - 2 * np.array(negative)) - 0.25
    np.testing.assert_allclose(e8.e8p_decode(np.array([code]))[0], expected)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_e8p_search_equals_brute_force(rng, scale):
    x = (rng.standard_normal((600, 8)) * scale).astype(np.float32)
    x[:20] = 0.0  # exact ties and zero coordinates
    x[20:40, 3] = 0.0
    codes, values = e8.e8p_nearest(x)
    grid = e8.e8p_grid()
    np.testing.assert_array_equal(values, grid[codes])
    g = grid.astype(np.float64)
    d = (x.astype(np.float64) ** 2).sum(axis=1)[:, None] - 2 * x.astype(np.float64) @ g.T + (g**2).sum(axis=1)[None, :]
    chosen = d[np.arange(len(x)), codes.astype(np.int64)]
    assert np.all(chosen <= d.min(axis=1) + DIST_TOL)


def test_e81b_grid_and_search(rng):
    grid = e8.e81b_grid()
    assert len(np.unique(grid, axis=0)) == 256
    norms = (grid**2).sum(axis=1)
    assert (norms == 0).sum() == 1 and (norms == 2).sum() == 240 and (norms == 4).sum() == 15
    x = rng.standard_normal((500, 8)).astype(np.float32)
    codes, values = e8.e81b_nearest(x)
    np.testing.assert_array_equal(values, grid[codes].astype(np.float32))
    d = ((x[:, None, :] - grid[None].astype(np.float32)) ** 2).sum(axis=-1)
    assert np.all(d[np.arange(500), codes] <= d.min(axis=1) + DIST_TOL)


def test_e8p_beats_scalar_2_bit_on_gaussian_data(rng):
    """E8P at its QuIP# scale: mean squared error ~0.092 per coordinate on unit Gaussians; the best
    scalar 2-bit quantizer (Lloyd-Max) reaches 0.1175."""
    x = rng.standard_normal((20000, 8)).astype(np.float32)
    s = CODEBOOK_FORMATS["e8p"].opt_scale
    _, v = e8.e8p_nearest(x * s)
    mse = float(np.mean((v / s - x) ** 2))
    assert 0.085 < mse < 0.1


@pytest.mark.parametrize("name,bits,mse_max", [("e81b", 1, 0.36), ("e8p", 2, 0.1), ("e8p-rvq3", 3, 0.035), ("e8p-rvq4", 4, 0.011)])
def test_rtn_round_trip_and_size(rng, name, bits, mse_max):
    fmt = CODEBOOK_FORMATS[name]
    w = rng.standard_normal((48, 64)) * rng.uniform(0.5, 2, (48, 1))  # rows of different scales
    coded = quantize_rtn(w, fmt)
    assert coded.nbytes == 48 * 64 * bits // 8 + 48 * 2
    q = coded.dequantize()
    rel = np.mean((q - w) ** 2) / np.mean(w**2)
    assert rel < mse_max
    np.testing.assert_array_equal(coded.dequantize(), q)  # decoding is deterministic


@pytest.mark.parametrize("name", ["e8p", "e8p-rvq3"])
def test_ldlq_lowers_the_hessian_weighted_error(rng, name):
    k, rows = 128, 64
    x = rng.standard_normal((1000, k)) @ (np.eye(k) + 0.4 * rng.standard_normal((k, k)))  # correlated inputs
    h = hessian(x)
    w = rng.standard_normal((rows, k))
    fmt = CODEBOOK_FORMATS[name]

    def proxy(q):
        d = w - q
        return np.trace(d @ h @ d.T) / np.trace(w @ h @ w.T)

    rtn, ldlq = proxy(quantize_rtn(w, fmt).dequantize()), proxy(quantize_ldlq(w, fmt, h).dequantize())
    assert ldlq < 0.8 * rtn


def test_identity_hessian_ldlq_is_rounding(rng):
    """With H = I there is nothing to feed forward: block GPTQ picks the nearest codewords."""
    w = rng.standard_normal((16, 64))
    fmt = CODEBOOK_FORMATS["e8p"]
    np.testing.assert_array_equal(quantize_ldlq(w, fmt, np.eye(64)).codes, quantize_rtn(w, fmt).codes)


def test_rotated_codebook_matrix_comes_back_in_its_basis(rng):
    """quantize_matrix undoes the rotations: its output matches the rotated-domain codes unrotated
    by hand, and approximates W (not W')."""
    w = rng.standard_normal((96, 384)).astype(np.float32)
    q, nbytes = quantize_matrix("layer.weight", w, Recipe(codebook="e8p", rotate=True))
    assert q.shape == w.shape and q.dtype == np.float32
    assert nbytes == 96 * 384 * 2 // 8 + 96 * 2 + MatrixRotation.STORED_BYTES
    assert np.mean((q - w) ** 2) / np.mean(w**2) < 0.12
    from ulpq_build.vq.model import matrix_seed

    rot = MatrixRotation.for_shape(96, 384, matrix_seed("layer.weight"))
    by_hand = rot.unrotate_weight(quantize_rtn(rot.rotate_weight(w.astype(np.float64)), CODEBOOK_FORMATS["e8p"]).dequantize())
    np.testing.assert_allclose(q, by_hand, rtol=0, atol=1e-5)


def test_matrix_rows_must_hold_groups_of_8(rng):
    with pytest.raises(ValueError, match="multiple of 8"):
        quantize_rtn(rng.standard_normal((4, 12)), CODEBOOK_FORMATS["e8p"])
