"""Real models in real browsers: all-MiniLM-L6-v2 (int8, int4, int3, int2-optimal, a mixed config)
and the built-in Fashion-MNIST ViT (int4, int2), in Chromium (WebGPU), Firefox (WebGPU, and the
safari-512 variant forced) and WebKitGTK (the CPU path), each compared with the numpy reference over
the bundle's own dequantized weights."""

import base64
import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, relative_error, vit_forward, vit_preprocess

pytestmark = pytest.mark.browser

E2E_COSINE = 0.9999  # per sentence, browser embedding vs numpy over the same dequantized weights
E2E_LOGITS = 1e-3  # relative error of ViT logits (max |diff| / max |reference|)
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Café owners in Zürich said the crème brûlée sold out by noon!",
    "Is this the right way?",
]
MIXED = {"bitsPerWeight": 3, "distributeOptimalValues": True, "groupSize": 32,
         "mixedPrecision": {"embeddingBits": 4, "firstLayerBits": 8, "lastLayerBits": 8, "attentionBits": 4}}
TEXT_BUNDLES = {"int8": ["--format", "int8"], "int4": ["--format", "int4"], "int3": ["--format", "int3"],
                "int2-optimal": ["--format", "int2-optimal"], "mixed": ["--config", "mixed.json"]}
IMAGE_BUNDLES = {"int4": ["--format", "int4"], "int2": ["--format", "int2-optimal"]}
# browser, query, expected path, expected variant
BROWSER_CASES = [
    ("chromium", "", "webgpu", "cpu-64"),  # SwiftShader and lavapipe: the cpu profile
    ("firefox", "", "webgpu", "cpu-64"),
    ("firefox", "&profile=safari", "webgpu", "safari-512"),
    ("webkit", "", "cpu", None),
]
CASE_IDS = [f"{b}{q.replace('&', '-').replace('=', '-')}" for b, q, _, _ in BROWSER_CASES]

RUN_TEXT = "async (sentences) => window.ulpqDemo.model.process(sentences)"
RUN_SAMPLES = """async () => {
  const { sampleToImage } = await import('./images.js');
  const samples = await (await fetch('./samples.json')).json();
  return window.ulpqDemo.model.process(samples.map(sampleToImage));
}"""


@pytest.fixture(scope="session")
def model_site(site):
    (site / "mixed.json").write_text(json.dumps(MIXED))
    for name, options in TEXT_BUNDLES.items():
        options = [str(site / o) if o.endswith(".json") else o for o in options]
        assert cli_main(["bundle", "--model", "builtin:minilm", *options, "--out", str(site / f"minilm-{name}")]) == 0
    for name, options in IMAGE_BUNDLES.items():
        assert cli_main(["bundle", "--model", "builtin:vit", *options, "--out", str(site / f"vit-{name}")]) == 0
    return site


def open_model_page(demo, browser, path):
    session, state = demo(browser, path)
    assert state["status"] == "ready", state
    return session


def check_path(result, path, variant, browser):
    assert result["path"] == path, result["notes"]
    if variant:
        assert result["variant"]["name"] == variant and not result["variant"]["fallback"]
    else:
        assert result["variant"] is None
    if browser == "webkit":
        assert result["webgpu"]["available"] is False


def reference_tokens(bundle_dir, max_length, sentences=SENTENCES):
    """Token ids and mask of `sentences` by `tokenizers`, padded to the longest as the runtime does."""
    tokenizer = Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encoded = [e.ids for e in tokenizer.encode_batch(sentences)]
    seq = max(map(len, encoded))
    ids = np.zeros((len(encoded), seq), np.int64)
    mask = np.zeros((len(encoded), seq))
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
        mask[i, : len(e)] = 1
    return ids, mask


@pytest.mark.parametrize("browser, query, path, variant", BROWSER_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", TEXT_BUNDLES)
def test_minilm_matches_numpy(demo, model_site, name, browser, query, path, variant):
    folder = model_site / f"minilm-{name}"
    session = open_model_page(demo, browser, f"minilm-{name}/index.html?run=0&poison=1{query}")
    result = session.evaluate(RUN_TEXT, SENTENCES)
    check_path(result, path, variant, browser)
    bundle = load_bundle(folder)
    ids, mask = reference_tokens(folder, bundle.model["tokenizer"]["max_length"])
    assert result["tokens"] == mask.sum(axis=1).astype(int).tolist()  # the browser's tokenizer agrees
    expected = bert_forward(bundle.model, bundle.weights, ids, mask)
    similarity = cosine(np.asarray(result["embeddings"]), expected)
    assert similarity.min() >= E2E_COSINE, similarity


def samples_reference(folder, bundle):
    samples = json.loads((folder / "samples.json").read_text())
    grey = np.stack([np.frombuffer(base64.b64decode(s["grey_base64"]), np.uint8).reshape(s["height"], s["width"])
                     for s in samples])
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    return vit_forward(bundle.model, bundle.weights, vit_preprocess(rgba, bundle.model["preprocess"]))


@pytest.mark.parametrize("browser, query, path, variant", BROWSER_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", IMAGE_BUNDLES)
def test_vit_matches_numpy(demo, model_site, name, browser, query, path, variant):
    folder = model_site / f"vit-{name}"
    session = open_model_page(demo, browser, f"vit-{name}/index.html?run=0&poison=1{query}")
    result = session.evaluate(RUN_SAMPLES)
    check_path(result, path, variant, browser)
    expected = samples_reference(folder, load_bundle(folder))
    logits = np.asarray(result["logits"])
    assert relative_error(logits, expected) < E2E_LOGITS
    assert [p["index"] for p in result["predictions"]] == expected.argmax(axis=1).tolist()


def test_demo_page_shows_similarity_and_classes(demo, model_site):
    _, state = demo("chromium", "minilm-int4/index.html")
    assert state["status"] == "done" and state["facts"]["fact-path"] == "webgpu"
    assert len(state["result"]["embeddings"]) == 4
    _, state = demo("webkit", "vit-int4/index.html")
    assert state["status"] == "done" and state["facts"]["fact-path"] == "cpu"
    assert len(state["result"]["predictions"]) == 10
