"""The CPU path's WebAssembly kernels, run in wasmtime and compared with numpy: GEMM/GEMV for every
registry storage (format x scale dtype x zero points, per channel / per group / per tensor, K with
and without a multiple of 4 or of the word) and every transformer operator. Outputs are poisoned
with NaN before each call, inputs are seeded random values."""

from __future__ import annotations

import numpy as np
import pytest
import wasmtime

from ulpq_build import wasm_kernels as wk
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import gelu

# float32 accumulation in a different order than numpy's float64: relative to the output's scale
GEMM_TOLERANCE = 2e-5
# GELU through A&S erf (|err| < 1.5e-7) and the kernel's exp (rel. 2e-7)
GELU_TOLERANCE = 1e-5
OPS_TOLERANCE = 1e-5
POISON = np.float32(np.nan)


class Wasm:
    """One kernel module over one memory, with a bump allocator for the test's arrays."""

    def __init__(self, variants, relaxed=False, rows_per_tile=wk.ROWS_PER_TILE):
        config = wasmtime.Config()
        config.wasm_relaxed_simd = True
        self.engine = wasmtime.Engine(config)
        self.store = wasmtime.Store(self.engine)
        module = wasmtime.Module(self.engine, wk.build(variants, shared=False, relaxed=relaxed, rows_per_tile=rows_per_tile))
        self.memory = wasmtime.Memory(self.store, wasmtime.MemoryType(wasmtime.Limits(512, None)))
        self.exports = wasmtime.Instance(self.store, module, [self.memory]).exports(self.store)
        self.top = 1024

    def reset(self):
        self.top = 1024

    def put(self, array) -> int:
        data = np.ascontiguousarray(array).tobytes()
        ptr = self.top
        self.memory.write(self.store, data, ptr)
        self.top = (ptr + len(data) + 8 + 15) & ~15  # +8: the bit-stream decoder reads 64 bits
        return ptr

    def poisoned(self, n) -> int:
        return self.put(np.full(n, POISON, np.float32))

    def scratch(self, nbytes=1 << 16) -> int:
        return self.put(np.full(nbytes // 4, POISON, np.float32))

    def get(self, ptr, n, dtype=np.float32):
        return np.frombuffer(self.memory.read(self.store, ptr, ptr + n * np.dtype(dtype).itemsize), dtype).copy()

    def __call__(self, name, *args):
        return self.exports[name](self.store, *args)


@pytest.fixture(scope="module")
def wasm():
    return Wasm(wk.all_variants())


@pytest.fixture(scope="module")
def wasm_relaxed():
    return Wasm(wk.all_variants(), relaxed=True)


def rel(actual, expected):
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


def put_tensor(wasm, qt):
    """Pointers for a quantized tensor's parts (table formats: the registry's table as the codebook)."""
    p = qt.parts
    fmt = qt.fmt
    book = p.get("codebook")
    if fmt.levels == "table":
        book = np.asarray(fmt.table, np.float32)
    return {
        "codes": wasm.put(p["codes"]),
        "scales": wasm.put(p["scales"]) if "scales" in p else 0,
        "zeros": wasm.put(p["zeros"]) if "zeros" in p else 0,
        "book": wasm.put(book) if book is not None else 0,
    }


SPECS = []
for variant in wk.all_variants():
    f = variant.fmt
    if variant.codebook:  # their own tests below: per-row scales, rotated rows
        continue
    if not f.quantized:
        SPECS.append((QuantSpec("float32"), 99))
        SPECS.append((QuantSpec("float32"), 96))
        SPECS.append((QuantSpec("float32"), 100))
        continue
    base = {"format": variant.format, "scale_dtype": variant.scale_dtype, "asymmetric": variant.zeros}
    SPECS.append((QuantSpec(**base, group_size=32), 96))
    SPECS.append((QuantSpec(**base, group_size=0), 99))
    if f.levels == "fitted":
        SPECS.append((QuantSpec(**base, group_size=0, codebook="channel"), 96))
    elif not variant.zeros:
        SPECS.append((QuantSpec(**base, group_size=-1), 64))
    if variant.format in ("int8", "int4", "int3"):
        # whole words per row: the GEMM decodes uniform codes straight into its panel (int3: 10 per word)
        SPECS.append((QuantSpec(**base, group_size=0), 100))


@pytest.mark.parametrize("spec,k", SPECS, ids=lambda v: str(v) if isinstance(v, int) else
                         f"{v.format}-{v.scale_dtype}-{'asym' if v.asymmetric else 'sym'}-g{v.group_size}-{v.codebook}")
@pytest.mark.parametrize("rows", [1, 5, 13])  # 13: two whole register tiles of 6 rows and one row left
@pytest.mark.parametrize("build", ["simd", "relaxed-simd"])
def test_gemm_matches_numpy(wasm, wasm_relaxed, build, spec, k, rows, rng):
    wasm = wasm_relaxed if build == "relaxed-simd" else wasm
    n = 13  # not a multiple of 4 or 8: the last panel's lanes past n are not stored; k = 96, 99 or 100: 4 x 4 blocks and leftovers
    w = rng.standard_normal((n, k)).astype(np.float32)
    qt = quantize("w", w, spec)
    dense = dequantize(qt).astype(np.float64)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((rows, n)).astype(np.float32)
    layout = qt.matrix_layout()
    key = wk.variant_of(spec).key
    wasm.reset()
    ptrs = put_tensor(wasm, qt)

    def run(y, xp, bp, rp, act):
        wasm(f"gemm_{key}", xp, rows, k, y, n, 0, n, ptrs["codes"], ptrs["scales"], ptrs["zeros"], ptrs["book"],
             layout["words_per_row"], layout["groups_per_row"], layout["group_size"], layout["codebook_stride"],
             bp, rp, act, wasm.scratch())

    check_epilogues(wasm, run, x, dense, bias, res, key)


def check_epilogues(wasm, run, x, dense, bias, res, label):
    """A GEMM kernel through run(y, x, bias, residual, act) (pointers; 0 for no bias / residual) with no
    epilogue, GELU + bias + residual and bias alone, each into poisoned outputs, against numpy."""
    rows, n = x.shape[0], dense.shape[0]
    xp, bp, rp = wasm.put(x), wasm.put(bias), wasm.put(res)
    for act, use_bias, use_res in [(0, False, False), (1, True, True), (0, True, False)]:
        y = wasm.poisoned(rows * n)
        run(y, xp, bp if use_bias else 0, rp if use_res else 0, act)
        got = wasm.get(y, rows * n).reshape(rows, n)
        want = x.astype(np.float64) @ dense.T + (bias if use_bias else 0)
        if act:
            want = gelu(want)
        if use_res:
            want = want + res
        assert np.isfinite(got).all(), "an output was left unwritten"
        assert rel(got, want) < (GELU_TOLERANCE if act else GEMM_TOLERANCE), (label, rows, act, use_bias, use_res)


def _kwise_specs():
    """Every uniform word storage at a k the one-row k-wise kernel takes (whole 16-byte vectors of a
    row): groups of 4m words, of 2 words (int2 in groups of 32: lanes of two groups), per channel, per tensor."""
    out = []
    for variant in wk.all_variants():
        if not variant.panel_decode:
            continue
        k = 4 * variant.fmt.values_per_word * (8 if variant.fmt.values_per_word != 10 else 3)  # int3: 120
        base = {"format": variant.format, "scale_dtype": variant.scale_dtype, "asymmetric": variant.zeros}
        sizes = [gs for gs in (32, 64) if gs % variant.fmt.values_per_word == 0 and k % gs == 0] + [0] + ([] if variant.zeros else [-1])
        out += [(QuantSpec(**base, group_size=gs), k) for gs in sizes]
    return out


@pytest.mark.parametrize("spec,k", _kwise_specs(), ids=lambda v: str(v) if isinstance(v, int) else
                         f"{v.format}-{v.scale_dtype}-{'asym' if v.asymmetric else 'sym'}-g{v.group_size}")
@pytest.mark.parametrize("build", ["simd", "relaxed-simd"])
def test_one_row_kwise_gemv_matches_numpy(wasm, wasm_relaxed, build, spec, k, rng):
    """One row of x over whole vectors of a row's words: codes masked in place against x scaled by
    powers of two, the zero point taken out through the groups' sums of x; n = 13 (a partial panel),
    outputs poisoned, column ranges split as threads split them."""
    wasm = wasm_relaxed if build == "relaxed-simd" else wasm
    n = 13
    qt = quantize("w", rng.standard_normal((n, k)).astype(np.float32), spec)
    dense = dequantize(qt).astype(np.float64)
    x = (rng.standard_normal((1, k)) * 3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    L = qt.matrix_layout()
    key = wk.variant_of(spec).key
    wasm.reset()
    ptrs = put_tensor(wasm, qt)
    xp, bp = wasm.put(x), wasm.put(bias)
    y = wasm.poisoned(n)
    for lo, hi in [(0, wk.PANEL_COLUMNS), (wk.PANEL_COLUMNS, n)]:
        wasm(f"gemm_{key}", xp, 1, k, y, n, lo, hi, ptrs["codes"], ptrs["scales"], ptrs["zeros"], ptrs["book"],
             L["words_per_row"], L["groups_per_row"], L["group_size"], L["codebook_stride"], bp, 0, 0, wasm.scratch())
    got = wasm.get(y, n)
    assert np.isfinite(got).all(), "an output was left unwritten"
    assert rel(got, x.astype(np.float64) @ dense.T + bias) < GEMM_TOLERANCE, key


def test_gemm_column_ranges_split_the_work(wasm, rng):
    """Threads each take a range of output columns (multiples of the panel width); together they cover y exactly."""
    n, k, rows = 30, 64, 7
    P = wk.PANEL_COLUMNS
    qt = quantize("w", rng.standard_normal((n, k)).astype(np.float32), QuantSpec("int4", group_size=32))
    x = rng.standard_normal((rows, k)).astype(np.float32)
    wasm.reset()
    ptrs = put_tensor(wasm, qt)
    xp, y = wasm.put(x), wasm.poisoned(rows * n)
    L = qt.matrix_layout()
    for lo, hi in [(0, P), (P, 3 * P), (3 * P, n)]:
        wasm("gemm_" + wk.variant_of(qt.spec).key, xp, rows, k, y, n, lo, hi, ptrs["codes"], ptrs["scales"], 0, 0,
             L["words_per_row"], L["groups_per_row"], L["group_size"], 0, 0, 0, 0, wasm.scratch())
    got = wasm.get(y, rows * n).reshape(rows, n)
    assert rel(got, x.astype(np.float64) @ dequantize(qt).astype(np.float64).T) < GEMM_TOLERANCE


EMBED_SPECS = [QuantSpec("float32"), QuantSpec("int4", group_size=32), QuantSpec("int3-dense", asymmetric=True),
               QuantSpec("int2-4values", scale_dtype="float16"), QuantSpec("int4-optimal", codebook="channel")]


# k = 64: packed rows decoded straight into y; 70 (where the groups allow it): through the scratch, and a k % 4 tail
@pytest.mark.parametrize("spec,k", [(s, k) for s in EMBED_SPECS for k in (64, 70) if not (s.group_size and k % s.group_size)],
                         ids=lambda v: v.format if isinstance(v, QuantSpec) else str(v))
def test_embed_matches_numpy(wasm, spec, k, rng):
    rows = 20
    qt = quantize("table", rng.standard_normal((rows, k)).astype(np.float32), spec)
    table = dequantize(qt)
    ids = np.array([3, 0, 19, 3, 25, 7], np.uint32)  # 25 >= rows: a zero row
    base = rng.standard_normal((len(ids), k)).astype(np.float32)
    L = qt.matrix_layout()
    wasm.reset()
    ptrs = put_tensor(wasm, qt)
    idp = wasm.put(ids)
    want = np.where((ids < rows)[:, None], table[np.minimum(ids, rows - 1)], 0)
    for accumulate in (0, 1):
        y = wasm.put(base) if accumulate else wasm.poisoned(len(ids) * k)
        wasm("embed_" + wk.variant_of(spec).key, idp, y, accumulate, ptrs["codes"], ptrs["scales"], ptrs["zeros"], ptrs["book"],
             rows, k, L["words_per_row"], L["groups_per_row"], L["group_size"], L["codebook_stride"], 0, len(ids), wasm.scratch())
        got = wasm.get(y, len(ids) * k).reshape(len(ids), k)
        np.testing.assert_allclose(got, want + (base if accumulate else 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", [v for v in wk.all_variants() if v.fmt.quantized and not v.codebook], ids=lambda v: v.key)
@pytest.mark.parametrize("group_size,k", [(32, 96), (0, 100)])
def test_decode_of_every_storage_is_numpys_dequantize(wasm, variant, group_size, k, rng):
    """The decode the GEMM and the embedding share, row by row, against dequantize: equal values
    (each decode path (whole-word lanes by mask, bytes or multiply, or one value at a time) rounds
    (u - z) * s like numpy); per-channel scales over k = 100: a partial last word."""
    rows = 7
    spec = QuantSpec(variant.format, scale_dtype=variant.scale_dtype, asymmetric=variant.zeros, group_size=group_size)
    qt = quantize("table", rng.standard_normal((rows, k)).astype(np.float32), spec)
    L = qt.matrix_layout()
    wasm.reset()
    ptrs = put_tensor(wasm, qt)
    ids = np.arange(rows, dtype=np.uint32)
    y = wasm.poisoned(rows * k)
    wasm("embed_" + variant.key, wasm.put(ids), y, 0, ptrs["codes"], ptrs["scales"], ptrs["zeros"], ptrs["book"],
         rows, k, L["words_per_row"], L["groups_per_row"], L["group_size"], L["codebook_stride"], 0, rows, wasm.scratch())
    np.testing.assert_array_equal(wasm.get(y, rows * k).reshape(rows, k), dequantize(qt))


@pytest.mark.parametrize("cols", [384, 30])
def test_layernorm(wasm, cols, rng):
    rows = 5
    x = (rng.standard_normal((rows, cols)) * 3 + 1).astype(np.float32)
    g, b = rng.standard_normal(cols).astype(np.float32), rng.standard_normal(cols).astype(np.float32)
    wasm.reset()
    xp, gp, bp, y = wasm.put(x), wasm.put(g), wasm.put(b), wasm.poisoned(rows * cols)
    wasm("layernorm", xp, y, cols, gp, bp, 1e-12, 0, rows)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-12) * g + b
    assert rel(wasm.get(y, rows * cols).reshape(rows, cols), want) < OPS_TOLERANCE


@pytest.mark.parametrize("d,masked", [(32, True), (6, False)])
def test_attention(wasm, d, masked, rng):
    batch, seq, heads = 3, 7, 2
    q, k, v = (rng.standard_normal((batch * seq, heads * d)).astype(np.float32) for _ in range(3))
    mask = (rng.random(batch * seq) > 0.3).astype(np.float32)
    mask[::seq] = 1
    mask[seq:2 * seq] = 0  # a sequence with every key masked gives zeros, as the JS path does
    wasm.reset()
    qp, kp, vp, mp, y = wasm.put(q), wasm.put(k), wasm.put(v), wasm.put(mask), wasm.poisoned(batch * seq * heads * d)
    wasm("attention", qp, kp, vp, mp if masked else 0, y, seq, heads, d, 0, batch * heads, wasm.scratch())
    want = np.zeros((batch * seq, heads * d))
    for bi in range(batch):
        for h in range(heads):
            sl = slice(bi * seq, (bi + 1) * seq)
            hs = slice(h * d, (h + 1) * d)
            s = q[sl, hs].astype(np.float64) @ k[sl, hs].T.astype(np.float64) / np.sqrt(d)
            keep = mask[sl] > 0.5 if masked else np.ones(seq, bool)
            s = np.where(keep[None, :], s, -np.inf)
            if keep.any():
                p = np.exp(s - s.max(1, keepdims=True))
                want[sl, hs] = (p / p.sum(1, keepdims=True)) @ v[sl, hs]
    assert rel(wasm.get(y, batch * seq * heads * d).reshape(want.shape), want) < OPS_TOLERANCE


def test_meanpool_gelu_free_ops(wasm, rng):
    batch, seq, hidden = 3, 5, 40
    x = rng.standard_normal((batch * seq, hidden)).astype(np.float32)
    mask = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1], np.float32)
    wasm.reset()
    xp, mp = wasm.put(x), wasm.put(mask)
    for normalize in (0, 1):
        y = wasm.poisoned(batch * hidden)
        wasm("meanpool", xp, mp, y, seq, hidden, normalize, 0, batch)
        m = mask.reshape(batch, seq, 1)
        want = (x.reshape(batch, seq, hidden) * m).sum(1) / m.sum(1)
        if normalize:
            want = want / np.linalg.norm(want, axis=1, keepdims=True)
        assert rel(wasm.get(y, batch * hidden).reshape(batch, hidden), want) < OPS_TOLERANCE


def test_im2col_vit_tokens_gather(wasm, rng):
    batch, channels, size, patch, hidden = 2, 3, 8, 4, 12
    img = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
    g = size // patch
    n_rows, cols = batch * g * g, channels * patch * patch
    wasm.reset()
    ip, y = wasm.put(img), wasm.poisoned(n_rows * cols)
    wasm("im2col", ip, y, channels, size, size, patch, 0, n_rows)
    want = img.reshape(batch, channels, g, patch, g, patch).transpose(0, 2, 4, 1, 3, 5).reshape(n_rows, cols)
    np.testing.assert_array_equal(wasm.get(y, n_rows * cols).reshape(n_rows, cols), want)

    n_patches = g * g
    patches = rng.standard_normal((batch * n_patches, hidden)).astype(np.float32)
    cls, pos = rng.standard_normal(hidden).astype(np.float32), rng.standard_normal((n_patches + 1, hidden)).astype(np.float32)
    pp, cp, op, y = wasm.put(patches), wasm.put(cls), wasm.put(pos), wasm.poisoned(batch * (n_patches + 1) * hidden)
    wasm("vit_tokens", pp, cp, op, y, n_patches, hidden, 0, batch * (n_patches + 1))
    tokens = np.concatenate([np.broadcast_to(cls, (batch, 1, hidden)), patches.reshape(batch, n_patches, hidden)], 1) + pos
    np.testing.assert_allclose(wasm.get(y, tokens.size).reshape(tokens.shape), tokens.reshape(-1, hidden)[None].reshape(tokens.shape), rtol=1e-7)

    ids = np.array([4, 0, 2], np.uint32)
    idp, y = wasm.put(ids), wasm.poisoned(3 * hidden)
    wasm("gather_rows", pp, idp, y, hidden, 0, 3)
    np.testing.assert_array_equal(wasm.get(y, 3 * hidden).reshape(3, hidden), patches[ids])


def test_kernels_cover_every_registry_format_and_assemble_deterministically():
    """A new format row gets kernels without hand-written wasm; the same input gives the same bytes."""
    keys = {v.key for v in wk.all_variants()}
    text = wk.render_wat(wk.all_variants(), shared=True)
    for key in keys:
        assert f'(export "gemm_{key}")' in text and f'(export "embed_{key}")' in text
    assert wk.build(wk.all_variants(), shared=True) == wk.build(wk.all_variants(), shared=True)


def test_missing_assembler_is_one_clear_line(monkeypatch):
    from ulpq_build.errors import UserError

    monkeypatch.setitem(__import__("sys").modules, "wasmtime", None)  # import wasmtime now fails
    with pytest.raises(UserError, match="pip install wasmtime"):
        wk.assemble("(module)")


# ---- codebook formats (levels "codebook": e8p, e8p-rvq3, ...): decode tables expanded in wasm from the
# bundle's codebook buffer, products over the stored (rotated) rows, and the input rotation itself

CODEBOOK_VARIANTS = [v for v in wk.all_variants() if v.codebook]
# the rotation in float32 (signs and scale folded, then +-1 sums) against numpy's float64 transform
ROTATION_TOLERANCE = 1e-6


def put_codebook(wasm):
    """codebook_expand's tables, from the bundle's codebook buffer (vq.tensor.codebook_tables), poisoned first."""
    from ulpq_build.vq.tensor import codebook_tables

    raw = wasm.put(codebook_tables())
    book = wasm.put(np.full(wk.CODEBOOK_BYTES // 4, POISON, np.float32))
    wasm("codebook_expand", raw, book)
    return book


def test_e8p_signed_half_tables_give_every_codeword(wasm):
    """The one-row product's signed half tables (CODEBOOK_E8P_LO/HI) at the offsets it computes from a code give
    numpy's codeword for all 65536 codes (its +-1/4 shift is added outside the tables)."""
    from ulpq_build.vq.e8 import e8p_decode

    wasm.reset()
    book = put_codebook(wasm)
    table = lambda at: wasm.get(book + at, 4096 * 4).reshape(4096, 4)  # noqa: E731
    lo, hi = table(wk.CODEBOOK_E8P_LO), table(wk.CODEBOOK_E8P_HI)
    c = np.arange(1 << 16)
    parity = np.array([bin(n).count("1") & 1 for n in range(16)])
    lo_at = ((c & 0xFF00) | (((c >> 1) & 15) << 4)) >> 4
    hi_at = ((c & 0xFFE0) | (parity[(c >> 1) & 15] << 4)) >> 4
    shift = np.where(c & 1, -0.25, 0.25).astype(np.float32)[:, None]
    got = np.concatenate([lo[lo_at], hi[hi_at]], axis=1) + shift
    np.testing.assert_array_equal(got, e8p_decode(c))


def codebook_case(variant, rows_n, k, rng):
    from ulpq_build.vq.tensor import decode_rotated

    qt = quantize("w", rng.standard_normal((rows_n, k)).astype(np.float32), QuantSpec(variant.format))
    return qt, decode_rotated(qt.parts, variant.fmt, rows_n, k).astype(np.float64)


def test_every_codebook_row_has_kernels():
    from ulpq_build.formats import CODEBOOK_FORMATS

    assert sorted(v.format for v in CODEBOOK_VARIANTS) == sorted(CODEBOOK_FORMATS)


@pytest.mark.parametrize("variant", CODEBOOK_VARIANTS, ids=lambda v: v.key)
@pytest.mark.parametrize("k", [96, 104])  # 104: an odd count of groups (the one-row kernel's last single group)
def test_codebook_decode_is_numpys(wasm, variant, k, rng):
    """Rows decoded by the kernels (embed: the GEMM's decode) equal numpy's CodedMatrix.dequantize exactly."""
    rows = 7
    qt, dense = codebook_case(variant, rows, k, rng)
    L = qt.matrix_layout()
    wasm.reset()
    book = put_codebook(wasm)
    codes, scales = wasm.put(qt.parts["codes"]), wasm.put(qt.parts["scales"])
    y = wasm.poisoned(rows * k)
    wasm("embed_" + variant.key, wasm.put(np.arange(rows, dtype=np.uint32)), y, 0, codes, scales, 0, book,
         rows, k, L["words_per_row"], L["groups_per_row"], L["group_size"], 0, 0, rows, wasm.scratch())
    np.testing.assert_array_equal(wasm.get(y, rows * k).reshape(rows, k), dense.astype(np.float32))


@pytest.mark.parametrize("variant", CODEBOOK_VARIANTS, ids=lambda v: v.key)
@pytest.mark.parametrize("k", [96, 104, 136])  # 136: 17 groups, a one-row step of 16 one-byte codes and one left
@pytest.mark.parametrize("rows", [1, 5, 13])  # 1: the one-row kernel (decoded in registers); else decode + panel
@pytest.mark.parametrize("build", ["simd", "relaxed-simd"])
def test_codebook_gemm_matches_numpy(wasm, wasm_relaxed, build, variant, k, rows, rng):
    wasm = wasm_relaxed if build == "relaxed-simd" else wasm
    n = 13  # a partial last panel; output ranges split as threads split them
    qt, dense = codebook_case(variant, n, k, rng)
    x = (rng.standard_normal((rows, k)) * 2).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    res = rng.standard_normal((rows, n)).astype(np.float32)
    L = qt.matrix_layout()
    wasm.reset()
    book = put_codebook(wasm)
    codes, scales = wasm.put(qt.parts["codes"]), wasm.put(qt.parts["scales"])

    def run(y, xp, bp, rp, act):
        for lo, hi in [(0, wk.PANEL_COLUMNS), (wk.PANEL_COLUMNS, n)]:
            wasm(f"gemm_{variant.key}", xp, rows, k, y, n, lo, hi, codes, scales, 0, book, L["words_per_row"],
                 L["groups_per_row"], L["group_size"], 0, bp, rp, act, wasm.scratch())

    check_epilogues(wasm, run, x, dense, bias, res, variant.key)


@pytest.mark.parametrize("n", [8, 12, 24, 48, 96, 256, 384, 1536])  # p = 8; 12 x 1, 2, 4, 8; 256; 12 x 32, 128
def test_hadamard_rows_is_the_input_rotation(wasm, n, rng):
    """rotation_signs + hadamard_rows = incoherence.RandomHadamard(n, seed).forward, rows split in ranges."""
    from ulpq_build.vq.incoherence import RandomHadamard, sign_bits
    from ulpq_build.vq.tensor import rotation_seed

    rows, seed = 5, rotation_seed(n)
    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    wasm.reset()
    d = wasm.poisoned(n)
    wasm("rotation_signs", seed, n, d)
    np.testing.assert_array_equal(wasm.get(d, n) < 0, sign_bits(n, seed).astype(bool))
    xp, y = wasm.put(x), wasm.poisoned(rows * n)
    for lo, hi in [(0, 2), (2, rows)]:
        wasm("hadamard_rows", xp, y, n, d, lo, hi)
    want = RandomHadamard(n, seed).forward(x.astype(np.float64))
    assert rel(wasm.get(y, rows * n).reshape(rows, n), want) < ROTATION_TOLERANCE
