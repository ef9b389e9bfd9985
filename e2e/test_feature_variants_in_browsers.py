"""Adapter features in real browsers (profiles.FEATURES): a BERT-shaped bundle (a 2-layer random
BERT whose FFN output has K = 2048, so the GEMV takes its `deep` tiles there, sentences short enough
for the GEMV path and a batch long enough for the GEMMs) runs its subgroups variants in Chromium
(SwiftShader offers `subgroups`, not `shader-f16`) and its shader-f16 variants in Firefox (lavapipe
offers `shader-f16`, not `subgroups`), with the GPU profiles asked for by name (on these CPU
adapters the cpu profile, which ships no feature variants, runs by default). The result says
which features ran, and the embeddings match numpy over the bundle's own weights within the
tolerance the other MiniLM browser tests use; the adapter's subgroup size range is recorded. A
missing browser fails the test."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_models_in_browsers import E2E_COSINE, open_model_page

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine

pytestmark = pytest.mark.browser

_support = importlib.util.spec_from_file_location("ulpq_tests_support", Path(__file__).resolve().parents[1] / "tests" / "support.py")
support = importlib.util.module_from_spec(_support)
_support.loader.exec_module(support)

# browser, profile asked for, the features the adapter there offers and the variant must use
CASES = [("chromium", "chrome", ["subgroups"]), ("firefox", "firefox", ["shader-f16"])]
SHORT = ["w1 w2 w3", "w4 w5"]  # 5 and 4 tokens, batch 2 x 5 = 10 rows: GEMMs; one sentence: GEMVs
LONG = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12", "w13 w14"]
RUN = "async (sentences) => window.ulpqDemo.model.process(sentences)"


def word_ids(sentences):
    """Ids and mask as the bundle's WordPiece tokenizer gives them: tiny_bert's vocabulary is [PAD],
    [UNK], [CLS] (2), [SEP] (3), [MASK], then w0, w1, ... (w<i> is 5 + i), so every word is one token."""
    rows = [[2, *(5 + int(w[1:]) for w in s.split()), 3] for s in sentences]
    seq = max(map(len, rows))
    ids = np.zeros((len(rows), seq), np.int64)
    mask = np.zeros((len(rows), seq))
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


@pytest.fixture(scope="module")
def bert_site(site, tmp_path_factory):
    model = support.tiny_bert(tmp_path_factory.mktemp("bert-features"), hidden=64, layers=2, heads=2, inter=2048, vocab=40,
                      positions=32)
    for fmt in ("int4", "int8"):
        asymmetric = ["--asymmetric"] if fmt == "int8" else []  # zero points: the f16 levels subtract them
        assert cli_main(["bundle", "--model", str(model), "--format", fmt, *asymmetric,
                         "--out", str(site / f"bert-features-{fmt}")]) == 0
    return site


@pytest.mark.parametrize("fmt", ["int4", "int8"])
@pytest.mark.parametrize("browser, profile, features", CASES, ids=[c[0] for c in CASES])
def test_bert_bundle_runs_feature_variants_and_matches_numpy(demo, bert_site, fmt, browser, profile, features):
    folder = bert_site / f"bert-features-{fmt}"
    session = open_model_page(demo, browser, f"bert-features-{fmt}/index.html?run=0&poison=1&profile={profile}")
    bundle = load_bundle(folder)
    for sentences in ([SHORT[0]], SHORT, LONG):  # 1 x 5 rows (GEMV), 2 x 5 (GEMM), 2 x 14
        result = session.evaluate(RUN, sentences)
        assert result["path"] == "webgpu", result["notes"]
        variant = result["variant"]
        assert variant["profile"] == profile and not variant["fallback"], variant
        assert variant["features"] == features, (variant, result["notes"])
        sizes = variant["subgroup_sizes"]  # recorded where the adapter reports them (both browsers here do)
        assert sizes is not None and 4 <= sizes["min"] <= sizes["max"] <= 128, variant
        ids, mask = word_ids(sentences)
        assert result["tokens"] == mask.sum(axis=1).astype(int).tolist()  # the browser's tokenizer agrees
        expected = bert_forward(bundle.model, bundle.weights, ids, mask)
        similarity = cosine(np.asarray(result["embeddings"]), expected)
        assert similarity.min() >= E2E_COSINE, (sentences, similarity)
