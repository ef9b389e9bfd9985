"""GPTQ: quantize a linear layer's weights column by column, folding each column's rounding error
into the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs
(H = X^T X over calibration tokens). Frantar et al., "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers" (2022); this follows their reference algorithm (Cholesky of
H^-1, lazy block updates), for every format of the registry: a column is rounded with the format's
own levels and the scales of its group, which are chosen (clipping search included) from the
error-updated weights when the group starts.

Layers are quantized in graph order while the calibration inputs run through the model, so each
layer sees the outputs of the layers already quantized before it (`quantize_model`).

Bias correction (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", 2019): GPTQ minimises a layer's squared output error over the calibration tokens, which
can leave a mean error, and a mean shift survives every later layer (a LayerNorm recentres across
features, not tokens) into the pooled embedding. So after each layer is quantized its bias can take the mean error of its output
over the calibration tokens, E[W x] - E[Wq x], with x the inputs the quantized model feeds it
(earlier layers already quantized and corrected), folded into the float32 bias the bundle stores
anyway: no new tensor, no runtime change. quantize_model(bias_correction=True); off by default
(BIAS_CORRECTION says why).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dsyrk, ssyrk
from scipy.linalg.lapack import dtrtri

from ulpq_build import row_blocks
from ulpq_build.graph import graph_nodes
from ulpq_build.quantize import QuantizedTensor, assemble, dequantize, fit_codebook, group_scales, quantize, quantize_column, quantize_vq
from ulpq_build.quantspec import PER_CHANNEL, PER_TENSOR, QuantSpec, matrix_shape

DAMPING = 0.01  # fraction of the mean Hessian diagonal added for stability (the paper's default)
BLOCK = 128  # columns per lazy update
# quantize_model's default. Off: on all-MiniLM-L6-v2 (docs/two_bit_study.md, 2026-11-30) the correction
# lowered the calibration distortion of the 2.5-bit plan (0.0552 -> 0.0529) but raised the 4.1-bit plan's
# (0.0079 -> 0.0082) and int4's (0.0470 -> 0.0479, Lee Pearson 101.1 -> 98.8 %); it helped the ViT's
# 2.25-bit plan (top-1 98.3 -> 98.9 % of float32). Not a gain on every model, so it is asked for.
BIAS_CORRECTION = False
FLOAT32_SPEC = QuantSpec("float32")


HESSIAN_ROWS = 8192  # float32 rows summed per float32 product before the float64 total takes them


def hessian(x: np.ndarray) -> np.ndarray:
    """2 X^T X / n over the rows of x, as float64 (one triangle by BLAS syrk: half the work of x.T @ x).
    float32 activations (the calibration run's) are multiplied in float32 over HESSIAN_ROWS rows at a
    time and summed in float64: twice float64's speed, without a float64 copy of x, and within 1e-6 of
    the float64 product relative to its largest entry (tests/test_gptq.py)."""
    x = np.asarray(x).reshape(-1, np.shape(x)[-1])
    n = max(len(x), 1)
    if x.dtype == np.float32:
        upper = np.zeros((x.shape[1], x.shape[1]), np.float64)
        for start in range(0, len(x), HESSIAN_ROWS):  # x[a:b].T is Fortran-ordered: no copy; computes x^T x
            upper += ssyrk(2.0 / n, x[start : start + HESSIAN_ROWS].T, trans=0)
    else:
        upper = dsyrk(2.0 / n, np.asarray(x, np.float64).T, trans=0)
    return np.triu(upper) + np.triu(upper, 1).T


def upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """U, upper triangular, with U^T U = h^-1 (GPTQ's Cholesky form of the inverse Hessian), from one
    Cholesky and one triangular inverse instead of an inverse and a Cholesky: with J the reversal,
    J h J = L L^T gives h^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper triangular."""
    lower = np.linalg.cholesky(h[::-1, ::-1])
    inverse, info = dtrtri(lower, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular inverse failed (info {info})")
    return np.ascontiguousarray(np.tril(inverse)[::-1, ::-1])


def gptq_quantize(name: str, w: np.ndarray, spec: QuantSpec, h: np.ndarray, act_order: bool = True) -> QuantizedTensor:
    """Quantize W [rows, K] (any shape viewed as a matrix) under `spec`, compensating with Hessian h [K, K].

    act_order: quantize the columns with the largest Hessian diagonal (the most active inputs) first,
    so their errors can still be spread over many columns; scales are then fixed per group from the
    original weights before any column moves ("static groups"), so a group's scale does not depend
    on the order."""
    fmt = spec.fmt
    if fmt.levels == "codebook":  # groups of 8 coded jointly: block LDLQ (ulpq_build/vq/)
        return quantize_vq(name, w, spec, h)
    if not fmt.quantized or spec.group_size == PER_TENSOR:
        return quantize(name, w, spec)  # nothing to compensate / one scale for everything: plain rounding
    rows, k = matrix_shape(w.shape)
    W0 = np.asarray(w, np.float64).reshape(rows, k)
    group = k if spec.group_size == PER_CHANNEL else spec.group_size
    codebook = fit_codebook(name, w, spec) if fmt.levels == "fitted" else None
    n_groups = k // group
    scales = np.zeros((rows, n_groups), np.float32)
    zeros = np.zeros((rows, n_groups), np.float32) if spec.asymmetric else None
    for g in range(n_groups):
        scales[:, g], z = group_scales(W0[:, g * group : (g + 1) * group], fmt, spec, codebook)
        if zeros is not None:
            zeros[:, g] = z
    H = np.array(h, np.float64, copy=True)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(k)
    W = W0[:, order].copy()
    W[:, dead[order]] = 0.0
    H = H[np.ix_(order, order)]
    H[np.diag_indices(k)] += DAMPING * np.mean(np.diag(H))
    Hinv = upper_cholesky_of_inverse(H)
    codes = np.zeros((rows, k), np.uint8)
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = order[i1 + i]
            g = col // group
            c, q = quantize_column(W1[:, i], scales[:, g].astype(np.float64), None if zeros is None else zeros[:, g],
                                   fmt, codebook)
            codes[:, col] = c
            err = (W1[:, i] - q) / Hinv1[i, i]
            W1[:, i:] -= np.outer(err, Hinv1[i, i:])
            E1[:, i] = err
        W[:, i2:] -= E1 @ Hinv[i1:i2, i2:]
    return assemble(name, tuple(int(d) for d in w.shape), str(np.asarray(w).dtype), spec, codes, scales, zeros, codebook)


def quantize_model(model: dict, weights: dict[str, np.ndarray], specs: dict[str, QuantSpec], run_calibration,
                   log=lambda message: None, bias_correction: bool = BIAS_CORRECTION) -> dict[str, QuantizedTensor]:
    """Quantize every tensor of `specs`: linear layers by GPTQ in graph order, others (embedding
    tables) by rounding. `run_calibration(weights, hook)` runs the model's reference forward over
    the calibration inputs with `hook(node, x)` called before each linear layer.

    bias_correction: each quantized layer's bias takes its mean output error on the inputs it sees
    (the module's note); the corrected biases come back beside the matrices, as float32 tensors."""
    current = dict(weights)
    result: dict[str, QuantizedTensor] = {}
    for name, spec in specs.items():
        if name not in _linear_weights(model) and spec.fmt.quantized:  # tables, or blocks of their rows (row_blocks.py)
            result[name] = quantize(name, row_blocks.tensor(weights.__getitem__, name), spec)
            row_blocks.put(current, name, dequantize(result[name]))
    hessians: dict[str, np.ndarray] = {}
    last: list = [None, None]  # the previous layer's input and its Hessian: query, key and value share one

    def hook(node, x):
        name = node["weight"]
        if name not in specs or name in result:
            return
        same = last[0] is not None and last[0].shape == x.shape and np.array_equal(last[0], x)
        h = last[1] if same else hessian(x)
        last[:] = [x, h]
        hessians[name] = hessians.get(name, 0) + h
        qt = gptq_quantize(name, weights[name], specs[name], hessians[name])
        result[name] = qt
        current[name] = dequantize(qt)
        log(f"gptq {name}: {specs[name].format}")
        if bias_correction and node.get("bias") and specs[name].fmt.quantized:
            bias = node["bias"]
            current[bias] = corrected_bias(weights[bias], weights[name], current[name], x.mean(axis=0, dtype=np.float64))
            result[bias] = float_tensor(bias, current[bias])

    run_calibration(current, hook)
    missing = [n for n in specs if specs[n].fmt.quantized and n not in result]
    for name in missing:  # layers the calibration never reached
        result[name] = quantize(name, row_blocks.tensor(weights.__getitem__, name), specs[name])
    return result


def corrected_bias(bias: np.ndarray, w: np.ndarray, wq: np.ndarray, mean_input: np.ndarray) -> np.ndarray:
    """b + (W - Wq) E[x]: the bias under which the quantized layer's mean output over the calibration
    tokens is the float layer's (W, Wq [out, in] or any shape viewed so), in float32."""
    rows = np.shape(bias)[0]
    error = np.asarray(w, np.float64).reshape(rows, -1) - np.asarray(wq, np.float64).reshape(rows, -1)
    return (np.asarray(bias, np.float64) + error @ mean_input).astype(np.float32)


def float_tensor(name: str, values: np.ndarray) -> QuantizedTensor:
    """A tensor stored as float32 (a corrected bias), as quantize writes one."""
    return quantize(name, np.asarray(values, np.float32), FLOAT32_SPEC)


def _linear_weights(model: dict) -> set[str]:
    return set(linear_nodes(model))


def linear_nodes(model: dict) -> dict[str, dict]:
    """Every linear layer of the model description, by its weight's name."""
    names: dict[str, dict] = {}
    for node in graph_nodes(model, "in_features"):
        names.setdefault(node["weight"], node)  # a weight two nodes share (tied) counts once, as first met
    return names
