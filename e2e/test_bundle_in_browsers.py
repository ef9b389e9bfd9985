"""The default model's bundle in real browsers: Chromium (WebGPU, Dawn on SwiftShader), Firefox
(WebGPU, wgpu on lavapipe) and WebKitGTK (no WebGPU: the CPU path), each compared with the numpy
reference over the bundle's own dequantized weights."""

import numpy as np
import pytest

from e2e_support import E2E_FORMATS, PROCESS
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.reference import mlp_forward, relative_error

pytestmark = pytest.mark.browser

E2E_TOLERANCE = 1e-4  # relative error (max abs difference / max abs reference)

# browser, query, expected path, expected variant (None: CPU), fallback note expected
CASES = [
    # SwiftShader and lavapipe are CPU adapters: the cpu profile serves them (profiles.py)
    ("chromium", "", "webgpu", "cpu-64", None),
    ("chromium", "?profile=safari", "webgpu", "cpu-64", "safari-512 needs maxComputeInvocationsPerWorkgroup >= 512"),
    ("chromium", "?hardware=cpu", "cpu", None, None),
    ("firefox", "", "webgpu", "cpu-64", None),
    ("firefox", "?profile=safari", "webgpu", "safari-512", None),
    ("firefox", "?hardware=cpu", "cpu", None, None),
    ("webkit", "", "cpu", None, None),
]


@pytest.mark.parametrize("fmt", E2E_FORMATS)
@pytest.mark.parametrize("browser, query, path, variant, fallback", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_bundle_matches_numpy(demo, site, fmt, browser, query, path, variant, fallback):
    sep = "&" if query else "?"
    session, state = demo(browser, f"{fmt}/index.html{query}{sep}poison=1")
    assert state["status"] == "done", state
    result = state["result"]
    bundle = load_bundle(site / fmt)

    # which path and variant ran, and what the page says about it
    assert result["path"] == path
    assert state["facts"]["fact-path"] == path
    if variant is None:
        assert result["variant"] is None
    else:
        assert result["variant"]["name"] == variant
        assert result["variant"]["fallback"] == (fallback is not None)
    if fallback:
        assert any(fallback in note for note in result["notes"]), result["notes"]
    if browser == "webkit":
        assert result["webgpu"]["available"] is False and "navigator.gpu is undefined" in result["webgpu"]["reason"]
        assert "absent" in state["facts"]["fact-webgpu"]
    else:
        assert result["webgpu"]["available"] is True

    # the demo input, as displayed on the page
    demo_inputs = np.asarray(bundle.manifest["demo"]["inputs"])
    expected = mlp_forward(bundle.model, bundle.weights, demo_inputs)
    assert relative_error(np.asarray(result["output"]), expected) < E2E_TOLERANCE

    # fresh random inputs through the same loaded model
    x = np.random.default_rng(hash((fmt, browser, query)) % 2**32).standard_normal((5, bundle.model["input_size"]))
    again = session.evaluate(PROCESS, x.tolist())
    assert again["path"] == path
    assert relative_error(np.asarray(again["output"]), mlp_forward(bundle.model, bundle.weights, x)) < E2E_TOLERANCE

    # load progress reached the full download
    progress = [p for p in state["progress"] if p["phase"] == "weights"]
    assert progress and progress[-1]["loaded"] == progress[-1]["total"] == sum(s["bytes"] for s in bundle.manifest["shards"])


@pytest.mark.parametrize("browser", ["chromium", "firefox", "webkit"])
def test_tampered_shard_is_refused(demo, browser):
    _, state = demo(browser, "int4-tampered/index.html")
    assert state["status"] == "error"
    assert state["error"]["name"] == "IntegrityError"
    assert "weights-000.bin" in state["error"]["message"] and "sha256 mismatch" in state["error"]["message"]
    assert "IntegrityError" in state["shownError"]
    assert state["result"] is None


def test_forcing_webgpu_where_it_is_absent_is_an_error(demo):
    session, state = demo("webkit", "int4/index.html?hardware=cpu")
    assert state["status"] == "done"
    message = session.evaluate("""async () => {
      try { await window.ulpq.loadBundle('./manifest.json', { hardware: 'webgpu' }); return 'loaded'; }
      catch (err) { return `${err.name}: ${err.message}`; } }""")
    assert message.startswith("GpuUnavailable") and "navigator.gpu is undefined" in message
