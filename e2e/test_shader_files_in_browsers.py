"""One file per distinct shader (issue 13), in real browsers: a page fetches exactly the shader files
of the profile it runs, each once (counted from the page's resource timing entries), never another
profile's, and its outputs still match numpy. The MLP bundle of the shared site and a ViT bundle
(whose operators add op_kernels), in Chromium (chrome-256, whose files edge-256 shares) and Firefox
with the safari-512 variant forced."""

import json
from collections import Counter

import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.profiles import PROFILES
from ulpq_build.reference import mlp_forward, relative_error

from test_models_in_browsers import E2E_LOGITS, RUN_SAMPLES, samples_reference

pytestmark = pytest.mark.browser

MLP_TOLERANCE = 1e-4  # relative error, as test_bundle_in_browsers
FETCHED = "() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)"
# browser, query, the profile that must run
CASES = [("chromium", "&profile=chrome", "chrome"), ("firefox", "&profile=safari", "safari")]  # (by default: cpu)


@pytest.fixture(scope="module")
def vit_site(site):
    assert cli_main(["bundle", "--model", "builtin:vit", "--format", "int4", "--out", str(site / "vit-shader-files")]) == 0
    return site


def profile_files(manifest: dict, features=()) -> dict[str, set[str]]:
    """profile -> the shader files its kernel keys name in the model graph, on a device with `features`
    (variants.js profileShaders: a key runs its variant using the most of them)."""
    file_of = {s["key"]: s["file"] for s in manifest["shaders"]}
    for s in sorted(manifest["shaders"], key=lambda s: len(s.get("features", []))):
        if s.get("features") and set(s["features"]) <= set(features):
            file_of[s["base_key"]] = s["file"]
    files = {p: set() for p in PROFILES}

    def walk(tree):
        if isinstance(tree, dict):
            if "in_features" in tree or "table" in tree:
                for p in PROFILES:
                    files[p].update(file_of[k] for k in tree["kernels"][p].values())
            for key, value in tree.items():
                if key != "kernels":
                    walk(value)
        elif isinstance(tree, list):
            for value in tree:
                walk(value)

    walk(manifest["model"])
    for p, roles in manifest["model"].get("op_kernels", {}).items():
        files[p].update(file_of[k] for k in roles.values())
    return files


def check_fetches(session, folder, name: str, profile: str, features=()) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    expected = profile_files(manifest, features)
    fetched = Counter(p.split(f"/{name}/", 1)[1] for p in session.evaluate(FETCHED) if "/shaders/" in p)
    assert fetched and set(fetched) == expected[profile], (sorted(fetched), sorted(expected[profile]))
    assert max(fetched.values()) == 1, fetched.most_common(3)  # each file once
    others = set().union(*(f for p, f in expected.items() if f != expected[profile]))
    assert not set(fetched) & others  # no file of another program set
    if profile == "chrome":
        assert expected["edge"] == expected["chrome"]  # one set of files serves both


@pytest.mark.parametrize("browser, query, profile", CASES, ids=[c[0] for c in CASES])
def test_mlp_page_fetches_only_its_profile_shaders(demo, site, browser, query, profile):
    session, state = demo(browser, f"int4/index.html?poison=1{query}")
    assert state["status"] == "done", state
    result = state["result"]
    assert result["path"] == "webgpu" and result["variant"]["profile"] == profile
    check_fetches(session, site / "int4", "int4", profile, result["variant"]["features"])
    bundle = load_bundle(site / "int4")
    expected = mlp_forward(bundle.model, bundle.weights, np.asarray(bundle.manifest["demo"]["inputs"]))
    assert relative_error(np.asarray(result["output"]), expected) < MLP_TOLERANCE


@pytest.mark.parametrize("browser, query, profile", CASES[:1], ids=[c[0] for c in CASES[:1]])
def test_vit_page_fetches_only_its_profile_shaders(demo, vit_site, browser, query, profile):
    folder = vit_site / "vit-shader-files"
    session, state = demo(browser, f"vit-shader-files/index.html?run=0&poison=1{query}")
    assert state["status"] == "ready", state
    result = session.evaluate(RUN_SAMPLES)
    assert result["path"] == "webgpu" and result["variant"]["profile"] == profile
    check_fetches(session, folder, "vit-shader-files", profile, result["variant"]["features"])
    expected = samples_reference(folder, load_bundle(folder))
    assert relative_error(np.asarray(result["logits"]), expected) < E2E_LOGITS
