"""The wasm CPU path in real browsers (Chromium, Firefox, WebKitGTK), through the public API with
hardware 'cpu': on worker threads when the page is cross-origin isolated (COOP/COEP), on one thread
when it is not, and the numbers equal numpy over the bundle's own weights (MiniLM cosine per
sentence, ViT logits)."""

from __future__ import annotations

import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, relative_error
from ulpq_build.serve import BundleServer

from conftest import open_demo
from test_models_in_browsers import SENTENCES, reference_tokens, samples_reference

pytestmark = pytest.mark.browser

E2E_COSINE = 0.9999
E2E_LOGITS = 1e-3
BROWSERS = ["chromium", "firefox", "webkit"]
# WebKitGTK 2.50 gives isolated pages shared wasm memories but cannot post them to a worker
# (SharedArrayBuffer is off in its build): one thread there, and the note says why.
SHARES_MEMORY = {"chromium": True, "firefox": True, "webkit": False}
RUN_TEXT = """async (sentences) => {
  const r = await window.ulpqDemo.model.process(sentences);
  return { ...r, isolated: globalThis.crossOriginIsolated === true, cores: navigator.hardwareConcurrency,
           threads: window.ulpqDemo.model.backend.threads };
}"""
RUN_SAMPLES = """async () => {
  const { sampleToImage } = await import('./images.js');
  const samples = await (await fetch('./samples.json')).json();
  const r = await window.ulpqDemo.model.process(samples.map(sampleToImage));
  return { ...r, isolated: globalThis.crossOriginIsolated === true, threads: window.ulpqDemo.model.backend.threads };
}"""


@pytest.fixture(scope="module")
def wasm_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("wasm-site")
    assert cli_main(["bundle", "--format", "int4", "--group-size", "32", "--out", str(root / "minilm")]) == 0
    assert cli_main(["bundle", "--model", "builtin:vit", "--format", "int3-dense", "--out", str(root / "vit")]) == 0
    return root


@pytest.fixture(scope="module")
def servers(wasm_site):
    plain = BundleServer(wasm_site, 0)
    isolated = BundleServer(wasm_site, 0, isolate=True)  # COOP/COEP: SharedArrayBuffer allowed
    for s in (plain, isolated):
        s.start_in_background()
    yield {"plain": plain, "isolated": isolated}
    for s in (plain, isolated):
        s.shutdown()
        s.server_close()


def page(browsers, server, browser, path):
    session = browsers(browser)
    state = open_demo(session, server.url + path)
    assert state["status"] == "ready", state
    return session


def check_wasm(result, isolated, browser):
    notes = " ".join(result["notes"])
    assert result["path"] == "cpu" and "WebAssembly SIMD kernels" in notes, notes
    assert result["isolated"] is isolated
    if isolated and not SHARES_MEMORY[browser]:
        assert result["threads"] == 1 and "workers cannot share the memory" in notes, notes
    elif isolated:
        assert result["threads"] >= 2 and f"{result['threads']} threads" in notes, notes
    else:
        assert result["threads"] == 1 and "one thread" in notes, notes


@pytest.mark.parametrize("isolation", ["isolated", "plain"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_minilm_on_wasm_matches_numpy(browsers, servers, wasm_site, browser, isolation):
    session = page(browsers, servers[isolation], browser, "minilm/index.html?run=0&poison=1&hardware=cpu")
    result = session.evaluate(RUN_TEXT, SENTENCES)
    check_wasm(result, isolation == "isolated", browser)
    bundle = load_bundle(wasm_site / "minilm")
    ids, mask = reference_tokens(wasm_site / "minilm", bundle.model["tokenizer"]["max_length"])
    expected = bert_forward(bundle.model, bundle.weights, ids, mask)
    similarity = cosine(np.asarray(result["embeddings"]), expected)
    assert similarity.min() >= E2E_COSINE, similarity


@pytest.mark.parametrize("browser", BROWSERS)
def test_vit_on_wasm_threads_matches_numpy(browsers, servers, wasm_site, browser):
    session = page(browsers, servers["isolated"], browser, "vit/index.html?run=0&poison=1&hardware=cpu")
    result = session.evaluate(RUN_SAMPLES)
    check_wasm(result, True, browser)
    expected = samples_reference(wasm_site / "vit", load_bundle(wasm_site / "vit"))
    assert relative_error(np.asarray(result["logits"]), expected) < E2E_LOGITS
