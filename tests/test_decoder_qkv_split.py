"""Decoder layers whose query, key and value weights cannot be one matrix (the -optimal formats' per-tensor
codebooks) on WebGPU: the runtime runs three products and the split cache append (rotary_cache_split /
append_cache_split) reads them directly. The split kernels compile in naga and Tint and, executed on
wgpu (lavapipe) for each workgroup size with poisoned outputs, equal numpy's rotary and the fused
kernel's copies bit for bit, its sin and cos (f32 polynomials, not the built-ins that SwiftShader
evaluates to 2e-4) within the f32 angle's rounding; a Llama bundle at int4-optimal generates numpy's 32 greedy tokens in
Chromium (SwiftShader, Dawn) and Firefox (lavapipe, wgpu) on WebGPU, over three products per layer."""

from __future__ import annotations

import numpy as np
import pytest
from test_decoder_bundle import SMALL, _build
from test_decoder_kernels import (
    APPEND_CASES,
    EXECUTED_PROFILES,
    append_case,
    check,
    check_append,
    execute,
    poisoned,
)

from ulpq_build.browser_check import check_in_browser
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.decoder_reference import rotary
from ulpq_build.kernels import (
    KernelVariant,
    decoder_operator_kernels,
    render,
)
from ulpq_build.native_webgpu import COMPILERS, validate
from ulpq_build.profiles import PROFILES

SPLIT = {"rotary_cache_split": "rotary_cache", "append_cache_split": "append_cache"}  # split kernel -> fused peer
BROWSERS = ("chromium", "firefox")


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("kernel", SPLIT)
def test_split_append_compiles(kernel, compiler):
    for profile in PROFILES:
        variant = KernelVariant.make(kernel, profile)
        assert variant.limits["maxStorageBuffersPerShaderStage"] <= 8  # WebGPU's default
        validate(render(variant), variant.workgroup_size, compiler)


def test_split_role_only_for_separate_projections():
    """Llama-style layers (query/key/value nodes) get the split append beside the fused one; GPT-2's
    c_attn is one matrix and never needs it."""
    llama = {"norm": "rms", "positions": {"kind": "rotary"}, "ffn": "gated", "activation": "silu",
             "layers": [{"query": {}, "key": {}, "value": {}}]}
    gpt2 = {"norm": "layer", "positions": {"kind": "learned"}, "ffn": "plain", "activation": "gelu_tanh",
            "layers": [{"qkv": {}}]}
    roles = {role: kernel for role, kernel, _, _ in decoder_operator_kernels(llama)}
    assert roles["cache_append"] == "rotary_cache" and roles["cache_append_split"] == "rotary_cache_split"
    assert "cache_append_split" not in {role for role, *_ in decoder_operator_kernels(gpt2)}


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", SPLIT)
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_split_append_matches_numpy_and_the_fused_kernel(kernel, profile, rng):
    split, fused = KernelVariant.make(kernel, profile), KernelVariant.make(SPLIT[kernel], profile)
    rotate = kernel == "rotary_cache_split"
    for case in APPEND_CASES:
        c = append_case(rng, *case)
        q_in, k_in, v_in = (np.ascontiguousarray(p) for p in np.split(c.qkv, [c.heads * c.d, (c.heads + c.kv) * c.d], axis=1))
        extra = {"positions": c.positions, "inv_freq": c.inv_freq} if rotate else {}
        got, peer = (execute(variant, inputs, c.dims, {"q": poisoned(c.rows * c.heads * c.d), "k_cache": c.old_k.ravel().copy(),
                                                       "v_cache": c.old_v.ravel().copy()})
                     for variant, inputs in ((split, {"q_in": q_in, "k_in": k_in, "v_in": v_in, **extra}),
                                             (fused, {"qkv": c.qkv, **extra})))
        check_append(got, c, rotate)
        # copies are the fused kernel's bit for bit (the rotation's sin/cos are its own: _rotary.wgsl.jinja)
        for name in ("v_cache",) if rotate else ("q", "k_cache", "v_cache"):
            assert np.array_equal(got[name], peer[name], equal_nan=True), f"{name} differs from {SPLIT[kernel]}'s"


# the f32 angle's rounding (positions < 64: < 64 * 2^-24 rad) and a few f32 roundings; the built-in
# sin/cos WGSL allows (2^-11 absolute) would not pass
ROTARY_SMALL_POSITIONS_TOLERANCE = 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("profile", EXECUTED_PROFILES)
def test_split_rotation_is_float32_accurate(profile, rng):
    """sin and cos are f32 polynomials after the range reduction: at every angle of [-pi, pi] (inv_freq
    spread so positions < 64 cover it, and beyond, reduced) within the f32 angle's rounding."""
    variant = KernelVariant.make("rotary_cache_split", profile)
    rows, heads, kv, d = 64, 1, 1, 128
    positions = np.arange(rows, dtype=np.uint32)
    inv_freq = np.linspace(0.001, 3.2, d // 2).astype(np.float32)  # angles up to 64 * 3.2 rad
    q_in, k_in, v_in = (rng.standard_normal((rows, d)).astype(np.float32) for _ in range(3))
    dims = {"rows": rows, "seq": rows, "heads": heads, "kv_heads": kv, "head_dim": d, "start": 0, "capacity": rows,
            "cache_off": 0, "count": rows * 3 * d // 2}
    got = execute(variant, {"q_in": q_in, "k_in": k_in, "v_in": v_in, "positions": positions, "inv_freq": inv_freq}, dims,
                  {"q": poisoned(rows * d), "k_cache": poisoned(rows * d), "v_cache": poisoned(rows * d)})
    angles = positions.reshape(1, rows).astype(np.float64)
    for name, x in (("q", q_in), ("k_cache", k_in)):
        want = rotary(x.astype(np.float64).reshape(1, 1, rows, d), angles, inv_freq.astype(np.float64)).reshape(rows, d)
        check(got[name], want, ROTARY_SMALL_POSITIONS_TOLERANCE, name)


# --- a bundle whose Q/K/V cannot fuse, in the browsers --------------------------------------------

@pytest.fixture(scope="module")
def optimal_site(tmp_path_factory):
    from transformers import LlamaConfig

    root = tmp_path_factory.mktemp("qkv-split-site")
    folder = _build(tmp_path_factory.mktemp("qkv-split-model") / "llama", LlamaConfig(**SMALL, tie_word_embeddings=False), 0)
    out = root / "llama-int4-optimal"
    assert cli_main(["bundle", "--model", str(folder), "--out", str(out), "--format", "int4-optimal"]) == 0
    return root, out


@pytest.mark.parametrize("browser", BROWSERS)
def test_unfusable_qkv_generates_the_reference_tokens_on_webgpu(optimal_site, browser):
    """Per-tensor codebooks keep Q, K and V apart: every layer runs three products and the split append
    (none fused at upload), and the 32 greedy tokens equal numpy's, outputs poisoned before each pass."""
    from ulpq_build.serve import BundleServer

    root, folder = optimal_site
    server = BundleServer(root, 0).start_in_background()
    session = launch(browser)
    try:
        result = check_in_browser(session, f"{server.url}{folder.name}/index.html", load_bundle(folder), browser,
                                  query="&hardware=webgpu")
        assert result.error is None and result.path == "webgpu", result
        assert result.metric == "tokens differing" and result.value == 0 and result.passed, result
        ran = session.evaluate("""() => {
          const m = window.ulpqDemo.model;
          const layouts = [...m.backend.layouts.values()].map((l) => l.steps.map((s) => s.key));
          return { fused: m.backend.fused.size, keys: layouts.flat() };
        }""")
        assert ran["fused"] == 0, ran
        assert any(k.startswith("rotary_cache_split.") for k in ran["keys"]), ran["keys"]
        assert not any(k.startswith("rotary_cache.") for k in ran["keys"]), ran["keys"]
    finally:
        session.close()
        server.shutdown()
        server.server_close()
