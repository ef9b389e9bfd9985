"""The runtime as an app developer adopts it: `npm pack` of web_runtime/, the tarball installed into
an app, the app (tests/js/npm_app/main.js, `import { createBertModel } from 'ulpq-runtime'`) bundled
by esbuild into one script and served next to a bundle folder that holds only data (its copy of the
runtime removed, so nothing but the npm package can run it). In Chromium, on WebGPU and on the CPU
path (on worker threads when the page is cross-origin isolated), the embeddings equal numpy's over
the bundle's own weights. FAILS (never skips) where Chromium, npm or esbuild is missing."""

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ulpq_build.browser_check import MIN_COSINE
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, relative_error
from ulpq_build.serve import BundleServer, serving

pytestmark = pytest.mark.browser


def _tests_module(name):
    spec = importlib.util.spec_from_file_location(f"ulpq_tests_{name}", Path(__file__).resolve().parents[1] / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support = _tests_module("support")  # tiny_bert()
npm_tools = _tests_module("npm_tools")

MAX_EMBEDDING_ERROR = 1e-3  # relative error of the embeddings, browser vs numpy over the same weights
# tiny_bert's vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK] w0 w1 ..., so word wN has id N + 5
SENTENCES = ["w1 w2 w3 w4", "w5 w6 w7 w8 w9 w10 w11 w12 w13", "w14"]
EMBED = "async ([sentences, hardware]) => window.npmApp.embed(sentences, hardware)"


def reference_ids(sentences):
    """Token ids and mask as the runtime pads them: [CLS] words [SEP], zeros after."""
    words = [s.split() for s in sentences]
    seq = max(map(len, words)) + 2
    ids, mask = np.zeros((len(words), seq), np.int64), np.zeros((len(words), seq))
    for i, w in enumerate(words):
        ids[i, : len(w) + 2] = [2, *(5 + int(x[1:]) for x in w), 3]
        mask[i, : len(w) + 2] = 1
    return ids, mask


@pytest.fixture(scope="module")
def npm_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("npm")
    tarball, _ = npm_tools.pack(root / "pack")
    app = npm_tools.install_app(tarball, root / "app")
    npm_tools.copy_app_sources(app, "main.js", "index.html")
    script = npm_tools.esbuild_app(app)
    site = root / "site"
    site.mkdir()
    shutil.copyfile(app / "index.html", site / "index.html")
    shutil.copyfile(script, site / "app.js")
    for worker_file in ("wasm_worker.js", "wasm_exec.js"):  # as the README says: the CPU path's worker, beside app.js
        shutil.copyfile(app / "node_modules" / "ulpq-runtime" / worker_file, site / worker_file)
    model = support.tiny_bert(root / "bert-model", seed=5, hidden=64, layers=2, heads=4, inter=128, vocab=40, positions=32)
    assert cli_main(["bundle", "--model", str(model), "--format", "int4", "--out", str(site / "bundle")]) == 0
    bundle = load_bundle(site / "bundle")  # the numpy reference's weights, read while the bundle is whole
    expected = bert_forward(bundle.model, bundle.weights, *reference_ids(SENTENCES))
    for runtime_file in [*(site / "bundle").glob("*.js"), site / "bundle" / "index.html"]:
        runtime_file.unlink()  # the bundle is data only: the page runs the npm package's copy or nothing
    return site, expected


def test_esbuild_makes_one_script_with_the_package_inside(npm_site):
    site, _ = npm_site
    text = (site / "app.js").read_text()
    assert "// node_modules/ulpq-runtime/ulpq.js" in text  # esbuild names each module it inlined
    assert not [line for line in text.splitlines() if line.startswith("import ")]  # nothing left to fetch as a module
    assert not re.findall(r"""import\(\s*["']node:""", text)  # the browser field stubbed the Node built-ins


def test_npm_app_embeds_like_numpy_in_chromium_on_webgpu_and_on_the_cpu(browsers, npm_site):
    site, expected = npm_site
    session = browsers("chromium")
    _, mask = reference_ids(SENTENCES)
    with serving(site) as server:
        session.goto(f"{server.url}index.html")
        for hardware, path in (("auto", "webgpu"), ("cpu", "cpu")):
            result = session.evaluate(EMBED, [SENTENCES, hardware])
            assert result["path"] == path, result["notes"]
            if path == "webgpu":
                assert result["variant"]["name"] == "cpu-64" and not result["variant"]["fallback"], result["variant"]
            assert result["phases"] == ["weights", "verified", "ready"], result["phases"]
            assert result["tokens"] == mask.sum(axis=1).astype(int).tolist()
            embeddings = np.asarray(result["embeddings"])
            assert cosine(embeddings, expected).min() >= MIN_COSINE, (hardware, result["notes"])
            assert relative_error(embeddings, expected) < MAX_EMBEDDING_ERROR, hardware
        missing = session.evaluate("async () => window.npmApp.missingBundle()")
    assert missing["error"] == "BundleError" and missing["isBundleError"] and "404" in missing["message"], missing


def test_npm_app_runs_the_cpu_path_on_worker_threads_when_the_page_is_isolated(browsers, npm_site):
    site, expected = npm_site
    session = browsers("chromium")
    server = BundleServer(site, 0, isolate=True).start_in_background()  # COOP/COEP: shared memory allowed
    try:
        session.goto(f"{server.url}index.html")
        result = session.evaluate(EMBED, [SENTENCES, "cpu"])
    finally:
        server.shutdown()
        server.server_close()
    notes = " ".join(result["notes"])
    threads = re.search(r"WebAssembly SIMD kernels[^,]*, (\d+) threads", notes)
    assert result["path"] == "cpu" and threads and int(threads[1]) >= 2, notes
    assert cosine(np.asarray(result["embeddings"]), expected).min() >= MIN_COSINE
    assert relative_error(result["embeddings"], expected) < MAX_EMBEDDING_ERROR
