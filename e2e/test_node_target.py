"""Node.js as a target (issue 10, item 1): a bundle's own runtime under Node through its node.js.
`verify --browsers node` on the CPU path (Debian 12's lavapipe, which Dawn refuses, with the reason in
the notes); loading from a folder, a manifest path and a file: URL with the loader's sha256 checks;
and on Dawn (npm webgpu) over bookworm-backports' Mesa 25 lavapipe, which scripts/setup.sh unpacks
into .mesa/: a small random BERT and the built-in ViT equal numpy. Like every browser test, these
FAIL (never skip) where Node, the webgpu package or the private Mesa is missing."""

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ulpq_build.browser_check import MIN_COSINE
from ulpq_build.browsers import CHECKOUT, NodeSession, node_environment
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, mlp_forward, relative_error
from ulpq_build.serve import serving
from ulpq_build.verify import verify_bundle

pytestmark = pytest.mark.browser
_support = importlib.util.spec_from_file_location("ulpq_tests_support", Path(__file__).resolve().parents[1] / "tests" / "support.py")
support = importlib.util.module_from_spec(_support)
_support.loader.exec_module(support)  # tiny_bert(), run_cli(): the unit tests' helpers

MAX_MLP_ERROR = 1e-4  # relative error of the MLP outputs, Node vs numpy
LOAD = """
import { pathToFileURL } from 'node:url';
const [bundle, where] = process.argv.slice(1);
const ulpq = await import(pathToFileURL(bundle + '/node.js').href);
const out = {};
try {
  const model = await ulpq.loadBundle(where, { hardware: 'cpu' });
  const r = await model.process(model.manifest.demo.inputs);
  out.output = r.output; out.path = r.path;
} catch (err) { out.error = err.name; out.message = err.message; }
out.webgpu = ulpq.nodeWebgpu;
console.log(JSON.stringify(out));
"""


def node_load(bundle, where, cwd=None, **env):
    proc = subprocess.run(["node", "--input-type=module", "-e", LOAD, str(bundle), str(where)], capture_output=True,
                          text=True, timeout=300, env={**node_environment(), **env}, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_verify_on_node_passes_on_the_cpu_and_says_why_dawn_has_no_adapter(site, monkeypatch):
    monkeypatch.setenv("ULPQ_MESA", "system")  # Debian 12's Mesa 22, which Dawn refuses
    proc = support.run_cli("verify", site / "int4", "--browsers", "node")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "node      cpu" in proc.stdout and "PASS" in proc.stdout
    [result] = verify_bundle(site / "int2", ["node"], log=lambda _: None)
    assert result.passed and result.path == "cpu", result
    dawn = [n for n in result.notes if n.startswith("Dawn found no adapter")]
    assert dawn and "shaderUniform" in dawn[0] and "Mesa >= 25" in dawn[0], result.notes


def test_bundle_loads_from_a_folder_a_manifest_and_a_file_url_with_sha256_checks(site):
    bundle = load_bundle(site / "int4")
    expected = mlp_forward(bundle.model, bundle.weights, np.asarray(bundle.manifest["demo"]["inputs"]))
    folder = site / "int4"
    for where in (folder, f"{folder}/", folder / "manifest.json", (folder / "manifest.json").as_uri(), f"{folder.as_uri()}/"):
        out = node_load(folder, where)
        assert "error" not in out, (where, out)
        assert out["path"] == "cpu" and relative_error(out["output"], expected) < MAX_MLP_ERROR, where
    tampered = site / "int4-tampered"
    for where in (tampered, tampered.as_uri()):
        out = node_load(folder, where)
        assert out["error"] == "IntegrityError" and "weights-000.bin: sha256 mismatch" in out["message"], out
    out = node_load(folder, site / "no-such-bundle")
    assert out["error"] == "BundleError" and "404" in out["message"], out


def test_without_the_webgpu_package_node_takes_the_cpu_path_and_says_so(site):
    # a bundle outside the checkout, run from there: no node_modules to find webgpu in
    out = node_load(site / "int4", site / "int4", cwd=site, NODE_PATH="")
    assert out["path"] == "cpu" and out["webgpu"]["dawn"] is False
    assert "'webgpu' (Dawn) is not installed" in out["webgpu"]["reason"]


# --- Dawn over Mesa 25's lavapipe ---------------------------------------------------------------

SENTENCES = ["w1 w2 w3 w4", "w5 w6 w7 w8 w9 w10 w11 w12 w13", "w14"]  # vocab: [PAD] [UNK] [CLS] [SEP] [MASK] w0...


@pytest.fixture(scope="module")
def dawn_site(tmp_path_factory):
    assert (CHECKOUT / ".mesa" / "lvp_icd.json").is_file(), "no Mesa 25 lavapipe in .mesa/: run scripts/setup.sh"
    assert (CHECKOUT / ".node" / "node_modules" / "webgpu").is_dir(), "no npm webgpu in .node/: run scripts/setup.sh"
    root = tmp_path_factory.mktemp("dawn")
    model = support.tiny_bert(root / "bert-model", seed=3, hidden=64, layers=2, heads=4, inter=128, vocab=40, positions=32)
    for fmt in ("float32", "int4"):
        assert cli_main(["bundle", "--model", str(model), "--format", fmt, "--out", str(root / f"bert-{fmt}")]) == 0
    assert cli_main(["bundle", "--model", "builtin:vit", "--format", "int4", "--out", str(root / "vit-int4")]) == 0
    return root


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["float32", "int4"])
def test_small_bert_on_dawn_lavapipe_equals_numpy(dawn_site, fmt):
    folder = dawn_site / f"bert-{fmt}"
    session = NodeSession()
    try:
        with serving(dawn_site) as server:
            session.goto(f"{server.url}bert-{fmt}/index.html?run=0&poison=1")
            state = session.evaluate("async () => ({status: ulpqDemo.status, error: ulpqDemo.error})")
            assert state["status"] == "ready", state
            result = session.evaluate("async (x) => ulpqDemo.model.process(x)", SENTENCES)
    finally:
        session.close()
    assert result["path"] == "webgpu", result["notes"]
    bundle = load_bundle(folder)
    words = [s.split() for s in SENTENCES]
    seq = max(map(len, words)) + 2
    ids, mask = np.zeros((len(words), seq), np.int64), np.zeros((len(words), seq))
    for i, w in enumerate(words):
        ids[i, : len(w) + 2] = [2, *(5 + int(x[1:]) for x in w), 3]
        mask[i, : len(w) + 2] = 1
    assert result["tokens"] == mask.sum(1).astype(int).tolist()
    expected = bert_forward(bundle.model, bundle.weights, ids, mask)
    assert cosine(np.asarray(result["embeddings"]), expected).min() >= MIN_COSINE
    assert relative_error(result["embeddings"], expected) < 1e-3


@pytest.mark.gpu
def test_vit_on_dawn_lavapipe_equals_numpy(dawn_site):
    [result] = verify_bundle(dawn_site / "vit-int4", ["node"], log=lambda _: None)
    assert result.path == "webgpu" and result.passed, result
    assert not any(n.startswith("Dawn found no adapter") for n in result.notes), result.notes
