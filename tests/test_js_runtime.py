"""The bundle's JS runtime under Node: its decoder restores every format exactly as numpy does,
its CPU path matches the numpy reference, and its variant choice follows the profile table."""


import numpy as np
import pytest

from support import ROOT, node_json, run_cli
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.formats import FORMATS
from ulpq_build.reference import mlp_forward, relative_error

# JS computes in float64 over float32 weights; numpy's float64 reference differs only by the erf approximation
CPU_PATH_TOLERANCE = 1e-5


def run_node(bundle, request, tmp_path):
    return node_json(ROOT / "tests/js/node_runtime.mjs", bundle, request=request, tmp_path=tmp_path, timeout=300)


CASES = [[f] for f, fmt in FORMATS.items() if fmt.levels != "codebook"] + [  # codebooks: test_codebook_formats.py
    ["int4", "--group-size", "32"], ["int3-dense", "--group-size", "32", "--asymmetric"], ["int2", "--asymmetric"],
    ["int8", "--group-size", "-1", "--scale-dtype", "float16"], ["int3-optimal", "--codebook", "channel", "--group-size", "32"],
    ["int2-4values", "--scale-dtype", "float16"], ["int1", "--group-size", "32"],
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: " ".join(o))
def test_decoder_and_cpu_path(options, tmp_path, rng):
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", *options, "--out", bundle, check=0)
    loaded = load_bundle(bundle)
    x = rng.standard_normal((3, loaded.model["input_size"])).round(5)
    result = run_node(bundle, {"inputs": x.tolist()}, tmp_path)
    for name, restored in loaded.weights.items():
        np.testing.assert_array_equal(np.asarray(result["tensors"][name], np.float32), restored.ravel(), err_msg=name)
    expected = mlp_forward(loaded.model, loaded.weights, x)
    assert relative_error(np.asarray(result["outputs"]).reshape(expected.shape), expected) < CPU_PATH_TOLERANCE


UA = {
    "chrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    "edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0",
    "safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Safari/605.1.15",
}
STORAGE = {"maxComputeWorkgroupStorageSize": 16384, "maxStorageBuffersPerShaderStage": 8}
BIG = {"maxComputeInvocationsPerWorkgroup": 1024, "maxComputeWorkgroupSizeX": 1024, **STORAGE}
SMALL = {"maxComputeInvocationsPerWorkgroup": 256, "maxComputeWorkgroupSizeX": 256, **STORAGE}
TINY = {"maxComputeInvocationsPerWorkgroup": 128, "maxComputeWorkgroupSizeX": 128, **STORAGE}


def test_variant_choice(tmp_path):
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--out", bundle, check=0)
    cases = [
        ({"userAgent": UA["chrome"], "limits": SMALL}, "chrome", ["chrome-256", "edge-256", "firefox-128"], None),
        ({"userAgent": UA["edge"], "limits": SMALL}, "edge", ["edge-256", "chrome-256", "firefox-128"], None),
        ({"userAgent": UA["firefox"], "limits": BIG}, "firefox", ["firefox-128", "safari-512", "chrome-256", "edge-256"], None),
        ({"userAgent": UA["safari"], "limits": BIG}, "safari", ["safari-512", "chrome-256", "edge-256", "firefox-128"], None),
        ({"userAgent": UA["safari"], "limits": SMALL}, "safari", ["chrome-256", "edge-256", "firefox-128"], "safari-512 needs"),
        ({"userAgent": UA["chrome"], "limits": TINY}, "chrome", ["firefox-128"], "chrome-256 needs"),
        ({"userAgent": UA["firefox"], "profile": "safari", "limits": SMALL}, "safari", ["chrome-256", "edge-256", "firefox-128"], "using chrome-256"),
    ]
    result = run_node(bundle, {"choices": [c for c, *_ in cases]}, tmp_path)
    for (case, requested, candidates, fallback), got in zip(cases, result["choices"]):
        assert got["requested"] == requested and got["candidates"] == candidates, (case, got)
        assert (got["fallback"] is None) if fallback is None else (fallback in got["fallback"]), (case, got)
