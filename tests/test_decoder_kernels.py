"""The generative decoders' WGSL kernels (issue 14): rmsnorm (with the residual stream updated in
place), rotary_cache / append_cache (rotate-half rotary on Q and K of the fused Q|K|V product, K
and V appended to the [batch][kv_heads][slot][head_dim] cache), cache_attention (prefill: causal,
padding mask, grouped-query heads, online softmax over any cache length), cache_attention_split +
attention_combine (the decode step split over slot chunks), gated (act(gate) * up), argmax over
logits rows (one stage, or argmax_parts then argmax with indices for long rows), and the tanh GELU
as a new row of the matrix products' activation table.

Every variant compiles in naga (Firefox's compiler) and Tint (Chrome's). Executed for each distinct
workgroup size (Firefox 128, Chrome/Edge 256, Safari 512) on both engines browsers ship: wgpu (naga,
on Debian's lavapipe, in this process) and Dawn (Tint, on the Mesa 25 lavapipe that
scripts/setup.sh unpacks into .mesa/, which Dawn needs: the same tests re-run in a child pytest,
test_executes_on_dawn), each is compared with decoder_reference.py / reference.py in float64 on
seeded random inputs. Outputs start
as NaN (u32 outputs as 0xffffffff) so an element never written fails; cache slots a kernel must not
touch start random and must come back bit-identical; padded and not-yet-written cache slots hold NaN
so a read of them fails. Without the WebGPU runtime (wgpu + lavapipe, wgpudawn) these tests fail."""

import itertools
import math
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest

from support import run_again_on_dawn
from ulpq_build.decoder_reference import causal_attention, rms_norm, rotary
from ulpq_build.kernels import (EPILOGUE_ACTIVATIONS, GATE_ACTIVATIONS, KERNELS, MAX_DECODE_CHUNK, KernelVariant, WeightStorage,
                                argmax_split, check_cache_attention_dims, check_cache_dims, check_step_attention_dims,
                                decode_chunks,
                                decoder_operator_kernels, pack_params, render, workgroups)
from ulpq_build.native_webgpu import (COMPILERS, KernelRunner, adapter_summary, cached_device, matmul_params, validate,
                                      weight_arrays)
from ulpq_build.profiles import PROFILES
from ulpq_build.quantize import dequantize, quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.reference import ACTIVATIONS, relative_error
from ulpq_build.shader_store import code_of, distinct_shaders

# Tolerances: relative error = max |actual - reference| / max |reference| (reference.relative_error).
# float32 sums of squares over <= 300 values, one sqrt: the ~1e-5 class of layernorm.
RMSNORM_TOLERANCE = 1e-5
# rotary: the angle positions * inv_freq is rounded to float32 (as transformers computes it), an error
# of up to |angle| * 2^-24 rad, so it grows with the position; the tests' positions stay below
# MAX_TEST_POSITION. The cos/sin of the reduced angle and the products add a few float32 roundings.
MAX_TEST_POSITION = 600
ROTARY_TOLERANCE = 2 * MAX_TEST_POSITION * 2.0 ** -24 + 1e-6
COPY_TOLERANCE = 0.0  # V appended and Q copied by append_cache: bit-exact
# float32 dot products over head_dim <= 64, exp and online rescaling over <= 300 slots: the 1e-5 class
# of the encoder attention kernel.
ATTENTION_TOLERANCE = 1e-5
# one exp and a division in float32 per element (silu, gelu_tanh), erf's 1.5e-7 (gelu)
GATED_TOLERANCE = 2e-6
# float32 accumulation over K = 128 products against a float64 reference, as tests/test_kernels.py
MATMUL_TOLERANCE = 1e-5

DECODER_KERNELS = ("rmsnorm", "rotary_cache", "append_cache", "cache_attention", "cache_attention_split",
                   "attention_combine", "rotary_step_attention", "step_attention", "gated", "argmax", "argmax_parts")
EXECUTED_PROFILES = ("firefox", "chrome", "safari")  # 128, 256, 512 threads; edge renders chrome's programs


def all_variants():
    out = []
    for name in DECODER_KERNELS:
        kernel = KERNELS[name]
        for values in itertools.product(*kernel.options.values()):
            for profile in PROFILES:
                out.append(KernelVariant.make(name, profile, None, **dict(zip(kernel.options, values))))
    return sorted({v.key: v for v in out}.items())


ALL_VARIANTS = all_variants()


def variants_of(name, profiles=EXECUTED_PROFILES, **options):
    return [KernelVariant.make(name, p, None, **options) for p in profiles]


def ids(variants):
    return [v.key for v in variants]


# --- compilation and the registry ---------------------------------------------------------------

WORKGROUP_VAR = re.compile(r"var<workgroup>\s+\w+\s*:\s*array<(f32|u32|i32),\s*(\d+)>")


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("key, variant", ALL_VARIANTS, ids=[k for k, _ in ALL_VARIANTS])
def test_compiles(key, variant, compiler):
    code = render(variant)
    assert code.startswith("// ulpq_build shader") and f"key: {key}" in code
    for line in (f"template: {variant.spec.template}", f"kernel: {variant.kernel}", f"workgroup_size: {variant.workgroup_size}"):
        assert line in code
    declared = sum(4 * int(n) for _, n in WORKGROUP_VAR.findall(code))
    assert declared == variant.workgroup_storage_bytes <= 16384  # within WebGPU's default limit, as declared
    assert variant.limits["maxStorageBuffersPerShaderStage"] <= 8
    validate(code, variant.workgroup_size, compiler)


def test_registered_for_every_profile_and_stored_once_per_program():
    """The bundle can ship them: every decoder operator list renders for every profile, and the shader
    store maps each key to a file, chrome and edge sharing theirs."""
    llama = {"norm": "rms", "positions": {"kind": "rotary"}, "ffn": "gated", "activation": "silu"}
    gpt2 = {"norm": "layer", "positions": {"kind": "learned"}, "ffn": "plain", "activation": "gelu_tanh"}
    kernels_of = {}
    for name, model in (("llama", llama), ("gpt2", gpt2)):
        ops = decoder_operator_kernels(model)
        kernels_of[name] = {kernel for _, kernel, _, _ in ops}
        variants = [KernelVariant.make(kernel, p, weight, **options) for _, kernel, weight, options in ops for p in PROFILES]
        files, file_of = distinct_shaders(variants)
        assert set(file_of) == {v.key for v in variants}
        for _, kernel, weight, options in ops:
            key = {p: KernelVariant.make(kernel, p, weight, **options).key for p in PROFILES}
            assert file_of[key["chrome"]] == file_of[key["edge"]]
            assert len({file_of[key[p]] for p in ("chrome", "firefox", "safari")}) == 3
            assert all(f.text.startswith("// ulpq_build shader from templates/") for f in files)
    assert {"rmsnorm", "rotary_cache", "gated"} <= kernels_of["llama"] and "append_cache" in kernels_of["gpt2"]
    assert {"cache_attention", "cache_attention_split", "attention_combine", "argmax"} <= kernels_of["llama"] & kernels_of["gpt2"]


def test_activation_table_has_a_row_per_activation():
    """Each activation the kernels offer renders its own `activate` (gelu_tanh is not the erf gelu)
    and has a numpy reference."""
    bodies = {}
    for name in set(EPILOGUE_ACTIVATIONS) | set(GATE_ACTIVATIONS):  # (EPILOGUE's "runtime" picks one of them)
        kernel = "gemv" if name in EPILOGUE_ACTIVATIONS else "gated"
        extra = {"vec4": False} if kernel == "gemv" else {}
        code = code_of(render(KernelVariant.make(kernel, "chrome", WeightStorage("int4") if kernel == "gemv" else None,
                                                 activation=name, **extra)))
        bodies[name] = re.search(r"fn activate\(v: f32\) -> f32 \{\n(.*?)\n\}", code, re.DOTALL).group(1)
        assert name in ACTIVATIONS
    assert len(set(bodies.values())) == len(bodies)
    assert "gelu_tanh" in EPILOGUE_ACTIVATIONS and "silu" in GATE_ACTIVATIONS


def test_dims_checks_refuse_what_the_kernels_cannot_compute():
    variant = KernelVariant.make("cache_attention_split", "firefox")
    dims = {"rows": 2, "seq": 1, "heads": 8, "kv_heads": 2, "head_dim": 64, "start": 99, "capacity": 100,
            "chunk": 32, "chunks": 4}
    check_cache_attention_dims(variant, dims)
    for change, match in [({"chunks": 3}, "do not cover"), ({"start": 100}, "capacity"), ({"kv_heads": 3}, "multiple"),
                          ({"heads": 34}, "query group"), ({"head_dim": 65}, "even"), ({"rows": 3, "seq": 2}, "whole"),
                          ({"heads": 64, "kv_heads": 2}, "query group")]:
        with pytest.raises(ValueError, match=match):
            check_cache_attention_dims(variant, {**dims, **change})
    with pytest.raises(ValueError, match="split"):
        check_cache_attention_dims(KernelVariant.make("cache_attention", "firefox"), dims)
    with pytest.raises(ValueError, match="not a cache attention"):
        check_cache_attention_dims(KernelVariant.make("argmax", "firefox"), dims)
    with pytest.raises(ValueError, match="capacity"):
        check_cache_dims({**dims, "start": 100})


def test_decode_chunks_cover_the_cache_in_whole_blocks():
    for profile in PROFILES:
        variant = KernelVariant.make("cache_attention_split", profile)
        block = variant.workgroup_size // 8
        for slots, kv, rows in itertools.product((1, 31, 293, 2048, 32769), (1, 2, 8), (1, 4)):
            chunk, chunks = decode_chunks(variant, slots, kv, rows)
            assert chunk % block == 0 and block <= chunk <= max(block, MAX_DECODE_CHUNK)
            assert (chunks - 1) * chunk < slots <= chunks * chunk  # every slot, no empty chunk
            check_cache_attention_dims(variant, {"rows": rows, "seq": 1, "heads": 4 * kv, "kv_heads": kv, "head_dim": 64,
                                                 "start": slots - 1, "capacity": slots, "chunk": chunk, "chunks": chunks})
        assert decode_chunks(variant, 32768, 8, 1) == (MAX_DECODE_CHUNK, 32768 // MAX_DECODE_CHUNK)


# --- execution -----------------------------------------------------------------------------------

ENGINE_VARIABLE = "ULPQ_DECODER_KERNELS_ENGINE"  # "dawn" in the child run of test_executes_on_dawn
ENGINE = os.environ.get(ENGINE_VARIABLE, "wgpu")
_RUNNER = {}


def runner() -> KernelRunner:
    if ENGINE not in _RUNNER:  # 512 threads for Safari's variants; a missing runtime raises: the test fails
        _RUNNER[ENGINE] = KernelRunner(cached_device(ENGINE, 512))
    return _RUNNER[ENGINE]


@pytest.mark.gpu
def test_executes_on_dawn(tmp_path):
    """Every execution test below again, on Dawn (Tint's code, as Chrome runs it), in a child pytest
    (which deselects this test): Dawn refuses Debian 12's Mesa 22 lavapipe, so the child gets the
    Mesa 25 one in .mesa/ through VK_ICD_FILENAMES and LD_LIBRARY_PATH, which must be set before the
    process starts."""
    assert ENGINE == "wgpu", f"{ENGINE_VARIABLE} is for the child run, which deselects this test"
    run_again_on_dawn(__file__, "not test_compiles and not test_executes_on_dawn and not dims and not registered and not table",
                      ENGINE_VARIABLE, tmp_path)


@pytest.mark.gpu
def test_runs_on_the_engine_asked_for():
    """wgpu here; Dawn in test_executes_on_dawn's child run (its adapter: lavapipe, a CPU)."""
    device = runner().device
    assert type(device).__module__.split(".")[0] == {"wgpu": "wgpu", "dawn": "wgpudawn"}[ENGINE]
    assert "llvmpipe" in adapter_summary(device)


def execute(variant, inputs: dict, params: dict, outputs: dict) -> dict:
    """Run `variant` once: inputs are bound read-only, outputs start as the given arrays (NaN where
    the kernel must write) and come back whole, in their dtype."""
    r = runner()
    wgpu = r.wgpu
    buffers = {name: r.buffer(np.asarray(a)) for name, a in inputs.items()}
    buffers.update((name, r.buffer(np.asarray(a), readable=True)) for name, a in outputs.items())
    buffers["params"] = r.device.create_buffer_with_data(data=pack_params(variant, params), usage=wgpu.BufferUsage.UNIFORM)
    pipeline = r.pipeline(variant)
    assert set(variant.bindings) == set(buffers), (sorted(variant.bindings), sorted(buffers))
    entries = [{"binding": slot, "resource": {"buffer": buffers[name], "offset": 0, "size": buffers[name].size}}
               for name, slot in variant.bindings.items()]
    bind_group = r.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
    encoder = r.device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, bind_group)
    compute.dispatch_workgroups(*workgroups(variant, params))
    compute.end()
    r.device.queue.submit([encoder.finish()])
    return {name: np.frombuffer(r.device.queue.read_buffer(buffers[name]), np.asarray(a).dtype)[:np.asarray(a).size].copy()
            for name, a in outputs.items()}


def poisoned(count):
    return np.full(count, np.nan, np.float32)


def check(actual, expected, tolerance, what=""):
    actual = np.asarray(actual, np.float64)
    assert np.isfinite(actual).all(), f"{what}: {int((~np.isfinite(actual)).sum())} outputs never written (NaN)"
    err = relative_error(actual.ravel(), np.asarray(expected, np.float64).ravel())
    assert err <= tolerance, f"{what}: relative error {err:.3g} > {tolerance}"


# --- rmsnorm -------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("variant", variants_of("rmsnorm", residual=False), ids=ids(variants_of("rmsnorm", residual=False)))
def test_rmsnorm(variant, residual, rng):
    variant = KernelVariant.make("rmsnorm", variant.profile, residual=residual)
    for rows, cols, eps in ((3, 64, 1e-5), (5, 300, 1e-6)):  # 300: a partial last stride of every workgroup size
        x = (rng.standard_normal((rows, cols)) * 2 + 0.5).astype(np.float32)
        gamma = (1 + 0.2 * rng.standard_normal(cols)).astype(np.float32)
        inputs, outputs = {"x": x, "gamma": gamma}, {"y": poisoned(x.size)}
        h = x.astype(np.float64)
        if residual:
            stream = rng.standard_normal((rows, cols)).astype(np.float32)
            outputs["residual"] = stream.ravel()
            h = (x + stream).astype(np.float64)  # the stream the kernel stores is the float32 sum
        got = execute(variant, inputs, {"rows": rows, "cols": cols, "eps": eps}, outputs)
        check(got["y"], rms_norm(h, gamma.astype(np.float64), eps), RMSNORM_TOLERANCE, "y")
        if residual:
            assert np.array_equal(got["residual"], (x + stream).ravel()), "the residual stream is not x + residual"


# --- rotary_cache / append_cache -----------------------------------------------------------------

# (batch, seq, heads, kv_heads, head_dim, start, capacity): grouped-query ratio 4 and 1, head_dim 64
# and a small one, a non-power-of-two capacity, a cache that already holds slots
APPEND_CASES = [(2, 5, 4, 1, 64, 3, 37), (3, 2, 2, 2, 8, 0, 5), (1, 7, 6, 2, 16, 10, 17)]


def by_head(columns, batch, seq, heads, d):
    """[batch * seq, heads * d] -> [batch, heads, seq, d] in float64, the reference's layout."""
    return columns.astype(np.float64).reshape(batch, seq, heads, d).transpose(0, 2, 1, 3)


def inv_freq_of(d, theta=10000.0):
    return (1.0 / theta ** (np.arange(0, d, 2) / d)).astype(np.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["rotary_cache", "append_cache"])
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_cache_append(kernel, profile, rng):
    variant = KernelVariant.make(kernel, profile)
    rotate = kernel == "rotary_cache"
    for case in APPEND_CASES:
        c = append_case(rng, *case)
        inputs = {"qkv": c.qkv}
        if rotate:
            inputs.update(positions=c.positions, inv_freq=c.inv_freq)
        got = execute(variant, inputs, c.dims,
                      {"q": poisoned(c.rows * c.heads * c.d), "k_cache": c.old_k.ravel(), "v_cache": c.old_v.ravel()})
        check_append(got, c, rotate)


def append_case(rng, batch, seq, heads, kv, d, start, capacity) -> SimpleNamespace:
    """One cache-append call into layer 1 of two-layer caches: random Q|K|V rows and positions (the
    first 0), the caches' old contents with the slots the call must write set to NaN, its dims."""
    rows = batch * seq
    qkv = rng.standard_normal((rows, (heads + 2 * kv) * d)).astype(np.float32)
    positions = rng.integers(0, MAX_TEST_POSITION, rows).astype(np.uint32)
    positions[0] = 0
    layers, layer = 2, 1
    per_layer = batch * kv * capacity * d
    old_k = rng.standard_normal((layers, batch, kv, capacity, d)).astype(np.float32)
    old_v = rng.standard_normal((layers, batch, kv, capacity, d)).astype(np.float32)
    old_k[layer, :, :, start:start + seq] = np.nan  # the slots this call must write
    old_v[layer, :, :, start:start + seq] = np.nan
    dims = {"rows": rows, "seq": seq, "heads": heads, "kv_heads": kv, "head_dim": d, "start": start,
            "capacity": capacity, "cache_off": layer * per_layer, "count": rows * (heads + 2 * kv) * d // 2}
    check_cache_dims(dims)
    return SimpleNamespace(batch=batch, seq=seq, heads=heads, kv=kv, d=d, start=start, rows=rows, qkv=qkv,
                           positions=positions, inv_freq=inv_freq_of(d), layer=layer, old_k=old_k, old_v=old_v, dims=dims)


def check_append(got, c: SimpleNamespace, rotate: bool) -> None:
    """An append kernel's outputs for case `c` against numpy: Q (rotated or copied) by head, K and V
    in the call's cache slots, and every other slot of both caches unchanged."""
    batch, seq, heads, kv, d, start, layer = c.batch, c.seq, c.heads, c.kv, c.d, c.start, c.layer
    q, k, v = (by_head(part, batch, seq, n, d)
               for part, n in zip(np.split(c.qkv, [heads * d, (heads + kv) * d], axis=1), (heads, kv, kv)))
    if rotate:
        pos = c.positions.reshape(batch, seq)
        q, k = rotary(q, pos, c.inv_freq.astype(np.float64)), rotary(k, pos, c.inv_freq.astype(np.float64))
    tolerance = ROTARY_TOLERANCE if rotate else COPY_TOLERANCE
    check(got["q"], q.transpose(0, 2, 1, 3).reshape(c.rows, heads * d), tolerance, "q")
    k_cache = got["k_cache"].reshape(c.old_k.shape)
    v_cache = got["v_cache"].reshape(c.old_v.shape)
    check(k_cache[layer, :, :, start:start + seq], k, tolerance, "k appended")
    check(v_cache[layer, :, :, start:start + seq], v, COPY_TOLERANCE, "v appended")
    untouched = np.ones(c.old_k.shape, bool)
    untouched[layer, :, :, start:start + seq] = False
    for name, cache, old in (("k", k_cache, c.old_k), ("v", v_cache, c.old_v)):
        assert np.array_equal(cache[untouched], old[untouched]), f"{name}: a slot outside start .. start + seq changed"


@pytest.mark.gpu
def test_rotary_at_long_positions(rng):
    """Positions in the thousands (angles of thousands of radians) stay within the rounding of a
    float32 angle: the range reduction keeps GPU sin/cos in their accurate range."""
    variant = KernelVariant.make("rotary_cache", "firefox")
    d, rows, heads = 64, 6, 1
    positions = np.array([0, 1, 2047, 4095, 8191, 131071], np.uint32)
    qkv = rng.standard_normal((rows, 3 * d)).astype(np.float32)
    dims = {"rows": rows, "seq": rows, "heads": heads, "kv_heads": 1, "head_dim": d, "start": 0, "capacity": rows,
            "cache_off": 0, "count": rows * 3 * d // 2}
    got = execute(variant, {"qkv": qkv, "positions": positions, "inv_freq": inv_freq_of(d, 500000.0)}, dims,
                  {"q": poisoned(rows * d), "k_cache": poisoned(rows * d), "v_cache": poisoned(rows * d)})
    want = rotary(qkv[:, :d].astype(np.float64).reshape(1, 1, rows, d), positions.reshape(1, rows).astype(np.float64),
                  inv_freq_of(d, 500000.0).astype(np.float64)).reshape(rows, d)
    per_row = np.abs(got["q"].reshape(rows, d) - want).max(axis=1) / np.abs(want).max()
    assert np.isfinite(got["q"]).all()
    assert (per_row <= 3 * positions.astype(np.float64) * 2.0 ** -24 + 1e-6).all(), per_row


# --- attention over the cache ---------------------------------------------------------------------

def attention_case(rng, batch, seq, heads, kv, d, start, capacity, kept):
    """q [rows, heads*d]; caches [batch, kv, capacity, d] with slots 0 .. start+seq-1 written, NaN in
    padded slots and past start + seq (never to be read); keep [batch, capacity]; `kept` is each
    sequence's count of padded slots at the left of its prompt region. Returns the GPU inputs and the
    reference output [rows, heads*d]."""
    rows, slots = batch * seq, start + seq
    q = rng.standard_normal((rows, heads * d)).astype(np.float32)
    k = rng.standard_normal((batch, kv, capacity, d)).astype(np.float32)
    v = rng.standard_normal((batch, kv, capacity, d)).astype(np.float32)
    keep = np.zeros((batch, capacity), np.float32)
    keep[:, :slots] = 1.0
    for b, pads in enumerate(kept):
        keep[b, :pads] = 0.0  # left padding
    keep[:, slots:] = rng.integers(0, 2, (batch, capacity - slots))  # stale flags past the end: never consulted
    dead = np.zeros((batch, capacity), bool)
    dead[:, slots:] = True
    dead |= keep < 0.5
    k[np.broadcast_to(dead[:, None, :, None], k.shape)] = np.nan
    v[np.broadcast_to(dead[:, None, :, None], v.shape)] = np.nan
    written = [np.where(np.isnan(a), 0.0, a.astype(np.float64))[:, :, :slots] for a in (k, v)]  # the reference's cache
    want = causal_attention(by_head(q, batch, seq, heads, d), *written, keep[:, :slots].astype(np.float64),
                            start).reshape(rows, heads * d)
    inputs = {"q": q, "k_cache": k, "v_cache": v, "keep": keep}
    dims = {"rows": rows, "seq": seq, "heads": heads, "kv_heads": kv, "head_dim": d, "scale": 1 / math.sqrt(d),
            "start": start, "capacity": capacity, "q_stride": heads * d, "q_off": 0, "cache_off": 0}
    return inputs, dims, want


# (batch, seq, heads, kv_heads, head_dim, start, capacity, left padding per sequence): GQA 4 and 1,
# head_dim 64, a prompt after cached slots, slot counts past several blocks of every workgroup size,
# non-power-of-two capacities, a sequence that is all padding (zeros)
PREFILL_CASES = [
    (2, 7, 4, 1, 64, 0, 11, (0, 3)),
    (2, 5, 3, 3, 64, 4, 23, (2, 0)),
    (1, 6, 8, 2, 16, 140, 147, (5,)),
    (2, 3, 2, 1, 8, 0, 3, (0, 3)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_cache_attention_prefill(profile, rng):
    variant = KernelVariant.make("cache_attention", profile)
    for case in PREFILL_CASES:
        inputs, dims, want = attention_case(rng, *case)
        dims.update(chunk=dims["capacity"], chunks=1)
        check_cache_attention_dims(variant, dims)
        got = execute(variant, inputs, dims, {"y": poisoned(want.size)})
        check(got["y"], want, ATTENTION_TOLERANCE, f"prefill {case}")


@pytest.mark.gpu
def test_cache_attention_reads_q_from_the_fused_product(rng):
    """q may be read straight from the Q|K|V product (q_stride, q_off), as append_cache's input."""
    variant = KernelVariant.make("cache_attention", "chrome")
    inputs, dims, want = attention_case(rng, 2, 4, 4, 2, 16, 2, 9, (1, 0))
    q = inputs["q"]
    fused = np.concatenate([rng.standard_normal((q.shape[0], 5)), q, rng.standard_normal((q.shape[0], 2 * 2 * 16))], axis=1)
    dims.update(chunk=9, chunks=1, q_stride=fused.shape[1], q_off=5)
    got = execute(variant, {**inputs, "q": fused.astype(np.float32)}, dims, {"y": poisoned(want.size)})
    check(got["y"], want, ATTENTION_TOLERANCE, "fused q")


# decode steps: one query per sequence over a long cache. (batch, heads, kv_heads, head_dim, start,
# capacity, left padding, chunk, chunks): GQA 4 and 1, head_dim 64, a non-power-of-two cache length
# (293 slots), a partial last chunk, chunks past the end (a grid fixed by the capacity) and a
# sequence whose every visible slot is padding
DECODE_CASES = [
    (3, 8, 2, 64, 292, 301, (0, 17, 293), 64, 5),
    (2, 4, 4, 64, 200, 257, (3, 0), 50, 6),
    (1, 4, 1, 32, 20, 21, (0,), 21, 1),
]


@pytest.mark.gpu
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_cache_attention_decode_split_and_combine(profile, rng):
    split = KernelVariant.make("cache_attention_split", profile)
    combine = KernelVariant.make("attention_combine", profile)
    for case in DECODE_CASES:
        batch, heads, kv, d, start, capacity, kept, case_chunk, case_chunks = case
        inputs, dims, want = attention_case(rng, batch, 1, heads, kv, d, start, capacity, kept)
        for chunk, chunks in ((case_chunk, case_chunks), decode_chunks(split, start + 1, kv, batch)):  # the case's, the rule's
            decode_step(split, combine, inputs, {**dims, "chunk": chunk, "chunks": chunks}, want, case)


def decode_step(split, combine, inputs, dims, want, case):
    """cache_attention_split then attention_combine: every part written (empty chunks empty), then
    the merged output against the reference."""
    batch, heads, d, chunk, chunks = dims["rows"], dims["heads"], dims["head_dim"], dims["chunk"], dims["chunks"]
    check_cache_attention_dims(split, dims)
    parts = batch * heads * chunks
    got = execute(split, inputs, dims, {"part_o": poisoned(parts * d), "part_ml": poisoned(parts * 2)})
    assert np.isfinite(got["part_o"]).all() and np.isfinite(got["part_ml"]).all(), "a chunk's part was never written"
    ml = got["part_ml"].reshape(batch, heads, chunks, 2)
    empty = np.arange(chunks) * chunk >= dims["start"] + 1
    assert (ml[:, :, empty, 1] == 0).all() and (got["part_o"].reshape(batch, heads, chunks, d)[:, :, empty] == 0).all()
    cdims = {"rows": batch, "heads": heads, "head_dim": d, "chunks": chunks, "count": want.size}
    y = execute(combine, {"part_o": got["part_o"], "part_ml": got["part_ml"]}, cdims, {"y": poisoned(want.size)})["y"]
    check(y, want, ATTENTION_TOLERANCE, f"decode {case}, chunks of {chunk}")
    if dims["start"] + 1 == case[6][-1]:  # the last sequence sees only padding: zeros, as the reference
        assert not y.reshape(batch, -1)[-1].any()


# a decode step's append + attention in one dispatch: (batch, heads, kv_heads, head_dim, start, capacity,
# left padding per sequence): GQA 4 and 1, head_dim 64 and small ones, the first step after a one-token
# prompt (start 1), slot counts past several passes of keys for every workgroup size, the last slot
# the kernel takes (start = max_slots - 1), a sequence whose every visible slot is padding
STEP_CASES = [
    (1, 32, 8, 64, 79, 96, (0,)),
    (3, 8, 2, 64, 292, 301, (0, 17, 293)),
    (2, 4, 4, 16, 1, 5, (0, 1)),
    (1, 6, 2, 8, 511, 515, (3,)),
]


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["rotary_step_attention", "step_attention"])
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_step_attention(kernel, profile, rng):
    """The fused decode step against the append kernel's maths then the reference attention: y, the
    new key and value in the caches (written once, by each group's first head), every other slot
    unchanged. Slots past start and padded ones hold NaN, and the new slot starts as NaN in the
    cache: any use of them fails (the value product may load a masked slot's value, never use it)."""
    variant = KernelVariant.make(kernel, profile)
    rotate = kernel == "rotary_step_attention"
    for batch, heads, kv, d, start, capacity, pads in STEP_CASES:
        layers, layer = 2, 1
        qkv = rng.standard_normal((batch, (heads + 2 * kv) * d)).astype(np.float32)
        positions = (start + rng.integers(0, 5, batch)).astype(np.uint32)  # any position: the slot is `start`
        k = rng.standard_normal((layers, batch, kv, capacity, d)).astype(np.float32)
        v = rng.standard_normal((layers, batch, kv, capacity, d)).astype(np.float32)
        keep = np.ones((batch, capacity), np.float32)
        for b, n in enumerate(pads):
            keep[b, :n] = 0.0
        keep[:, start + 1:] = rng.integers(0, 2, (batch, capacity - start - 1))  # stale flags: never consulted
        dead = np.zeros((batch, capacity), bool)
        dead[:, start:] = True  # the new slot (the kernel's own copy serves it) and the ones after it
        dead |= keep < 0.5
        for cache in (k, v):
            cache[layer][np.broadcast_to(dead[:, None, :, None], cache[layer].shape)] = np.nan
        q, k_new, v_new = (part.astype(np.float64).reshape(batch, 1, n, d).transpose(0, 2, 1, 3)
                           for part, n in zip(np.split(qkv, [heads * d, (heads + kv) * d], axis=1), (heads, kv, kv)))
        if rotate:
            freq = inv_freq_of(d).astype(np.float64)
            q, k_new = (rotary(a, positions.reshape(batch, 1).astype(np.float64), freq) for a in (q, k_new))
        written = [np.where(np.isnan(c[layer]), 0.0, c[layer].astype(np.float64))[:, :, :start + 1] for c in (k, v)]
        written[0][:, :, start] = k_new[:, :, 0]
        written[1][:, :, start] = v_new[:, :, 0]
        want = causal_attention(q, *written, keep[:, :start + 1].astype(np.float64), start).reshape(batch, heads * d)
        dims = {"rows": batch, "heads": heads, "kv_heads": kv, "head_dim": d, "scale": 1 / math.sqrt(d), "start": start,
                "capacity": capacity, "cache_off": layer * batch * kv * capacity * d}
        check_step_attention_dims(variant, dims)
        inputs = {"qkv": qkv, "keep": keep}
        if rotate:
            inputs.update(positions=positions, inv_freq=inv_freq_of(d))
        got = execute(variant, inputs, dims, {"y": poisoned(want.size), "k_cache": k.ravel(), "v_cache": v.ravel()})
        case = (batch, heads, kv, d, start)
        check(got["y"], want, ATTENTION_TOLERANCE + (ROTARY_TOLERANCE if rotate else 0.0), f"step {case}")
        if pads[-1] == start + 1:  # the last sequence sees only padding: zeros, as the reference
            assert not got["y"].reshape(batch, -1)[-1].any()
        k_got, v_got = (got[name].reshape(k.shape) for name in ("k_cache", "v_cache"))
        check(k_got[layer, :, :, start], k_new[:, :, 0], ROTARY_TOLERANCE if rotate else COPY_TOLERANCE, f"k appended {case}")
        check(v_got[layer, :, :, start], v_new[:, :, 0], COPY_TOLERANCE, f"v appended {case}")
        untouched = np.ones(k.shape, bool)
        untouched[layer, :, :, start] = False
        for name, after, before in (("k", k_got, k), ("v", v_got, v)):
            assert np.array_equal(after[untouched], before[untouched], equal_nan=True), f"{name}: another slot changed {case}"


def test_step_attention_dims_refused():
    variant = KernelVariant.make("rotary_step_attention", "chrome")
    dims = {"rows": 1, "heads": 8, "kv_heads": 2, "head_dim": 64, "scale": 0.125, "start": 511, "capacity": 4096,
            "cache_off": 0}
    check_step_attention_dims(variant, dims)
    for change, message in (({"start": 512}, "past the 512 slots"), ({"head_dim": 258}, "past the"),
                            ({"heads": 6, "kv_heads": 4}, "not a multiple"), ({"start": 4096}, "capacity")):
        with pytest.raises(ValueError, match=message):
            check_step_attention_dims(variant, {**dims, **change})


# --- gated, the tanh GELU epilogue, argmax --------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("activation", GATE_ACTIVATIONS)
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_gated(activation, profile, rng):
    variant = KernelVariant.make("gated", profile, activation=activation)
    rows, cols = 7, 45  # 315 outputs: partial workgroups of every size
    both = (rng.standard_normal((rows, 2 * cols)) * 3).astype(np.float32)  # the concatenated gate | up product
    both[0, :4] = (-90.0, 90.0, 1e-4, -1e-4)  # exp(-v) overflows on one side: the limit, not NaN
    both[0, cols:cols + 4] = 0.01  # (small up factors: the max-normalized error still sees the rest)
    gate, up = both[:, :cols].astype(np.float64), both[:, cols:].astype(np.float64)
    want = ACTIVATIONS[activation](gate) * up
    got = execute(variant, {"gate": both, "up": both}, {"count": rows * cols, "cols": cols, "in_stride": 2 * cols,
                                                         "gate_off": 0, "up_off": cols}, {"y": poisoned(rows * cols)})
    check(got["y"], want, GATED_TOLERANCE, activation)
    separate = execute(variant, {"gate": both[:, :cols].copy(), "up": both[:, cols:].copy()},
                       {"count": rows * cols, "cols": cols, "in_stride": cols, "gate_off": 0, "up_off": 0},
                       {"y": poisoned(rows * cols)})
    check(separate["y"], want, GATED_TOLERANCE, f"{activation}, two products")


@pytest.mark.gpu
@pytest.mark.parametrize("kernel, options, m", [("gemv", {"vec4": True}, 2), ("gemv", {"vec4": False}, 1),
                                                ("gemm", {"size": "small"}, 37)])
def test_gelu_tanh_epilogue(kernel, options, m, rng):
    """GPT-2's gelu_new in the matrix products' epilogue matches the tanh form, and is measurably not
    the erf form (the difference this row exists for)."""
    spec = QuantSpec("int4", 32)
    variant = KernelVariant.make(kernel, "firefox", WeightStorage.of(spec), activation="gelu_tanh", bias=True,
                                 residual=True, **options)
    n, k = 45, 128
    qt = quantize("w", (rng.standard_normal((n, k)) * 0.2).astype(np.float32), spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((m, n)).astype(np.float32)
    pre = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T + bias
    y = runner().run(variant, {"x": x, "bias": bias, "residual": residual, **weight_arrays(qt)}, matmul_params(qt, m),
                     {"y": m * n})["y"].reshape(m, n)
    check(y, ACTIVATIONS["gelu_tanh"](pre) + residual, MATMUL_TOLERANCE, "gelu_tanh")
    # the erf form is up to ~5e-4 away: far further from the output than the tanh form is
    tanh_error = relative_error(y, ACTIVATIONS["gelu_tanh"](pre) + residual)
    assert relative_error(y, ACTIVATIONS["gelu"](pre) + residual) > 20 * tanh_error


@pytest.mark.gpu
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_argmax(profile, rng):
    variant = KernelVariant.make("argmax", profile, indices=False)
    batch, seq, vocab = 3, 4, 1001
    logits = (rng.standard_normal((batch * seq, vocab)) * 5).astype(np.float32)
    logits[0, [10, 700]] = 99.0  # a tie: the lower column wins, as numpy's argmax
    logits[5, vocab - 1] = 99.0  # the last column, past the last full stride
    logits[7, :] = -3.0e38  # every value near the f32 minimum
    logits[7, 333] = -2.9e38
    logits[9, 2] = np.nan  # a NaN never wins
    rows = execute(variant, {"x": logits}, {"rows": batch * seq, "cols": vocab, "row_stride": vocab, "row_off": 0},
                   {"y": np.full(batch * seq, 0xFFFFFFFF, np.uint32)})["y"]
    assert rows.tolist() == np.nanargmax(logits, axis=1).tolist()
    assert rows[0] == 10 and rows[5] == vocab - 1 and rows[7] == 333
    # each sequence's last token only: row r at r * seq * vocab + (seq - 1) * vocab
    last = execute(variant, {"x": logits}, {"rows": batch, "cols": vocab, "row_stride": seq * vocab,
                                             "row_off": (seq - 1) * vocab}, {"y": np.full(batch, 0xFFFFFFFF, np.uint32)})["y"]
    assert last.tolist() == np.nanargmax(logits.reshape(batch, seq, vocab)[:, -1], axis=1).tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_argmax_in_two_stages(profile, rng):
    """argmax_parts over spans of a row, then argmax with indices over the parts: the same column as
    numpy's argmax, ties across parts to the lowest column, a part of NaN only skipped."""
    parts_variant = KernelVariant.make("argmax_parts", profile)
    finish = KernelVariant.make("argmax", profile, indices=True)
    rows, vocab = 5, 5001
    logits = (rng.standard_normal((rows, vocab)) * 5).astype(np.float32)
    logits[0, [4999, 17]] = 50.0  # a tie between the first part and the last, partial one
    logits[1, vocab - 1] = 50.0
    logits[2, :700] = np.nan  # whole parts (at span 300) of NaN
    logits[3, :] = -3.0e38
    logits[3, 4001] = -2.9e38
    for parts, span in (argmax_split(parts_variant, vocab), (math.ceil(vocab / 300), 300)):
        dims = {"rows": rows, "cols": vocab, "row_stride": vocab, "row_off": 0, "parts": parts, "span": span}
        assert parts > 1 and (parts - 1) * span < vocab <= parts * span
        got = execute(parts_variant, {"x": logits}, dims, {"part_value": poisoned(rows * parts),
                                                          "part_index": np.full(rows * parts, 0xFFFFFFFE, np.uint32)})
        assert not (got["part_index"] == 0xFFFFFFFE).any(), "a part was never written"
        final = execute(finish, {"x": got["part_value"], "indices": got["part_index"]},
                        {"rows": rows, "cols": parts, "row_stride": parts, "row_off": 0},
                        {"y": np.full(rows, 0xFFFFFFFF, np.uint32)})["y"]
        assert final.tolist() == np.nanargmax(logits, axis=1).tolist(), (parts, span)
        assert final[0] == 17 and final[1] == vocab - 1 and final[3] == 4001
