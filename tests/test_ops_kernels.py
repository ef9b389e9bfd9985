"""The transformer-operator kernels (embed, add, gelu, layernorm, softmax, attention, meanpool,
im2col, vit_tokens): every variant (option combination x weight storage x browser profile)
compiles in both WGSL compilers browsers use (naga: Firefox, Tint: Chrome), stays within the
workgroup memory it declares, and, executed on lavapipe through wgpu, matches a float64 numpy
reference written here. Outputs start as NaN (KernelRunner poisons them), so an element a kernel
never writes fails. Shapes are small and never multiples of the workgroup size."""

import itertools
import math
import re

import numpy as np
import pytest

from ulpq_build.kernels import KERNELS, KernelVariant, WeightStorage, check_attention_dims, render, workgroups
from ulpq_build.native_webgpu import COMPILERS, KernelRunner, cached_device, validate, weight_arrays
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import gelu, relative_error

# Tolerances: relative error = max |actual - reference| / max |reference| (reference.relative_error).
# One float32 rounding per value (gather of s * level, a sum, a copy) sits near 6e-8; 1e-6 leaves
# room for the one extra add of `accumulate` and of vit_tokens.
EMBED_TOLERANCE = 1e-6
ADD_TOLERANCE = 1e-6
# erf by Abramowitz & Stegun 7.1.26 has |error| < 1.5e-7 (times |x| / 2 in gelu): well below 1e-6.
GELU_TOLERANCE = 1e-6
# float32 reductions over up to 384 values, sqrt / exp in float32: the ~1e-5 class.
LAYERNORM_TOLERANCE = 1e-5
SOFTMAX_TOLERANCE = 1e-5
ATTENTION_TOLERANCE = 1e-5
MEANPOOL_TOLERANCE = 1e-5
IM2COL_TOLERANCE = 0.0  # a pure copy: bit-exact
VIT_TOKENS_TOLERANCE = 1e-6

OPS = ("embed", "add", "gelu", "layernorm", "softmax", "attention", "meanpool", "im2col", "vit_tokens")

# Embedding tables: raw float32, int4 in groups of 32 (also with f16 scales and zero points),
# a fitted codebook and the straddling bit stream.
EMBED_SPECS = {
    "float32": QuantSpec("float32"),
    "int4": QuantSpec("int4", 32),
    "int4.asym.f16": QuantSpec("int4", 32, True, "float16"),
    "int2-optimal": QuantSpec("int2-optimal", 32),
    "int3-dense": QuantSpec("int3-dense", 32),
}


def all_variants():
    out = []
    for name in OPS:
        kernel = KERNELS[name]
        storages = [WeightStorage.of(spec) for spec in EMBED_SPECS.values()] if kernel.weighted else [None]
        for values in itertools.product(*kernel.options.values()):
            options = dict(zip(kernel.options, values))
            for storage in storages:
                for profile in PROFILES:
                    out.append(KernelVariant.make(name, profile, storage, **options))
    return sorted({v.key: v for v in out}.items())


ALL_VARIANTS = all_variants()
SPEC_OF_STORAGE = {WeightStorage.of(spec).key: spec for spec in EMBED_SPECS.values()}


def test_every_storage_has_one_spec():
    assert len(SPEC_OF_STORAGE) == len(EMBED_SPECS)


# --- compilation ---------------------------------------------------------------------------------

WORKGROUP_VAR = re.compile(r"var<workgroup>\s+\w+\s*:\s*array<(f32|u32|i32|vec4<f32>),\s*(\d+)>")


def workgroup_bytes(code: str) -> int:
    return sum((16 if kind.startswith("vec4") else 4) * int(n) for kind, n in WORKGROUP_VAR.findall(code))


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("key, variant", ALL_VARIANTS, ids=[k for k, _ in ALL_VARIANTS])
def test_compiles(key, variant, compiler):
    code = render(variant)
    assert code.startswith("// ulpq_build shader") and f"key: {key}" in code
    for line in ("template: ", f"kernel: {variant.kernel}", f"workgroup_size: {variant.workgroup_size}", "requires: "):
        assert line in code
    assert "var<workgroup>" not in code or workgroup_bytes(code) > 0
    assert workgroup_bytes(code) <= variant.workgroup_storage_bytes <= 16384
    assert variant.limits["maxStorageBuffersPerShaderStage"] <= 8
    validate(code, variant.workgroup_size, compiler)


# --- execution -----------------------------------------------------------------------------------

class PresetRunner(KernelRunner):
    """A KernelRunner whose output buffer starts from `preset` instead of NaN (for kernels that
    add into y); with preset None it poisons as usual."""

    preset = None

    def buffer(self, data, *, readable=False):
        if readable and self.preset is not None:  # run() creates readable buffers only for outputs
            assert np.asarray(data).size == self.preset.size
            data = self.preset.astype(np.float32)
        return super().buffer(data, readable=readable)


_RUNNERS = {}


def runner() -> PresetRunner:
    if "wgpu" not in _RUNNERS:
        _RUNNERS["wgpu"] = PresetRunner(cached_device("wgpu", 512))
    return _RUNNERS["wgpu"]


def run(variant, arrays, params, count, preset=None):
    r = runner()
    r.preset = preset
    try:
        y = r.run(variant, arrays, params, {"y": count})["y"]
    finally:
        r.preset = None
    assert np.isfinite(y).all(), f"{int((~np.isfinite(y)).sum())} of {count} outputs never written (still NaN) or not finite"
    return y


def check(y, expected, tolerance):
    err = relative_error(y, np.asarray(expected, np.float64).ravel())
    assert err <= tolerance, f"relative error {err:.3g} > {tolerance}"


def by_kernel(name):
    return [(k, v) for k, v in ALL_VARIANTS if v.kernel == name]


def ids_of(pairs):
    return [k for k, _ in pairs]


_TABLES = {}


def embed_table(storage_key):
    """A seeded [n, k] table quantized under the storage's spec (cached: Lloyd-Max is not free)."""
    if storage_key not in _TABLES:
        rng = np.random.default_rng(99)
        w = (rng.standard_normal((50, 96)) * 0.5).astype(np.float32)
        qt = quantize("table", w, SPEC_OF_STORAGE[storage_key])
        _TABLES[storage_key] = qt, dequantize(qt).astype(np.float64)
    return _TABLES[storage_key]


def embed_params(qt, tokens):
    layout = qt.matrix_layout()
    return {"tokens": tokens, "n": layout["rows"], "count": tokens * layout["k"],
            **{k: layout[k] for k in ("k", "words_per_row", "groups_per_row", "group_size", "codebook_stride")}}


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("embed"), ids=ids_of(by_kernel("embed")))
def test_embed(key, variant, rng):
    qt, table = embed_table(variant.weight.key)
    n, k = table.shape
    ids = np.concatenate([[0, n - 1, 7, 7], rng.integers(0, n, 9)]).astype(np.uint32)  # 13 tokens, a repeat
    arrays = {"ids": ids, **weight_arrays(qt)}
    expected = table[ids]
    preset = None
    if variant.opts["accumulate"]:
        preset = rng.standard_normal(expected.shape).astype(np.float32)
        expected = expected + preset
    y = run(variant, arrays, embed_params(qt, len(ids)), expected.size, preset=preset.ravel() if preset is not None else None)
    check(y, expected, EMBED_TOLERANCE)


@pytest.mark.gpu
def test_embed_id_outside_the_table_gives_zeros():
    variant = KernelVariant.make("embed", "firefox", WeightStorage.of(EMBED_SPECS["int4"]))
    qt, table = embed_table(variant.weight.key)
    ids = np.array([3, 50, 1000, 0], np.uint32)
    y = run(variant, {"ids": ids, **weight_arrays(qt)}, embed_params(qt, len(ids)), ids.size * table.shape[1])
    expected = np.concatenate([table[3], np.zeros(2 * table.shape[1]), table[0]])
    check(y, expected, EMBED_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("add"), ids=ids_of(by_kernel("add")))
def test_add(key, variant, rng):
    rows, cols = 9, 37
    a = rng.standard_normal(rows * cols).astype(np.float32)
    for b_count in (rows * cols, cols):  # elementwise, then one row broadcast over every row
        b = rng.standard_normal(b_count).astype(np.float32)
        y = run(variant, {"a": a, "b": b}, {"count": a.size, "b_count": b_count}, a.size)
        check(y, a.astype(np.float64) + np.tile(b.astype(np.float64), a.size // b_count), ADD_TOLERANCE)


@pytest.mark.gpu
def test_add_over_a_2d_grid(rng):
    """65,537 workgroups of 128: more than one grid dimension holds, so wid.y is used."""
    variant = KernelVariant.make("add", "firefox")
    count = 65536 * 128 + 77
    assert workgroups(variant, {"count": count, "b_count": 5})[1] == 2
    a = rng.standard_normal(count).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = run(variant, {"a": a, "b": b}, {"count": count, "b_count": 5}, count)
    check(y, a.astype(np.float64) + np.tile(b.astype(np.float64), count // 5 + 1)[:count], ADD_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("gelu"), ids=ids_of(by_kernel("gelu")))
def test_gelu(key, variant, rng):
    x = (rng.standard_normal(1001) * 3).astype(np.float32)
    x[:4] = (0.0, -8.0, 8.0, 1e-4)
    y = run(variant, {"x": x}, {"count": x.size}, x.size)
    check(y, gelu(x.astype(np.float64)), GELU_TOLERANCE)


def layernorm_ref(x, gamma, beta, eps):
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("layernorm"), ids=ids_of(by_kernel("layernorm")))
def test_layernorm(key, variant, rng):
    for rows, cols, eps in ((5, 384, 1e-12), (3, 100, 1e-5)):
        # a mean far from 0 relative to the spread: a one-pass E[x^2] - mean^2 would lose digits
        x = (rng.standard_normal((rows, cols)) * 0.5 + 20.0).astype(np.float32)
        gamma = (1.0 + 0.1 * rng.standard_normal(cols)).astype(np.float32)
        beta = (0.1 * rng.standard_normal(cols)).astype(np.float32)
        y = run(variant, {"x": x, "gamma": gamma, "beta": beta}, {"rows": rows, "cols": cols, "eps": eps}, x.size)
        expected = layernorm_ref(*(a.astype(np.float64) for a in (x, gamma, beta)), eps)
        check(y, expected, LAYERNORM_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("softmax"), ids=ids_of(by_kernel("softmax")))
def test_softmax(key, variant, rng):
    for rows, cols in ((4, 100), (3, 384), (2, 7)):
        x = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
        x[0, :3] += 90.0  # exp(x) alone would overflow float32: the max must be subtracted
        y = run(variant, {"x": x}, {"rows": rows, "cols": cols}, x.size)
        e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
        check(y, e / e.sum(axis=1, keepdims=True), SOFTMAX_TOLERANCE)


def attention_ref(q, k, v, keep, batch, seq, heads, d, scale):
    """softmax over the kept keys of each sequence; a sequence without kept keys gives zeros."""
    shape = (batch, seq, heads, d)
    q, k, v = (a.astype(np.float64).reshape(shape) for a in (q, k, v))
    keep = keep.reshape(batch, seq)
    k = np.where(keep[:, :, None, None], k, 0.0)  # padded rows may hold anything: they get no weight
    v = np.where(keep[:, :, None, None], v, 0.0)
    scores = np.einsum("bshd,bthd->bhst", q, k) * scale
    scores = np.where(keep[:, None, None, :], scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    p = np.where(keep[:, None, None, :], np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = p.sum(axis=-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return np.einsum("bhst,bthd->bshd", p, v).reshape(batch * seq, heads * d)


# (batch, seq, heads, head_dim, kept tokens per sequence): short, padded and fully padded
# sequences; seq longer than every workgroup but Safari's and equal to max_seq; head_dim larger
# than Firefox's 128 threads (the output is computed in column chunks).
ATTENTION_CASES = [
    (2, 7, 3, 32, (7, 5)),
    (3, 18, 3, 8, (18, 11, 0)),
    (1, 300, 2, 20, (260,)),
    (1, 5, 1, 136, (5,)),
    (2, 5, 2, 6, (5, 3)),  # head_dim not a multiple of 4: the dot product's tail
    (1, 3, 1, 260, (3,)),  # head_dim past the staged q row (256): q read from the buffer
]


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("attention"), ids=ids_of(by_kernel("attention")))
def test_attention(key, variant, rng):
    masked = variant.opts["mask"]
    for batch, seq, heads, d, lengths in ATTENTION_CASES:
        rows = batch * seq
        q, k, v = (rng.standard_normal((rows, heads * d)).astype(np.float32) for _ in range(3))
        keep = np.ones(rows, bool)
        if masked:
            keep = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).ravel()
            k[~keep] = np.nan  # padded keys must get no weight at all: not even 0 * NaN
            v[~keep] = np.nan
        dims = {"batch": batch, "seq": seq, "heads": heads, "head_dim": d, "scale": 1.0 / math.sqrt(d),
                "in_stride": heads * d, "q_off": 0, "k_off": 0, "v_off": 0}
        check_attention_dims(variant, dims)
        arrays = {"q": q, "k": k, "v": v}
        if masked:
            arrays["mask"] = keep.astype(np.float32)
        want = attention_ref(q, k, v, keep, batch, seq, heads, d, dims["scale"])
        y = run(variant, arrays, dims, q.size)  # every query row, padded or not, is written
        check(y, want, ATTENTION_TOLERANCE)
        # the fused Q|K|V product: one [rows, 3H] buffer (bound three times), columns q | k | v
        qkv = np.concatenate([q, k, v], axis=1)
        fused = {**dims, "in_stride": 3 * heads * d, "q_off": 0, "k_off": heads * d, "v_off": 2 * heads * d}
        y = run(variant, {**arrays, "q": qkv, "k": qkv, "v": qkv}, fused, q.size)
        check(y, want, ATTENTION_TOLERANCE)


def test_attention_refuses_sequences_longer_than_max_seq():
    for profile in PROFILES:
        variant = KernelVariant.make("attention", profile)
        max_seq = variant.tiles["max_seq"]
        dims = {"batch": 2, "seq": max_seq, "heads": 12, "head_dim": 64, "scale": 0.125}
        check_attention_dims(variant, dims)  # max_seq itself fits
        with pytest.raises(ValueError, match="max_seq"):
            check_attention_dims(variant, {**dims, "seq": max_seq + 1})
        with pytest.raises(ValueError, match="seq"):
            check_attention_dims(variant, {**dims, "seq": 0})
        with pytest.raises(ValueError, match="batch"):
            check_attention_dims(variant, {**dims, "batch": 70000})
    with pytest.raises(ValueError, match="not an attention variant"):
        check_attention_dims(KernelVariant.make("softmax", "chrome"), {"batch": 1, "seq": 1, "heads": 1, "head_dim": 1})


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("meanpool"), ids=ids_of(by_kernel("meanpool")))
def test_meanpool(key, variant, rng):
    for batch, seq, hidden, lengths in ((3, 7, 384, (7, 3, 0)), (2, 18, 100, (1, 13))):
        x = rng.standard_normal((batch * seq, hidden)).astype(np.float32)
        keep = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.float32)
        y = run(variant, {"x": x, "mask": keep.ravel()}, {"batch": batch, "seq": seq, "hidden": hidden}, batch * hidden)
        xs = x.astype(np.float64).reshape(batch, seq, hidden)
        pooled = (xs * keep[:, :, None]).sum(axis=1) / np.maximum(keep.sum(axis=1), 1e-9)[:, None]
        if variant.opts["normalize"]:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        check(y, pooled, MEANPOOL_TOLERANCE)
        assert not y.reshape(batch, hidden)[np.array(lengths) == 0].any()  # a fully padded sequence gives zeros


def im2col_ref(image, patch):
    b, c, h, w = image.shape
    gh, gw = h // patch, w // patch
    tiles = image[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return tiles.transpose(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * patch * patch)


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("im2col"), ids=ids_of(by_kernel("im2col")))
def test_im2col(key, variant, rng):
    image = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)
    for patch in (4, 5, 6):  # 6 does not divide 20: the last 2 rows and columns are dropped
        expected = im2col_ref(image.astype(np.float64), patch)
        dims = {"batch": 2, "channels": 3, "height": 20, "width": 20, "patch_size": patch, "count": expected.size}
        y = run(variant, {"image": image}, dims, expected.size)
        check(y, expected, IM2COL_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("key, variant", by_kernel("vit_tokens"), ids=ids_of(by_kernel("vit_tokens")))
def test_vit_tokens(key, variant, rng):
    batch, patches, hidden = 2, 25, 40
    p = rng.standard_normal((batch * patches, hidden)).astype(np.float32)
    cls = rng.standard_normal(hidden).astype(np.float32)
    pos = rng.standard_normal((patches + 1, hidden)).astype(np.float32)
    count = batch * (patches + 1) * hidden
    y = run(variant, {"patches": p, "cls": cls, "pos": pos},
            {"batch": batch, "patches": patches, "hidden": hidden, "count": count}, count)
    tokens = np.concatenate([np.broadcast_to(cls, (batch, 1, hidden)), p.reshape(batch, patches, hidden)], axis=1)
    check(y, tokens.astype(np.float64) + pos.astype(np.float64)[None], VIT_TOKENS_TOLERANCE)
