"""Quantize one float matrix to a registry format and back (numpy reference; the bundle, the
checkpoint and every kernel test use exactly these codes and scales).

The matrix is viewed as groups: rows of G consecutive inputs that share a scale (G = K per
output channel; the whole tensor as one group per tensor). Rows are processed in chunks so
that scratch memory stays a few MiB whatever the tensor size.

Scale choice per kind of level set:
  uniform    search the clipping ratio r (scale = r x the max-abs scale) on a small grid, then
             refine around the best; keep the ratio with the least squared error (r = 1, plain
             max-abs, is always a candidate, so the search is never worse than max-abs).
  table      the same search; for value sets that are not mirror-symmetric ({-1, 0, 0.5, 1})
             both signs of the scale are tried, so the finer side lands where the data needs it.
  mean-abs   sign codes with scale mean |w|: the least-squares optimum for levels {-1, +1}.
  fitted     scale = max |w| of the group normalises the data to [-1, 1]; Lloyd-Max (1-D
             k-means, quantile initialisation, fixed iteration budget) fits the levels on the
             normalised values of the tensor (or of each row); a least-squares rescale per
             group follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.formats import Format
from ulpq_build.packing import pack, unpack
from ulpq_build.quantspec import PER_CHANNEL, PER_TENSOR, SCALE_DTYPES, QuantSpec, matrix_shape, part_layout

CHUNK_ELEMENTS = 1 << 19  # values per processing chunk (scratch memory ~ a few x 2 MiB)
SEARCH_SAMPLE = 128  # values per group that score the coarse clipping grid
LLOYD_ITERATIONS = 24
LLOYD_SAMPLES = 1 << 18  # values a per-tensor codebook is fitted on


def clip_ratios(bits: int) -> tuple[np.ndarray, float]:
    """The coarse grid of clipping ratios searched for a bit width (low bits clip harder), and the
    half step tried either side of each group's best ratio afterwards."""
    lowest, count = {1: (0.3, 10), 2: (0.3, 10), 3: (0.4, 10), 4: (0.5, 10)}.get(bits, (0.8, 5))
    grid = np.linspace(1.0, lowest, count, dtype=np.float32)
    return grid, float(grid[0] - grid[1]) / 2


@dataclass
class QuantizedTensor:
    """A tensor in a registry format: its stored parts plus what is needed to restore it."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the original dtype, restored by dequantize
    spec: QuantSpec
    parts: dict[str, np.ndarray]  # "codes", and "scales" / "zeros" / "codebook" when the format has them

    @property
    def fmt(self) -> Format:
        return self.spec.fmt

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / max(1, int(np.prod(self.shape)))

    def matrix_layout(self) -> dict:
        """The constants a kernel or the JS decoder needs to address this tensor (the kernels'
        `Params`): scale index = row * groups_per_row + k / group_size (per tensor: 0 groups per
        row); codebook of row r at r * codebook_stride."""
        rows, k = matrix_shape(self.shape)
        fmt = self.fmt
        if not fmt.quantized:
            return {"rows": rows, "k": k, "words_per_row": k, "groups_per_row": 0, "group_size": k, "codebook_stride": 0}
        groups_per_row = 0 if self.spec.group_size == PER_TENSOR else self.parts["scales"].shape[1]
        per_channel_book = "codebook" in self.parts and self.parts["codebook"].shape[0] > 1
        return {"rows": rows, "k": k, "words_per_row": fmt.words_per_row(k), "groups_per_row": groups_per_row,
                "group_size": k // max(groups_per_row, 1), "codebook_stride": fmt.n_levels if per_channel_book else 0}


F16_NORMAL_MIN = float(np.finfo(np.float16).tiny)  # below this float16 scales lose precision, then flush to 0


def check_finite(name: str, w: np.ndarray) -> None:
    """Every float tensor the tool writes (quantized or kept) must hold finite values: a NaN bias
    would otherwise reach the output silently."""
    if np.issubdtype(w.dtype, np.floating) and not np.isfinite(w).all():
        bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
        raise UserError(f"tensor {name!r} holds {bad} NaN or Inf values; fix or retrain the checkpoint before quantizing")


def _check_matrix(name: str, w: np.ndarray, fmt: Format) -> None:
    if not np.issubdtype(w.dtype, np.floating):
        if fmt.quantized or not np.issubdtype(w.dtype, np.integer):
            raise UserError(f"tensor {name!r} has dtype {w.dtype}; only floating-point tensors can be quantized, "
                            f"integer tensors are kept as they are: narrow the rule or config that selects it")
        if w.size and np.abs(w.astype(np.float64)).max() > 2**24:
            raise UserError(f"tensor {name!r} ({w.dtype}) holds integers beyond 2^24 that float32 cannot hold exactly; "
                            f"this model cannot be bundled")
    if w.size == 0:
        raise UserError(f"tensor {name!r} is empty (shape {list(w.shape)}); nothing to quantize, "
                        f"remove it from the model")
    check_finite(name, w)


def scale_underflow(qt: "QuantizedTensor") -> tuple[int, int]:
    """(scale groups below float16's normal range, of those flushed to zero) of a float16-scaled tensor."""
    if qt.spec.scale_dtype != "float16" or "scales" not in qt.parts:
        return 0, 0
    scales = np.abs(qt.parts["scales"].astype(np.float32))
    return int(np.count_nonzero(scales < F16_NORMAL_MIN)), int(np.count_nonzero(scales == 0))


def quantize(name: str, w: np.ndarray, spec: QuantSpec) -> QuantizedTensor:
    """Quantize tensor `w` (any float dtype, viewed as [rows, K]) under `spec`. Integer tensors are
    accepted for the float32 format only (widened exactly, as a bundle stores every tensor)."""
    w = np.asarray(w)
    fmt = spec.fmt
    _check_matrix(name, w, fmt)
    rows, k = matrix_shape(w.shape)
    if spec.group_size > 0 and k % spec.group_size:
        raise UserError(f"tensor {name!r}: group size {spec.group_size} does not divide its row length {k}; "
                        f"choose a group size that divides {k}, or per-channel scales (--group-size 0)")
    matrix = w.reshape(rows, k)
    if fmt.levels == "codebook":
        return quantize_vq(name, w, spec)
    if not fmt.quantized:
        parts = {"codes": np.ascontiguousarray(matrix, dtype=np.float32)}
    else:
        # float16 scales of tiny weights underflow (1/0 below): reported once per run by the caller
        # (scale_underflow), not as numpy warnings
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            if spec.group_size == PER_TENSOR:
                parts = _quantize_rows(matrix.astype(np.float32).reshape(1, rows * k), fmt, spec, k_row=k, rows=rows)
            else:
                parts = _quantize_rows(matrix, fmt, spec, k_row=k, rows=rows)
    expected = part_layout(spec, w.shape)
    assert {p: (str(a.dtype), a.shape) for p, a in parts.items()} == expected, (name, expected)
    dtype = str(w.dtype) if np.issubdtype(w.dtype, np.floating) else "float32"
    return QuantizedTensor(name, tuple(int(d) for d in w.shape), dtype, spec, parts)


def quantize_vq(name: str, w: np.ndarray, spec: QuantSpec, h: np.ndarray | None = None) -> QuantizedTensor:
    """A codebook-format tensor (ulpq_build/vq/tensor.py), by rounding or, with the Hessian h, block LDLQ."""
    # imported here: vq builds on gptq, which builds on this module
    from ulpq_build.vq.tensor import quantize_codebook

    w = np.asarray(w)
    _check_matrix(name, w, spec.fmt)
    rows, k = matrix_shape(w.shape)
    parts = quantize_codebook(name, w.astype(np.float64).reshape(rows, k), spec.fmt, h)
    assert {p: (str(a.dtype), a.shape) for p, a in parts.items()} == part_layout(spec, w.shape), name
    return QuantizedTensor(name, tuple(int(d) for d in w.shape), str(w.dtype), spec, parts)


def _row_chunks(matrix: np.ndarray, work) -> list:
    """Apply work(start, float32 block) to consecutive row chunks of about CHUNK_ELEMENTS values,
    in order: scratch memory stays a few chunks whatever the tensor size."""
    chunk_rows = max(1, CHUNK_ELEMENTS // matrix.shape[1])
    return [work(start, np.asarray(matrix[start : start + chunk_rows], dtype=np.float32))
            for start in range(0, matrix.shape[0], chunk_rows)]


def _quantize_rows(matrix: np.ndarray, fmt: Format, spec: QuantSpec, *, k_row: int, rows: int) -> dict[str, np.ndarray]:
    """Quantize the rows of `matrix` (one row per scale group set) and pack codes per output row.

    For per-tensor scales `matrix` is one long row; its codes are re-split into `rows` rows of
    `k_row` before packing, so every layout stays row-addressable.
    """
    group = matrix.shape[1] if spec.group_size in (PER_CHANNEL, PER_TENSOR) else spec.group_size
    scale_dtype = SCALE_DTYPES[spec.scale_dtype]
    codebook = _fit_codebooks(matrix, fmt, spec, group) if fmt.levels == "fitted" else None

    def work(start: int, block: np.ndarray):
        groups = block.reshape(-1, group)
        zeros = None
        if fmt.levels == "uniform" and spec.asymmetric:
            codes, scales, zeros = _uniform_asymmetric(groups, fmt, scale_dtype)
            zeros = zeros.reshape(block.shape[0], -1)
        elif fmt.levels == "uniform":
            codes, scales = _uniform_symmetric(groups, fmt, scale_dtype)
        elif fmt.levels == "table" and fmt.scale_rule == "mean-abs":
            codes, scales = _sign(groups, scale_dtype)
        elif fmt.levels == "table":
            codes, scales = _table(groups, np.asarray(fmt.table, np.float32), scale_dtype)
        else:
            books = codebook if codebook.shape[0] == 1 else codebook[start : start + block.shape[0]]
            codes, scales = _fitted(groups, books, block.shape[0], scale_dtype)
        return pack(codes.reshape(-1, k_row), fmt), scales.reshape(block.shape[0], -1), zeros

    codes_out, scales_out, zeros_out = zip(*_row_chunks(matrix, work))
    parts = {"codes": np.concatenate(codes_out), "scales": np.concatenate(scales_out).astype(scale_dtype)}
    if spec.asymmetric:
        parts["zeros"] = np.concatenate(zeros_out)
    if codebook is not None:
        parts["codebook"] = codebook
    return parts


def _round_scale(s: np.ndarray, scale_dtype) -> np.ndarray:
    """Scales as they will be stored (f16 rounding included), so codes are chosen for those."""
    return np.asarray(s).astype(scale_dtype).astype(np.float32)


def _sq_err(groups: np.ndarray, approx: np.ndarray) -> np.ndarray:
    d = groups - approx
    return np.einsum("ij,ij->i", d, d)


def _search(groups: np.ndarray, bits: int, make_scale, evaluate, *, signed: bool = False):
    """The scale per group with the least squared error among clipping ratios, and its codes.

    The coarse grid, then the two half-step neighbours of its best ratio, are scored on an
    evenly strided sample of each group (at least SEARCH_SAMPLE values). The winner and plain
    max-abs (ratio 1) are then scored on every value, so the result is never worse than max-abs,
    and those two full passes also yield the codes. `make_scale(ratios)` maps per-group ratios
    to stored scales; `evaluate(values, scales, codes)` returns the per-group squared error, and
    with codes=True also the codes. With signed=True a negated scale is tried too (value sets
    that are not mirror-symmetric), the sign chosen per group before the magnitude search.
    """
    ratios, half = clip_ratios(bits)
    n = groups.shape[0]
    sample = np.ascontiguousarray(groups[:, :: max(1, groups.shape[1] // SEARCH_SAMPLE)])
    sign = np.ones(n, np.float32)
    if signed:
        mid = np.full(n, ratios[len(ratios) // 2], np.float32)
        sign = np.where(evaluate(sample, make_scale(-mid), False) < evaluate(sample, make_scale(mid), False),
                        np.float32(-1), sign)
    best_err = np.full(n, np.inf)
    best = sign.copy()
    step = sign * np.float32(half)
    candidates = [sign * r for r in ratios]
    for i in range(len(candidates) + 2):
        if i == len(candidates):  # refine around the grid's winner
            candidates += [best + step, best - step]
        err = evaluate(sample, make_scale(candidates[i]), False)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, candidates[i], best)
    maxabs, chosen = make_scale(np.ones(n, np.float32)), make_scale(best)
    err_maxabs, codes_maxabs = evaluate(groups, maxabs, True)
    err_chosen, codes_chosen = evaluate(groups, chosen, True)
    better = err_chosen < err_maxabs
    return np.where(better, chosen, maxabs), np.where(better[:, None], codes_chosen, codes_maxabs)


def _uniform_evaluate(lo, hi):
    """evaluate() for integer levels lo..hi (per-group arrays allowed): codes are the levels."""
    def evaluate(values, scale, codes):
        # The error in level units times scale^2: one pass fewer than rebuilding the values.
        v = values * (1.0 / scale)[:, None]
        levels = np.rint(v)
        np.clip(levels, lo, hi, out=levels)
        np.subtract(v, levels, out=v)
        err = np.einsum("ij,ij->i", v, v) * (scale * scale)
        return (err, levels) if codes else err

    return evaluate


def _uniform_symmetric(groups: np.ndarray, fmt: Format, scale_dtype) -> tuple[np.ndarray, np.ndarray]:
    zero = fmt.symmetric_zero
    m = groups[np.arange(groups.shape[0]), np.abs(groups).argmax(axis=1)]  # the signed max-abs value
    m = np.where(m == 0, np.float32(1.0), m)
    scale, levels = _search(groups, fmt.bits, lambda r: _round_scale(-r * m / zero, scale_dtype),
                            _uniform_evaluate(-zero, fmt.n_levels - 1 - zero))
    return (levels + zero).astype(np.uint8), scale


def _uniform_asymmetric(groups: np.ndarray, fmt: Format, scale_dtype):
    top = fmt.n_levels - 1
    lo = np.minimum(groups.min(axis=1), 0)
    hi = np.maximum(groups.max(axis=1), 0)
    span = np.where(hi - lo == 0, np.float32(1.0), hi - lo)
    # The zero point puts the group's minimum on level 0; shrinking the range by a ratio scales
    # both ends alike, so z does not depend on the ratio.
    zeros = np.clip(np.rint(-lo * top / span), 0, top).astype(np.float32)
    scale, levels = _search(groups, fmt.bits, lambda r: _round_scale(r * span / top, scale_dtype),
                            _uniform_evaluate(-zeros[:, None], (top - zeros)[:, None]))
    return (levels + zeros[:, None]).astype(np.uint8), scale, zeros.astype(np.uint8)


def _nearest(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level (levels ascending: [L], or [rows, L] one set per row of values).

    Counting the midpoints below each value is one compare-and-add pass per midpoint, several
    times faster than searchsorted for the 2 to 16 levels of these formats.
    """
    mids = (levels[..., 1:] + levels[..., :-1]) / 2
    codes = np.zeros(values.shape, dtype=np.uint8)
    for j in range(mids.shape[-1]):
        codes += values > (mids[..., j, None] if mids.ndim == 2 else mids[j])
    return codes


def _table_evaluate(table: np.ndarray):
    """evaluate() for a fixed value set: nearest level by counting midpoints, as in _nearest."""
    mids = (table[1:] + table[:-1]) / 2
    steps = np.diff(table).astype(np.float32)

    def evaluate(values, scale, codes):
        v = values * (1.0 / scale)[:, None]
        q = np.full(values.shape, table[0], dtype=np.float32)
        u = np.zeros(values.shape, dtype=np.uint8) if codes else None
        for mid, step in zip(mids, steps):
            above = v > mid
            q += above * step
            if codes:
                u += above
        q *= scale[:, None]
        np.subtract(values, q, out=q)
        err = np.einsum("ij,ij->i", q, q)
        return (err, u) if codes else err

    return evaluate


def _table(groups: np.ndarray, table: np.ndarray, scale_dtype):
    absmax = np.abs(groups).max(axis=1)
    absmax = np.where(absmax == 0, np.float32(1.0), absmax)
    mirror = np.allclose(table, -table[::-1])  # else try both signs: the finer side goes where it helps
    scale, codes = _search(groups, 2, lambda r: _round_scale(r * absmax, scale_dtype), _table_evaluate(table),
                           signed=not mirror)
    return codes, scale


def _sign(groups: np.ndarray, scale_dtype):
    scale = _round_scale(np.abs(groups).mean(axis=1), scale_dtype)
    return (groups >= 0).astype(np.uint8), scale


def _group_absmax(groups: np.ndarray, scale_dtype) -> np.ndarray:
    absmax = np.abs(groups).max(axis=1)
    return _round_scale(np.where(absmax == 0, np.float32(1.0), absmax), scale_dtype)


def _fit_codebooks(matrix: np.ndarray, fmt: Format, spec: QuantSpec, group: int) -> np.ndarray:
    """Lloyd-Max levels for the max-abs-normalised values: [1, L] per tensor or [rows, L] per channel.

    Per tensor the levels are fitted on an evenly strided sample of at most LLOYD_SAMPLES values
    (plenty for 16 levels, and memory stays bounded); per channel each row is fitted whole,
    a chunk of rows at a time.
    """
    scale_dtype = SCALE_DTYPES[spec.scale_dtype]
    stride = max(1, matrix.size // LLOYD_SAMPLES)

    def work(start: int, block: np.ndarray):
        groups = block.reshape(-1, group)
        normalised = (groups / _group_absmax(groups, scale_dtype)[:, None]).reshape(block.shape)
        if spec.codebook == "channel":
            return lloyd_max(normalised, fmt.n_levels)
        first = (-start * block.shape[1]) % stride  # the global stride, continued across chunks
        return normalised.ravel()[first::stride]

    results = _row_chunks(matrix, work)
    if spec.codebook == "channel":
        return np.concatenate(results)
    return lloyd_max(np.concatenate(results)[None, :], fmt.n_levels)


def lloyd_max(values: np.ndarray, n_levels: int, iterations: int = LLOYD_ITERATIONS) -> np.ndarray:
    """1-D k-means per row of `values` (all within [-1, 1]): returns ascending levels [rows, n_levels].

    Rows are sorted once and shifted apart (row r by 4r), which makes the flattened array
    globally sorted: one searchsorted then finds every row's cell boundaries, and prefix sums
    give every cell's mean. Deterministic: quantile initialisation, a fixed iteration budget.
    """
    rows, n = values.shape
    ordered = np.sort(values, axis=1).astype(np.float64)
    offsets = 4.0 * np.arange(rows)[:, None]
    flat = (ordered + offsets).ravel()
    prefix = np.concatenate([[0.0], np.cumsum(ordered.ravel())])
    quantile_idx = np.minimum(((np.arange(n_levels) + 0.5) / n_levels * n).astype(np.int64), n - 1)
    levels = ordered[:, quantile_idx]
    for _ in range(iterations):
        bounds = (levels[:, 1:] + levels[:, :-1]) / 2
        cuts = np.searchsorted(flat, (bounds + offsets).ravel()).reshape(rows, n_levels - 1)
        starts = np.concatenate([np.arange(rows)[:, None] * n, cuts], axis=1)
        ends = np.concatenate([cuts, (np.arange(rows)[:, None] + 1) * n], axis=1)
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        levels = np.where(counts > 0, sums / np.maximum(counts, 1), levels)
        levels = np.sort(levels, axis=1)
    return levels.astype(np.float32)


def _fitted(groups: np.ndarray, codebooks: np.ndarray, block_rows: int, scale_dtype):
    """Codes = nearest fitted level of the normalised values; then a least-squares scale per group."""
    scale = _group_absmax(groups, scale_dtype)
    normalised = groups / scale[:, None]
    if codebooks.shape[0] == 1:
        book = codebooks[0]
    else:  # one codebook per output row, repeated for each of the row's groups
        book = np.repeat(codebooks, groups.shape[0] // block_rows, axis=0)
    codes = _nearest(normalised, book)
    levels = book[codes] if book.ndim == 1 else np.take_along_axis(book, codes.astype(np.intp), axis=1)
    # For fixed codes, s = <w, c> / <c, c> minimises |w - s c|^2; keep the max-abs scale where the
    # rescale is not better once rounded to the stored dtype.
    energy = np.einsum("ij,ij->i", levels, levels)
    fitted = np.where(energy > 0, np.einsum("ij,ij->i", groups, levels) / np.maximum(energy, 1e-30), scale)
    fitted = _round_scale(fitted, scale_dtype)
    better = _sq_err(groups, fitted[:, None] * levels) < _sq_err(groups, scale[:, None] * levels)
    return codes, np.where(better, fitted, scale)


def dequantize(qt: QuantizedTensor, source: str | None = None) -> np.ndarray:
    """Restore float32 values (in the tensor's original shape) from the stored parts."""
    return dequantize_parts(qt.parts, qt.spec, qt.shape, source=source)


def _check_stored(parts: dict[str, np.ndarray], fmt: Format, codes: np.ndarray, source: str | None) -> None:
    """Stored parts read from a file (no sha256 guards a checkpoint) must decode to finite values:
    codes within the level set, zero points within the levels, finite scales and codebooks."""
    where = source or "quantized tensor"
    if codes.size and int(codes.max()) >= fmt.n_levels:
        raise UserError(f"{where}: codes up to {int(codes.max())} but {fmt.name} has {fmt.n_levels} levels; "
                        f"the file is damaged, re-run `python -m ulpq_build quantize`")
    if "zeros" in parts and parts["zeros"].size and int(parts["zeros"].max()) >= fmt.n_levels:
        raise UserError(f"{where}: zero points beyond the {fmt.n_levels} levels of {fmt.name}; the file is damaged, "
                        f"re-run `python -m ulpq_build quantize`")
    for name in ("scales", "codebook"):
        if name in parts and not np.isfinite(parts[name]).all():
            raise UserError(f"{where}: its {name} hold NaN or Inf; the file is damaged, re-run `python -m ulpq_build quantize`")


def dequantize_parts(parts: dict[str, np.ndarray], spec: QuantSpec, shape: tuple[int, ...], *,
                     source: str | None = None) -> np.ndarray:
    fmt = spec.fmt
    rows, k = matrix_shape(shape)
    if not fmt.quantized:
        return parts["codes"].astype(np.float32).reshape(shape)
    if fmt.levels == "codebook":  # in the original basis: rotations undone
        from ulpq_build.vq.tensor import dequantize_codebook

        return dequantize_codebook(parts, fmt, rows, k, source or "quantized tensor").reshape(shape)
    codes = unpack(parts["codes"], fmt, k).reshape(rows, k)
    _check_stored(parts, fmt, codes, source)
    scales = parts["scales"].astype(np.float32)
    if spec.group_size == PER_TENSOR:
        per_value_scale = np.full((rows, k), scales[0, 0], dtype=np.float32)
    else:
        per_value_scale = np.repeat(scales, k // scales.shape[1], axis=1)
    if fmt.levels == "uniform":
        if spec.asymmetric:
            zeros = parts["zeros"].astype(np.float32)
            zero = np.full((rows, k), zeros[0, 0]) if spec.group_size == PER_TENSOR else np.repeat(zeros, k // zeros.shape[1], axis=1)
        else:
            zero = fmt.symmetric_zero
        levels = codes.astype(np.float32) - zero
    elif fmt.levels == "table":
        levels = np.asarray(fmt.table, np.float32)[codes]
    else:
        book = parts["codebook"]
        levels = book[0][codes] if book.shape[0] == 1 else np.take_along_axis(book, codes.astype(np.int64), axis=1)
    return (per_value_scale * levels).astype(np.float32).reshape(shape)


# --- pieces for quantizers that choose codes themselves (GPTQ) ------------------------------------------

def group_scales(block: np.ndarray, fmt: Format, spec: QuantSpec, codebook: np.ndarray | None = None):
    """Scale (and zero point, for asymmetric formats) per row of `block` [rows, G], as the
    round-to-nearest quantizer chooses them (clipping search included)."""
    scale_dtype = SCALE_DTYPES[spec.scale_dtype]
    block = np.asarray(block, np.float32)
    if fmt.levels == "uniform" and spec.asymmetric:
        _, scale, zeros = _uniform_asymmetric(block, fmt, scale_dtype)
        return scale, zeros.astype(np.float32)
    if fmt.levels == "uniform":
        return _uniform_symmetric(block, fmt, scale_dtype)[1], None
    if fmt.levels == "table" and fmt.scale_rule == "mean-abs":
        return _sign(block, scale_dtype)[1], None
    if fmt.levels == "table":
        return _table(block, np.asarray(fmt.table, np.float32), scale_dtype)[1], None
    return _fitted(block, codebook, block.shape[0] if codebook.shape[0] > 1 else 1, scale_dtype)[1], None


def quantize_column(values: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, fmt: Format,
                    codebook: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Codes and dequantized values of one input column (one value per row) under given scales."""
    if fmt.levels == "uniform":
        z = fmt.symmetric_zero if zero is None else zero
        codes = np.clip(np.rint(values / scale) + z, 0, fmt.n_levels - 1)
        return codes.astype(np.uint8), scale * (codes - z)
    if fmt.levels == "table":
        table = np.asarray(fmt.table, np.float64)
        codes = (values >= 0).astype(np.uint8) if fmt.scale_rule == "mean-abs" else _nearest((values / scale)[:, None], table)[:, 0]
        return codes, scale * table[codes]
    books = np.broadcast_to(codebook, (len(values), codebook.shape[1]))
    codes = _nearest((values / scale)[:, None], books)[:, 0]
    return codes, scale * books[np.arange(len(values)), codes]


def assemble(name: str, shape: tuple[int, ...], dtype: str, spec: QuantSpec, codes: np.ndarray, scales: np.ndarray,
             zeros: np.ndarray | None, codebook: np.ndarray | None) -> QuantizedTensor:
    """A QuantizedTensor from unpacked codes [rows, K] and per-group scales [rows, groups]."""
    fmt = spec.fmt
    parts = {"codes": pack(codes.astype(np.uint8), fmt), "scales": scales.astype(SCALE_DTYPES[spec.scale_dtype])}
    if spec.asymmetric:
        parts["zeros"] = zeros.astype(np.uint8)
    if fmt.levels == "fitted":
        parts["codebook"] = codebook.astype(np.float32)
    expected = part_layout(spec, shape)
    assert {p: (str(a.dtype), a.shape) for p, a in parts.items()} == expected, (name, expected)
    return QuantizedTensor(name, tuple(shape), dtype, spec, parts)


def fit_codebook(name: str, w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """The fitted levels a -optimal format uses for `w` (as quantize fits them)."""
    rows, k = matrix_shape(w.shape)
    group = k if spec.group_size in (PER_CHANNEL, PER_TENSOR) else spec.group_size
    return _fit_codebooks(np.asarray(w, np.float32).reshape(rows, k), spec.fmt, spec, group)
