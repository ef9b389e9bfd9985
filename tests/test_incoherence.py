"""Randomized Hadamard rotations (ulpq_build/vq/incoherence.py): the fast transform against scipy's
Hadamard matrix, orthogonality, exact inverses, and a rotated linear layer against the original."""

import numpy as np
import pytest
from scipy.linalg import hadamard

from ulpq_build.vq.incoherence import (
    MatrixRotation,
    RandomHadamard,
    fwht,
    paley_hadamard_12,
    split_size,
)

ORTHO_TOL = 1e-12  # |R R^T - I| in float64
ROUND_TRIP_TOL = 1e-12  # relative error of inverse(forward(x)) in float64
LINEAR_TOL = 1e-10  # relative error of the rotated linear layer's output, float64
SIZES = [1, 2, 8, 64, 12, 48, 384, 1536, 3, 100, 30]  # powers of two, 12 * 2^m (MiniLM's), others


@pytest.mark.parametrize("n", [1, 2, 4, 32, 256])
def test_fwht_is_the_sylvester_hadamard_product(rng, n):
    x = rng.standard_normal((5, n))
    np.testing.assert_allclose(fwht(x), x @ hadamard(n), rtol=0, atol=1e-12 * n)


def test_fwht_refuses_other_lengths(rng):
    with pytest.raises(ValueError, match="power of two"):
        fwht(rng.standard_normal(12))


def test_paley_12_is_a_hadamard_matrix():
    h = paley_hadamard_12()
    assert set(np.unique(h)) == {-1.0, 1.0}
    np.testing.assert_array_equal(h @ h.T, 12 * np.eye(12))


def test_minilm_sizes_split_into_hadamard_12_and_a_power_of_two():
    assert split_size(384) == (12, 32) and split_size(1536) == (12, 128)
    assert split_size(512) == (1, 512) and split_size(100) == (25, 4)


@pytest.mark.parametrize("n", SIZES)
def test_rotation_is_orthogonal_and_its_inverse_is_exact(rng, n):
    r = RandomHadamard(n, 1234 + n)
    m = r.matrix()
    np.testing.assert_allclose(m @ m.T, np.eye(n), rtol=0, atol=ORTHO_TOL)
    x = rng.standard_normal((7, n))
    np.testing.assert_allclose(r.forward(x), x @ m.T, rtol=0, atol=1e-12)
    back = r.inverse(r.forward(x))
    assert np.abs(back - x).max() <= ROUND_TRIP_TOL * np.abs(x).max()
    assert np.abs(r.forward(r.inverse(x)) - x).max() <= ROUND_TRIP_TOL * np.abs(x).max()


@pytest.mark.parametrize("n", [64, 384, 1536])
def test_hadamard_rotations_are_flat_and_seeded(n):
    """Every entry 1/sqrt(n) in magnitude (what spreads an outlier evenly); the seed alone fixes R,
    and another seed gives another R."""
    r = RandomHadamard(n, 7)
    assert r.flat
    np.testing.assert_allclose(np.abs(r.matrix()), 1 / np.sqrt(n), rtol=1e-12)
    np.testing.assert_array_equal(r.matrix(), RandomHadamard(n, 7).matrix())
    assert not np.allclose(r.matrix(), RandomHadamard(n, 8).matrix())


def test_rotation_spreads_an_outlier(rng):
    w = rng.standard_normal((64, 384)) * 0.01
    w[:, 5] = 3.0  # one input channel with huge weights
    rotated = MatrixRotation.for_shape(64, 384, seed=3).rotate_weight(w)
    assert np.abs(w).max() / np.sqrt(np.mean(w**2)) > 15
    assert np.abs(rotated).max() / np.sqrt(np.mean(rotated**2)) < 5  # near-Gaussian peak-to-RMS


@pytest.mark.parametrize("rows,k,outer", [(1536, 384, True), (384, 1536, True), (30, 384, False), (512, 64, True)])
def test_rotated_linear_equals_the_original(rng, rows, k, outer):
    """y = W x equals R_out^T (W' (R_in x)) with W' = R_out W R_in^T, and unrotate_weight gives W back."""
    w = rng.standard_normal((rows, k))
    x = rng.standard_normal((9, k))
    rot = MatrixRotation.for_shape(rows, k, seed=99)
    assert (rot.outer is not None) == outer
    w_rot = rot.rotate_weight(w)
    y = x @ w.T
    y_rot = rot.restore_output(rot.rotate_input(x) @ w_rot.T)
    assert np.abs(y_rot - y).max() <= LINEAR_TOL * np.abs(y).max()
    assert np.abs(rot.unrotate_weight(w_rot) - w).max() <= ROUND_TRIP_TOL * np.abs(w).max()


def test_rotated_hessian_is_the_hessian_of_rotated_inputs(rng):
    x = rng.standard_normal((200, 384))
    rot = MatrixRotation.for_shape(16, 384, seed=5)
    h = x.T @ x
    xr = rot.rotate_input(x)
    np.testing.assert_allclose(rot.rotate_hessian(h), xr.T @ xr, rtol=0, atol=1e-9 * np.abs(h).max())


def test_wrong_length_is_refused(rng):
    with pytest.raises(ValueError, match="size 384"):
        RandomHadamard(384, 1).forward(rng.standard_normal(383))
