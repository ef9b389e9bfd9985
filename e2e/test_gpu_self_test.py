"""The WebGPU self-test refuses a variant whose kernels compute wrong numbers, in Chromium (SwiftShader)
and Firefox (lavapipe): with every compute dispatch short of its last workgroup along the first
dimension that has more than one (or skipped, when it has one) — a kernel that leaves the last
tile of outputs unwritten — the model must answer on the CPU path, say why in its notes, and still
equal numpy; with the dispatches restored, the same page runs on WebGPU. The self-test compares
a sample of output columns (ulpq.js SELF_TEST_OUTPUTS) that includes the last one, so a missing
last tile is always seen."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import mlp_forward, relative_error

pytestmark = pytest.mark.browser

PAGE = Path(__file__).with_name("runtime_page.html")
CPU_TOLERANCE = 1e-5  # the JS CPU path computes in float64 over the same weights
GPU_TOLERANCE = 1e-3

WAIT_READY = """async () => {
  for (let i = 0; i < 400 && !window.pageReady; i++) await new Promise((r) => setTimeout(r, 50));
  return Boolean(window.pageReady);
}"""

SELF_TEST = """async ({ x }) => {
  const proto = GPUComputePassEncoder.prototype;
  const dispatch = proto.dispatchWorkgroups;
  const load = () => attempt(async () => {
    const m = await ulpq.loadBundle('./manifest.json', { hardware: 'auto' });
    const result = brief(await m.process(x));
    await m.dispose();
    return result;
  });
  let shortened = 0;
  proto.dispatchWorkgroups = function (gx, gy = 1, gz = 1) {
    shortened += 1;
    if (gx > 1) return dispatch.call(this, gx - 1, gy, gz);
    if (gy > 1) return dispatch.call(this, gx, gy - 1, gz);
    if (gz > 1) return dispatch.call(this, gx, gy, gz - 1);
    return dispatch.call(this, 0, 0, 0);
  };
  let broken;
  try {
    broken = await load();
  } finally {
    proto.dispatchWorkgroups = dispatch;
  }
  const fine = await load();
  return { broken, fine, shortened };
}"""


@pytest.fixture(scope="module")
def self_test_site(site):
    root = site / "self-test"
    assert cli_main(["bundle", "--model", "builtin:mlp", "--format", "int4", "--out", str(root)]) == 0
    shutil.copyfile(PAGE, root / "runtime_page.html")
    return root


@pytest.mark.parametrize("browser", ["chromium", "firefox"])
def test_a_variant_with_wrong_kernels_is_refused(browsers, server, self_test_site, browser):
    bundle = load_bundle(self_test_site)
    x = np.random.default_rng(7).standard_normal((3, bundle.model["input_size"])).round(4)
    session = browsers(browser)
    session.goto(f"{server.url}self-test/runtime_page.html")
    assert session.evaluate(WAIT_READY), f"{browser}: the runtime page did not load"
    got = session.evaluate(SELF_TEST, {"x": x.tolist()})
    assert got["shortened"] > 0, got  # the self-test dispatched through the patched encoder
    broken, fine = got["broken"], got["fine"]
    assert "value" in broken, broken
    assert broken["value"]["path"] == "cpu", broken
    failures = [n for n in broken["value"]["notes"] if "self-test failed" in n]
    assert failures, broken["value"]["notes"]  # every variant tried was refused by its self-test, by name
    expected = mlp_forward(bundle.model, bundle.weights, x)
    assert relative_error(np.asarray(broken["value"]["output"]), expected) < CPU_TOLERANCE
    assert "value" in fine and fine["value"]["path"] == "webgpu", fine
    assert relative_error(np.asarray(fine["value"]["output"]), expected) < GPU_TOLERANCE
