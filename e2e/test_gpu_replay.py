"""The WebGPU backend builds a model's GPU work once per input shape and replays it: in Chromium and
Firefox, a steady run creates no buffers, bind groups, pipelines or shader modules, submits once and
encodes one compute pass; replays with new inputs of the same shape still equal numpy; a new shape
compiles nothing (every pipeline exists after initialisation); and Q, K and V run as one product."""


import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, relative_error

from test_models_in_browsers import reference_tokens, samples_reference

pytestmark = pytest.mark.browser

E2E_COSINE = 0.9999
E2E_LOGITS = 1e-3
BROWSERS = [("chromium", "chrome-256"), ("firefox", "firefox-128")]

# Wraps the device's object factories and the encoder's pass starts, runs `body`, returns the counts.
COUNT = """
async function counted(model, body) {
  const device = model.backend.device;
  const counts = {};
  const restore = [];
  const wrap = (obj, name, key = name) => {
    const original = obj[name];
    obj[name] = function (...args) { counts[key] = (counts[key] ?? 0) + 1; return original.apply(this, args); };
    restore.push(() => { obj[name] = original; });
  };
  for (const name of ['createBuffer', 'createBindGroup', 'createBindGroupLayout', 'createComputePipeline',
    'createComputePipelineAsync', 'createShaderModule', 'createCommandEncoder', 'createTexture']) wrap(device, name);
  wrap(device.queue, 'submit');
  wrap(device.queue, 'writeBuffer');
  wrap(GPUCommandEncoder.prototype, 'beginComputePass');
  try {
    const result = await body();
    return { counts, result };
  } finally {
    restore.forEach((f) => f());
  }
}
"""

RUN_VIT = COUNT + """
const { sampleToImage } = await import('./images.js');
const samples = (await (await fetch('./samples.json')).json()).map(sampleToImage);
const model = window.ulpqDemo.model;
const first = await model.process(samples);
const steady = await counted(model, () => model.process([...samples].reverse()));
const newShape = await counted(model, () => model.process(samples.slice(0, 3)));
return { first, steady, newShape, stats: model.backend.stats, fused: model.backend.fused.size,
         layers: model.manifest.model.layers.length };
"""

RUN_TEXT = COUNT + """
const model = window.ulpqDemo.model;
const first = await model.process(A);
const steady = await counted(model, () => model.process(B));
return { first, steady, stats: model.backend.stats, fused: model.backend.fused.size,
         layers: model.manifest.model.layers.length };
"""

# two batches of the same padded shape (3 sentences, the longest of the same token count)
TEXT_A = ["A man is playing a guitar on the stage.", "Is this the right way?", "Short one."]
TEXT_B = ["The cat sat quietly on the warm mat today.", "Where is the station?", "Good morning."]


@pytest.fixture(scope="module")
def replay_site(site):
    for name, model in (("replay-vit", "builtin:vit"), ("replay-minilm", "builtin:minilm")):
        assert cli_main(["bundle", "--model", model, "--format", "int4", "--out", str(site / name)]) == 0
    return site


def evaluate(demo, browser, path, body, arg=None):
    session, state = demo(browser, path)
    assert state["status"] == "ready", state
    script = f"async (arg) => {{ const A = arg?.A, B = arg?.B; {body} }}"
    return session.evaluate(script, arg)


def check_steady(counts, inputs):
    """A replayed run: inputs written, one submit, one compute pass, and no new GPU objects."""
    created = {k: v for k, v in counts.items() if k.startswith("create") and k != "createCommandEncoder"}
    assert created == {}, counts
    assert counts.get("submit") == 1 and counts.get("beginComputePass") == 1, counts
    assert counts.get("writeBuffer") == inputs, counts


@pytest.mark.parametrize("browser, variant", BROWSERS, ids=[b for b, _ in BROWSERS])
def test_vit_replays_without_new_gpu_objects(demo, replay_site, browser, variant):
    folder = replay_site / "replay-vit"
    out = evaluate(demo, browser, "replay-vit/index.html?run=0", RUN_VIT)
    assert out["first"]["path"] == "webgpu" and out["first"]["variant"]["name"] == variant, out["first"]["notes"]
    assert out["fused"] == out["layers"]  # every layer's Q, K and V in one product
    bundle = load_bundle(folder)
    n = len(out["first"]["logits"])
    forward = list(range(n))
    for result, order in ((out["first"], forward), (out["steady"]["result"], forward[::-1]),
                          (out["newShape"]["result"], forward[:3])):
        expected = samples_reference(folder, bundle)[order]
        assert relative_error(np.asarray(result["logits"]), expected) < E2E_LOGITS
    check_steady(out["steady"]["counts"], inputs=2)  # the images and the [CLS] row indices
    # a new shape builds its plan (buffers, bind groups) but compiles nothing
    new = out["newShape"]["counts"]
    assert not any(new.get(k) for k in ("createComputePipeline", "createComputePipelineAsync", "createShaderModule")), new
    assert new.get("submit") == 1 and new.get("beginComputePass") == 1, new


def text_reference(folder, bundle, sentences):
    ids, mask = reference_tokens(folder, bundle.model["tokenizer"]["max_length"], sentences)
    return bert_forward(bundle.model, bundle.weights, ids, mask), ids.shape[1]


@pytest.mark.parametrize("browser, variant", BROWSERS, ids=[b for b, _ in BROWSERS])
def test_minilm_replays_without_new_gpu_objects(demo, replay_site, browser, variant):
    folder = replay_site / "replay-minilm"
    bundle = load_bundle(folder)
    want_a, seq_a = text_reference(folder, bundle, TEXT_A)
    want_b, seq_b = text_reference(folder, bundle, TEXT_B)
    assert seq_a == seq_b  # same shape: the second run replays the first's plan
    out = evaluate(demo, browser, "replay-minilm/index.html?run=0", RUN_TEXT, {"A": TEXT_A, "B": TEXT_B})
    assert out["first"]["path"] == "webgpu" and out["first"]["variant"]["name"] == variant, out["first"]["notes"]
    assert out["fused"] == out["layers"]
    assert cosine(np.asarray(out["first"]["embeddings"]), want_a).min() >= E2E_COSINE
    assert cosine(np.asarray(out["steady"]["result"]["embeddings"]), want_b).min() >= E2E_COSINE
    check_steady(out["steady"]["counts"], inputs=4)  # token ids, mask, positions, token types


RUN_MANY_SHAPES = """
const { sampleToImage } = await import('./images.js');
const samples = (await (await fetch('./samples.json')).json()).map(sampleToImage);
const model = window.ulpqDemo.model;
const sizes = [];
for (let n = 1; n <= 10; n++) {
  await model.process(samples.slice(0, n));
  sizes.push(model.backend.plans.size);
}
const again = await model.process(samples.slice(0, 1));  // its plan was freed: rebuilt, still right
return { sizes, again, memory: model.backend.memoryBytes() };
"""


def test_plans_are_bounded_and_rebuilt_after_eviction(demo, replay_site):
    """Ten batch sizes keep at most 8 plans (the least recently used freed); a freed shape runs again
    correctly on a rebuilt plan."""
    folder = replay_site / "replay-vit"
    out = evaluate(demo, "firefox", "replay-vit/index.html?run=0", RUN_MANY_SHAPES)
    assert out["sizes"] == [1, 2, 3, 4, 5, 6, 7, 8, 8, 8], out["sizes"]
    assert out["memory"]["plans"] == 8 and out["memory"]["gpu_activation_bytes"] > 0
    expected = samples_reference(folder, load_bundle(folder))[[0]]
    assert relative_error(np.asarray(out["again"]["logits"]), expected) < E2E_LOGITS
