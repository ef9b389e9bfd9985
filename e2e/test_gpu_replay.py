"""The WebGPU backend builds a model's GPU work once and replays it: in Chromium and Firefox, a steady
run creates no buffers, bind groups, pipelines or shader modules, submits once and encodes one
compute pass; replays with new inputs of the same shape still equal numpy; a new shape compiles
nothing (every pipeline exists after initialisation), and a new shape whose steps have the
structure of one already run reuses its layout (bind groups; activation buffers are shared by every
layout) and creates nothing at all; a shape prepared at initialisation runs first time without
creating anything; and Q, K and V run as one product."""


import numpy as np
import pytest

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, relative_error

from test_models_in_browsers import reference_tokens, samples_reference

pytestmark = pytest.mark.browser

E2E_COSINE = 0.9999
E2E_LOGITS = 1e-3
BROWSERS = [("chromium", "cpu-64"), ("firefox", "cpu-64")]  # both adapters here are CPU ones: the cpu profile

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
const preparedPlans = model.backend.plans.size;  // the shapes initialisation prepared
const prepared = await counted(model, () => model.process(P));
const first = await model.process(A);
const steady = await counted(model, () => model.process(B));
const layoutsBefore = model.backend.stats.layoutsBuilt;
const shorter = await counted(model, () => model.process(C));
const newLayouts = model.backend.stats.layoutsBuilt - layoutsBefore;
const memory = model.backend.memoryBytes();
// a prepare() that fails keeps nothing half made; runs then plan themselves and stay right
const failed = await model.backend.prepare(() => { throw new Error('a graph that fails'); }).then(() => null, (e) => e.message);
const afterFailure = { plans: model.backend.plans.size, layouts: model.backend.layouts.size, result: await model.process(C) };
return { failed, afterFailure, prepared, preparedPlans, first, steady, shorter, newLayouts, stats: model.backend.stats, fused: model.backend.fused.size,
         layers: model.manifest.model.layers.length, memory };
"""

# two batches of the same padded shape (3 sentences, the longest of the same token count)
TEXT_A = ["A man is playing a guitar on the stage.", "Is this the right way?", "Short one."]
TEXT_B = ["The cat sat quietly on the warm mat today.", "Where is the station?", "Good morning."]
# a new, shorter padded shape of the same structure: it runs on A's layout
TEXT_C = ["A dog runs.", "Where is it?", "Hello there."]
# one text of 8 tokens ([CLS], 6 word pieces, [SEP]): a shape initialisation prepares (architectures.js PREPARED_ROWS)
TEXT_P = ["the cat sat on the mat"]


@pytest.fixture(scope="module")
def replay_site(site):
    for name, model in (("replay-vit", "builtin:vit"), ("replay-minilm", "builtin:minilm")):
        assert cli_main(["bundle", "--model", model, "--format", "int4", "--out", str(site / name)]) == 0
    return site


def evaluate(demo, browser, path, body, arg=None):
    session, state = demo(browser, path)
    assert state["status"] == "ready", state
    script = f"async (arg) => {{ const A = arg?.A, B = arg?.B, C = arg?.C, P = arg?.P; {body} }}"
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
    want_c, seq_c = text_reference(folder, bundle, TEXT_C)
    want_p, seq_p = text_reference(folder, bundle, TEXT_P)
    assert seq_p == 8
    assert seq_a == seq_b  # same shape: the second run replays the first's plan
    assert seq_c < seq_a  # a new shape, smaller: it fits A's layout
    out = evaluate(demo, browser, "replay-minilm/index.html?run=0", RUN_TEXT, {"A": TEXT_A, "B": TEXT_B, "C": TEXT_C, "P": TEXT_P})
    assert out["first"]["path"] == "webgpu" and out["first"]["variant"]["name"] == variant, out["first"]["notes"]
    assert out["fused"] == out["layers"]
    assert cosine(np.asarray(out["first"]["embeddings"]), want_a).min() >= E2E_COSINE
    # the first run of a prepared shape: its plan and GPU objects were made at initialisation, so it
    # creates nothing; its params are written once, with the inputs; and its result is right
    assert out["preparedPlans"] >= 1, out["preparedPlans"]
    check_steady(out["prepared"]["counts"], inputs=4 + 1)
    assert cosine(np.asarray(out["prepared"]["result"]["embeddings"]), want_p).min() >= E2E_COSINE
    assert cosine(np.asarray(out["steady"]["result"]["embeddings"]), want_b).min() >= E2E_COSINE
    check_steady(out["steady"]["counts"], inputs=4)  # token ids, mask, positions, token types
    # the new shape: same layout, so no GPU object at all; its params written once, with the inputs
    assert cosine(np.asarray(out["shorter"]["result"]["embeddings"]), want_c).min() >= E2E_COSINE
    check_steady(out["shorter"]["counts"], inputs=4 + 1)
    assert out["newLayouts"] == 0 and out["memory"]["plans"] == out["preparedPlans"] + 2, out
    assert out["failed"] == "a graph that fails"
    assert out["afterFailure"]["plans"] == 0 and out["afterFailure"]["layouts"] == 0, out["afterFailure"]
    assert cosine(np.asarray(out["afterFailure"]["result"]["embeddings"]), want_c).min() >= E2E_COSINE


RUN_MANY_SHAPES = COUNT + """
const { sampleToImage } = await import('./images.js');
const samples = (await (await fetch('./samples.json')).json()).map(sampleToImage);
const model = window.ulpqDemo.model;
const backend = model.backend;
const runs = [];
for (let n = 10; n >= 1; n--) {  // largest first: a smaller batch of a known structure fits its layout
  const before = backend.stats.layoutsBuilt;
  const grownBefore = backend.stats.layoutsGrown;
  const { counts, result } = await counted(model, () => model.process(samples.slice(0, n)));
  runs.push({ n, counts, newLayout: backend.stats.layoutsBuilt - before, grown: backend.stats.layoutsGrown - grownBefore,
    logits: result.logits });
}
backend.limits.layouts = 1;  // now keep one layout: every other is freed, with its shapes
const single = await model.process(samples.slice(0, 1));
const kept = backend.memoryBytes();
const ten = await model.process(samples.slice(0, 10));  // its layout was freed: made again, still right
return { runs, single, kept, ten, after: backend.memoryBytes() };
"""


def test_layouts_are_shared_bounded_and_rebuilt_after_eviction(demo, replay_site):
    """Ten batch sizes: a run creates GPU objects only when its structure is new or the shared
    activation buffers grow (shapes of one structure share a layout); with one layout allowed, the others are freed with their shapes, and
    a freed shape runs again correctly on a layout made anew."""
    folder = replay_site / "replay-vit"
    out = evaluate(demo, "firefox", "replay-vit/index.html?run=0", RUN_MANY_SHAPES)
    reference = samples_reference(folder, load_bundle(folder))
    for run in out["runs"]:
        created = sum(v for k, v in run["counts"].items() if k in ("createBuffer", "createBindGroup"))
        assert (created > 0) == (run["newLayout"] > 0 or run["grown"] > 0), run
        assert relative_error(np.asarray(run["logits"]), reference[: run["n"]]) < E2E_LOGITS
    assert sum(run["newLayout"] for run in out["runs"]) < len(out["runs"]), "no two batch sizes shared a layout"
    assert out["kept"]["layouts"] == 1 and out["kept"]["gpu_activation_bytes"] > 0, out["kept"]
    assert out["after"]["layouts"] == 1
    assert relative_error(np.asarray(out["single"]["logits"]), reference[:1]) < E2E_LOGITS
    assert relative_error(np.asarray(out["ten"]["logits"]), reference[:10]) < E2E_LOGITS


RUN_WARMED = COUNT + """
const ulpq = await import('./ulpq.js');
// a GPU profile on this CPU adapter, as a GPU would get: initialisation also runs one tiny input
// through the whole process() path (ulpq.js #warmUp); the page's own model (the cpu profile) does not
const gpu = await ulpq.loadBundle('./manifest.json', { hardware: 'webgpu', profile: 'firefox' });
const parts = { ...gpu.backend.initTimings };
const variant = gpu.variant;
const first = await counted(gpu, () => gpu.process(P));
await gpu.dispose();
return { parts, variant, first, cpuParts: { ...window.ulpqDemo.model.backend.initTimings } };
"""


def test_gpu_profile_initialisation_warms_up_the_process_path(demo, replay_site):
    """On a GPU profile, initialisation runs one tiny input through process() (so a page's first run
    does not wait for the JS engine to compile that path) and prepares the likely shapes: the first
    run at a prepared shape then creates no GPU object and equals numpy. The cpu profile (CPU
    adapters, where a run costs far more than compiling its JS) is not warmed up."""
    folder = replay_site / "replay-minilm"
    want_p, seq_p = text_reference(folder, load_bundle(folder), TEXT_P)
    assert seq_p == 8
    out = evaluate(demo, "firefox", "replay-minilm/index.html?run=0", RUN_WARMED, {"P": TEXT_P})
    assert out["variant"]["profile"] == "firefox", out["variant"]
    assert out["parts"]["warm_up_ms"] > 0 and out["parts"]["prepare_ms"] > 0, out["parts"]
    assert "warm_up_ms" not in out["cpuParts"] and out["cpuParts"]["prepare_ms"] > 0, out["cpuParts"]
    check_steady(out["first"]["counts"], inputs=4 + 1)
    assert cosine(np.asarray(out["first"]["result"]["embeddings"]), want_p).min() >= E2E_COSINE
