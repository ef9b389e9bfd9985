"""The runtime's public JS API under misuse and interruption, in Chromium (WebGPU on SwiftShader) and
Firefox (WebGPU on lavapipe), on the WebGPU and the CPU path (issue 12, docs/reliability.md
"Runtime (browser)"): overlapping calls, bad input, bad manifests, tampered files, a lost device,
dispose(), options, a throwing onProgress, truncation notes and a CPU path that hands the page back.

Numbers are compared with the numpy reference over the bundle's own dequantized weights. The small
MLP carries the WebGPU cases (MiniLM on software WebGPU takes ~20 s to start); MiniLM and the ViT run
on both paths where their encoders matter (text and image checks, slices of the CPU path)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import bert_forward, cosine, mlp_forward, relative_error, vit_forward, vit_preprocess

pytestmark = pytest.mark.browser

PAGE = Path(__file__).with_name("runtime_page.html")
BROWSERS = ["chromium", "firefox"]
GPU_TOLERANCE = 1e-3  # relative error of MLP / ViT outputs vs numpy on WebGPU (float32 kernels)
CPU_TOLERANCE = 1e-5  # the JS CPU path computes in float64 over the same weights
TEXT_COSINE = 0.9999  # per sentence, browser embedding vs numpy
EXPECTED_PATH = {"auto": "webgpu", "webgpu": "webgpu", "cpu": "cpu"}

WAIT_READY = """async () => {
  for (let i = 0; i < 400 && !window.pageReady; i++) await new Promise((r) => setTimeout(r, 50));
  return Boolean(window.pageReady);
}"""


def tamper(folder: Path, name: str) -> None:
    path = folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))


def edited_manifest(root: Path, name: str, edit) -> None:
    folder = root / name
    shutil.copytree(root / "mlp", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(edit(manifest)))


BAD_MANIFESTS = {
    "null": (lambda m: None, "must be a JSON object"),
    "version": (lambda m: {**m, "schema_version": 99}, "schema_version 99"),
    "no-shards": (lambda m: {k: v for k, v in m.items() if k != "shards"}, "manifest.shards is missing"),
    "tensors-object": (lambda m: {**m, "tensors": {}}, "manifest.tensors must be an array"),
    "offset-string": (lambda m: {**m, "tensors": [{**m["tensors"][0], "parts": {**m["tensors"][0]["parts"],
                      "codes": {**m["tensors"][0]["parts"]["codes"], "offset": "12"}}}, *m["tensors"][1:]]},
                      "manifest.tensors[0].parts.codes.offset must be a non-negative integer"),
    "shader-sha": (lambda m: {**m, "shader_files": [{**m["shader_files"][0], "sha256": 5}, *m["shader_files"][1:]]},
                   "manifest.shader_files[0].sha256 must be a sha256"),
    "shard-outside": (lambda m: {**m, "shards": [{**m["shards"][0], "file": "../weights-000.bin"}]},
                      "manifest.shards[0].file must be a file name inside the bundle"),
}


@pytest.fixture
def rng():
    return np.random.default_rng(20261129)


@pytest.fixture(scope="module")
def runtime_site(site):
    """Bundles under the shared site: the MLP, MiniLM, the ViT, tampered copies and edited manifests."""
    root = site / "runtime"
    root.mkdir()
    for name, model in (("mlp", "builtin:mlp"), ("minilm", "builtin:minilm"), ("vit", "builtin:vit")):
        assert cli_main(["bundle", "--model", model, "--format", "int4", "--out", str(root / name)]) == 0
    manifest = json.loads((root / "mlp" / "manifest.json").read_text())
    # every shader (so every variant meets one), the large-batch GEMMs only, a shard, the tokenizer
    shutil.copytree(root / "mlp", root / "tampered-shaders")
    for file in {shader["file"] for shader in manifest["shaders"]}:  # profiles share files: flip each once
        tamper(root / "tampered-shaders", file)
    shutil.copytree(root / "mlp", root / "tampered-lazy-shader")
    for file in {shader["file"] for shader in manifest["shaders"] if shader["options"].get("size") == "large"}:
        tamper(root / "tampered-lazy-shader", file)
    shutil.copytree(root / "mlp", root / "tampered-shard")
    tamper(root / "tampered-shard", "weights-000.bin")
    shutil.copytree(root / "minilm", root / "tampered-tokenizer")
    tamper(root / "tampered-tokenizer", "tokenizer.json")
    for name, (edit, _) in BAD_MANIFESTS.items():
        edited_manifest(root, f"manifest-{name}", edit)
    for folder in root.iterdir():
        shutil.copyfile(PAGE, folder / "runtime_page.html")
    return root


@pytest.fixture
def page(browsers, server, runtime_site):
    """page(browser, bundle) -> a session on that bundle's runtime page, ready for page scripts."""
    def open_page(browser: str, bundle: str):
        session = browsers(browser)
        session.goto(f"{server.url}runtime/{bundle}/runtime_page.html")
        assert session.evaluate(WAIT_READY), f"{browser}: the runtime page did not load"
        return session

    return open_page


def mlp_inputs(bundle, rng, *rows):
    width = bundle.model["input_size"]
    return [rng.standard_normal((n, width)).round(4) for n in rows]


def check_mlp(outputs, bundle, inputs, tolerance):
    for got, x in zip(outputs, inputs):
        expected = mlp_forward(bundle.model, bundle.weights, x)
        assert relative_error(np.asarray(got), expected) < tolerance


# 1. Overlapping calls ---------------------------------------------------------------------------

OVERLAP = """async ({ hardware, batches }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware, poison: true });
  const together = await Promise.all(batches.map((b) => m.process(b)));
  const alone = [];
  for (const b of batches) alone.push(await m.process(b));
  return { together: together.map(brief), alone: alone.map(brief), pathAfter: m.backend.path };
})"""


# 'auto' is the WebGPU path here (and must stay on it); 'webgpu' runs the same backend.
@pytest.mark.parametrize("hardware", ["auto", "cpu"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_overlapping_calls_on_one_model(page, runtime_site, browser, hardware, rng):
    bundle = load_bundle(runtime_site / "mlp")
    inputs = mlp_inputs(bundle, rng, 1, 3, 2, 5, 1)
    got = page(browser, "mlp").evaluate(OVERLAP, {"hardware": hardware, "batches": [x.tolist() for x in inputs]})
    assert "value" in got, got
    tolerance = CPU_TOLERANCE if hardware == "cpu" else GPU_TOLERANCE
    for run in ("together", "alone"):
        assert [r["path"] for r in got["value"][run]] == [EXPECTED_PATH[hardware]] * len(inputs), got["value"][run][0]["notes"]
        check_mlp([r["output"] for r in got["value"][run]], bundle, inputs, tolerance)
    assert got["value"]["pathAfter"] == EXPECTED_PATH[hardware]  # 'auto' did not drop to the CPU
    assert not any("failed" in n for n in got["value"]["together"][-1]["notes"])


def reference_embeddings(folder, sentences):
    bundle = load_bundle(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(bundle.model["tokenizer"]["max_length"])
    rows = []
    for sentence in sentences:  # one at a time: padding does not change a sentence's embedding
        ids = np.asarray([tokenizer.encode(sentence).ids])
        rows.append(bert_forward(bundle.model, bundle.weights, ids, np.ones(ids.shape))[0])
    return np.stack(rows)


TEXT_OVERLAP = """async () => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware: 'auto', poison: true });
  const [a, b] = await Promise.all([m.process(['a']), m.process(['b'])]);
  return { results: [brief(a), brief(b)], pathAfter: m.backend.path };
})"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_overlapping_text_calls_on_webgpu(page, runtime_site, browser):
    """The issue's own example: Promise.all([m.process(['a']), m.process(['b'])]) with hardware 'auto'."""
    got = page(browser, "minilm").evaluate(TEXT_OVERLAP)
    assert "value" in got, got
    results = got["value"]["results"]
    assert [r["path"] for r in results] == ["webgpu", "webgpu"] and got["value"]["pathAfter"] == "webgpu", results[0]["notes"]
    expected = reference_embeddings(runtime_site / "minilm", ["a", "b"])
    similarity = cosine(np.asarray([r["output"][0] for r in results]), expected)
    assert similarity.min() >= TEXT_COSINE, similarity


# 2. Inputs checked up front -----------------------------------------------------------------------

BAD_INPUTS = """async ({ hardware, cases, good }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware });
  const errors = [];
  for (const source of cases) {
    const input = (0, eval)(`(${source})`);
    const got = await attempt(() => m.process(input));
    errors.push(got.error ?? { name: 'no error', message: JSON.stringify(got.value?.output ?? null).slice(0, 80) });
  }
  const after = brief(await m.process(good));  // the model still works after every refusal
  return { errors, after };
})"""

ROW = "Array.from({length: 64}, (_, i) => Math.sin(i))"
MLP_BAD = {
    "new Array(2)": "item 0 is missing",
    f"[, {ROW}]": "item 0 is missing",
    "[null]": "row 0 is null",
    "[]": "the array is empty",
    "'1,2,3'": "pass an array",
    f"[{ROW}.map((v, i) => i === 5 ? NaN : v)]": "row 0, value 5 is NaN",
    f"[{ROW}, {ROW}.map((v, i) => i === 7 ? Infinity : v)]": "row 1, value 7 is Infinity",
    f"[{ROW}.map((v, i) => i === 2 ? -Infinity : v)]": "row 0, value 2 is -Infinity",
    f"[{ROW}.map((v, i) => i === 3 ? '0.5' : v)]": 'row 0, value 3 is the string "0.5"',
    f"[{ROW}.map((v, i) => i === 4 ? null : v)]": "row 0, value 4 is null",
    "[new Array(64)]": "row 0, value 0 is missing",
    f"[{ROW}.slice(1)]": "row 0 has 63 values, the model takes 64",
    f"[[...{ROW}, 1]]": "row 0 has 65 values",
    f"[new Float32Array({ROW}).fill(NaN, 9, 10)]": "row 0, value 9 is NaN",
    "[{length: 64}]": "row 0 is object",
}
TEXT_BAD = {
    "new Array(2)": "item 0 is missing",
    "[, 'x']": "item 0 is missing",
    "['x', , 'y']": "item 1 is missing",
    "[null]": "item 0 is null",
    "['ok', 5]": "item 1 is 5",
    "[undefined]": "item 0 is undefined",
    "[['nested']]": "item 0 is an array",
    "[]": "the array is empty",
    "'a sentence'": 'pass an array of strings, not the string "a sentence"',
}
IMAGE = "({width: 28, height: 28, data: new Uint8ClampedArray(28 * 28 * 4).fill(128)})"
PLAIN = "({width: 28, height: 28, data: Array.from({length: 28 * 28 * 4}, (_, i) => i % 256)})"
IMAGE_BAD = {
    "new Array(2)": "item 0 is missing",
    f"[, {IMAGE}]": "item 0 is missing",
    "[null]": "image 0 is null",
    "[]": "the array is empty",
    f"[{IMAGE}, {{...{PLAIN}, data: {PLAIN}.data.map((v, i) => i === 11 ? NaN : v)}}]": "image 1, data value 11 is NaN",
    f"[{{...{PLAIN}, data: {PLAIN}.data.map((v, i) => i === 3 ? Infinity : v)}}]": "image 0, data value 3 is Infinity",
    f"[{{...{PLAIN}, data: {PLAIN}.data.map((v, i) => i === 0 ? 'x' : v)}}]": 'image 0, data value 0 is the string "x"',
    f"[{{...{PLAIN}, data: {PLAIN}.data.map((v, i) => i === 6 ? 300 : v)}}]": "image 0, data value 6 is 300",
    f"[{{...{PLAIN}, data: new Float32Array({PLAIN}.data).fill(NaN, 2, 3)}}]": "image 0, data value 2 is NaN",
    f"[{{...{IMAGE}, data: new Uint8ClampedArray(100)}}]": "image 0 has 100 data values; 28x28 RGBA needs 3136",
    f"[{{...{IMAGE}, width: 27}}]": "image 0 has 3136 data values; 27x28 RGBA needs 3024",
    f"[{{...{IMAGE}, width: 0}}]": "image 0 has width 0",
    f"[{{...{IMAGE}, height: 2.5}}]": "image 0 has height 2.5",
    f"[{{...{IMAGE}, height: '28'}}]": 'image 0 has height the string "28"',
    f"[{{...{IMAGE}, data: null}}]": "image 0 has data null",
    "[{width: 1e9, height: 1, data: []}]": "image 0 has width 1000000000",
    "['cat.png']": 'image 0 is the string "cat.png"',
}


def check_refusals(errors, cases):
    for (source, fragment), error in zip(cases.items(), errors):
        assert error["name"] == "TypeError" and fragment in error["message"], (source, error)


@pytest.mark.parametrize("hardware", ["auto", "cpu"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_bad_rows_are_refused_by_name(page, runtime_site, browser, hardware, rng):
    bundle = load_bundle(runtime_site / "mlp")
    (good,) = mlp_inputs(bundle, rng, 2)
    got = page(browser, "mlp").evaluate(BAD_INPUTS, {"hardware": hardware, "cases": list(MLP_BAD), "good": good.tolist()})
    assert "value" in got, got
    check_refusals(got["value"]["errors"], MLP_BAD)
    assert got["value"]["after"]["path"] == EXPECTED_PATH[hardware]
    check_mlp([got["value"]["after"]["output"]], bundle, [good], CPU_TOLERANCE if hardware == "cpu" else GPU_TOLERANCE)


@pytest.mark.parametrize("browser", BROWSERS)
def test_bad_texts_are_refused_by_name(page, runtime_site, browser):
    got = page(browser, "minilm").evaluate(BAD_INPUTS, {"hardware": "cpu", "cases": list(TEXT_BAD), "good": ["a cat", "a dog"]})
    assert "value" in got, got
    check_refusals(got["value"]["errors"], TEXT_BAD)
    expected = reference_embeddings(runtime_site / "minilm", ["a cat", "a dog"])
    assert cosine(np.asarray(got["value"]["after"]["output"]), expected).min() >= TEXT_COSINE


def random_images(rng, count, size=28):
    return rng.integers(0, 256, (count, size, size, 4), dtype=np.uint8)


IMAGES_JS = "(images) => images.map(({ width, height, data }) => ({ width, height, data: Uint8ClampedArray.from(data) }))"
BAD_IMAGES = BAD_INPUTS.replace("await m.process(good)", f"await m.process(({IMAGES_JS})(good))")


def images_arg(images):
    return [{"width": int(i.shape[1]), "height": int(i.shape[0]), "data": i.ravel().tolist()} for i in images]


def vit_reference(folder, images):
    bundle = load_bundle(folder)
    return vit_forward(bundle.model, bundle.weights, vit_preprocess(images, bundle.model["preprocess"]))


@pytest.mark.parametrize("hardware", ["auto", "cpu"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_bad_images_are_refused_by_name(page, runtime_site, browser, hardware, rng):
    images = random_images(rng, 2)
    got = page(browser, "vit").evaluate(BAD_IMAGES, {"hardware": hardware, "cases": list(IMAGE_BAD), "good": images_arg(images)})
    assert "value" in got, got
    check_refusals(got["value"]["errors"], IMAGE_BAD)
    after = got["value"]["after"]
    assert after["path"] == EXPECTED_PATH[hardware] and len(after["predictions"]) == 2
    expected = vit_reference(runtime_site / "vit", images)
    assert relative_error(np.asarray(after["output"]), expected) < (CPU_TOLERANCE if hardware == "cpu" else GPU_TOLERANCE)


TRUNCATION = """async (texts) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware: 'cpu' });
  return brief(await m.process(texts));
})"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_truncation_is_reported_in_notes(page, runtime_site, browser):
    folder = runtime_site / "minilm"
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # 360 word pieces
    texts = ["short", long_text]
    got = page(browser, "minilm").evaluate(TRUNCATION, texts)
    assert "value" in got, got
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pieces = len(tokenizer.encode(long_text, add_special_tokens=False).ids)
    max_length = load_bundle(folder).model["tokenizer"]["max_length"]
    assert pieces > max_length
    notes = [n for n in got["value"]["notes"] if "truncated" in n]
    assert notes == [f"text 1 was truncated: {pieces} word pieces, {pieces - (max_length - 2)} dropped past the model's "
                     f"max_length of {max_length} tokens"], got["value"]["notes"]
    assert got["value"]["tokens"] == [3, max_length]
    expected = reference_embeddings(folder, texts)
    assert cosine(np.asarray(got["value"]["output"]), expected).min() >= TEXT_COSINE


# 3. Manifest schema and integrity -----------------------------------------------------------------

LOAD = """async ({ hardware, options }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware, ...options });
  return { path: m.backend.path, notes: m.notes };
})"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_bad_manifests_give_a_bundle_error_naming_the_field(page, browser):
    for name, (_, fragment) in BAD_MANIFESTS.items():
        session = page(browser, f"manifest-{name}")
        for hardware in ("auto", "webgpu", "cpu"):
            got = session.evaluate(LOAD, {"hardware": hardware, "options": {}})
            assert got.get("error", {}).get("name") == "BundleError" and fragment in got["error"]["message"], (name, hardware, got)


@pytest.mark.parametrize("browser", BROWSERS)
def test_tampered_files_stop_the_load_on_every_setting(page, browser):
    cases = [("tampered-shaders", ("auto", "webgpu")), ("tampered-shard", ("auto", "webgpu", "cpu")),
             ("tampered-tokenizer", ("auto", "webgpu", "cpu"))]
    for bundle, settings in cases:
        session = page(browser, bundle)
        for hardware in settings:
            got = session.evaluate(LOAD, {"hardware": hardware, "options": {}})
            assert got.get("error", {}).get("name") == "IntegrityError", (bundle, hardware, got)
            assert "sha256 mismatch" in got["error"]["message"]


# The WebGPU backend starts (device, shader fetches, pipeline compiles) while the shards download;
# only the upload waits for them. Shard responses are held until a pipeline has started compiling
# (the test fails if the load waits for the shards first); then they arrive whole, or fail, or
# arrive tampered. A failed or tampered download is the error the load reports (not a WebGPU
# failure, and no CPU fallback), and the device made meanwhile is destroyed before it reports.
EARLY_BACKEND = """async ({ x, shard }) => attempt(async () => {
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  const realFetch = window.fetch;
  let asked = 0;
  window.fetch = async (url, init) => {
    if (/weights-[0-9]+[.]bin$/.test(String(url))) {
      asked += 1;
      await held;
      if (shard === 'fails') throw new TypeError('the network went away (test)');
      if (shard === 'tampered') {
        const bytes = new Uint8Array(await (await realFetch(url, init)).arrayBuffer());
        bytes[bytes.length >> 1] ^= 1;
        return new Response(bytes);
      }
    }
    return realFetch(url, init);
  };
  const proto = GPUDevice.prototype;
  const realCreate = proto.createComputePipelineAsync;
  const realDestroy = proto.destroy;
  let compiling = 0;
  const devices = new Set();
  const destroyed = new Set();
  proto.createComputePipelineAsync = function (descriptor) { compiling += 1; devices.add(this); return realCreate.call(this, descriptor); };
  proto.destroy = function () { destroyed.add(this); return realDestroy.call(this); };
  try {
    const loading = attempt(async () => {
      const m = await ulpq.loadBundle('./manifest.json', { hardware: 'auto', cache: false, poison: true });
      return { result: brief(await m.process(x)), timings: m.timings, parts: m.backend.initTimings ?? null };
    });
    for (let i = 0; i < 1200 && compiling === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const compilingBeforeShards = compiling;
    const askedBefore = asked;
    release();
    const got = await loading;
    return { compilingBeforeShards, askedBefore, got, devices: devices.size,
      undestroyed: [...devices].filter((d) => !destroyed.has(d)).length };
  } finally {
    window.fetch = realFetch;
    proto.createComputePipelineAsync = realCreate;
    proto.destroy = realDestroy;
  }
})"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_webgpu_backend_starts_while_the_shards_download(page, runtime_site, browser, rng):
    bundle = load_bundle(runtime_site / "mlp")
    (x,) = mlp_inputs(bundle, rng, 3)
    session = page(browser, "mlp")
    whole = session.evaluate(EARLY_BACKEND, {"x": x.tolist(), "shard": "whole"})
    assert "value" in whole, whole
    v = whole["value"]
    assert v["askedBefore"] >= 1 and v["compilingBeforeShards"] >= 1, v  # compiling before any shard arrived
    assert "value" in v["got"], v["got"]
    assert v["got"]["value"]["result"]["path"] == "webgpu", v["got"]
    check_mlp([v["got"]["value"]["result"]["output"]], bundle, [x], GPU_TOLERANCE)
    assert v["got"]["value"]["parts"]["weights_wait_ms"] >= 0, v["got"]["value"]["parts"]
    for shard, name, fragment in (("fails", "BundleError", "the network went away"), ("tampered", "IntegrityError", "sha256 mismatch")):
        failed = session.evaluate(EARLY_BACKEND, {"x": x.tolist(), "shard": shard})["value"]
        assert failed["compilingBeforeShards"] >= 1, failed
        error = failed["got"].get("error", {})
        assert error.get("name") == name and fragment in error.get("message", ""), (shard, failed)
        assert failed["devices"] >= 1 and failed["undestroyed"] == 0, (shard, failed)  # released before the load failed


# 4. Device loss ---------------------------------------------------------------------------------

DEVICE_LOSS = """async ({ hardware, x }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware, poison: true });
  const first = brief(await m.process(x));
  const device = m.backend.device;
  device.destroy();
  await device.lost;
  const recreated = await attempt(async () => brief(await m.process(x)));
  const fresh = m.backend?.device !== device;
  // Now lose the device again where no new one can be had.
  m.backend.device.destroy();
  const requestAdapter = navigator.gpu.requestAdapter;
  navigator.gpu.requestAdapter = async () => null;
  try {
    const gone = await attempt(async () => brief(await m.process(x)));
    const later = await attempt(async () => brief(await m.process(x)));
    return { first, recreated, fresh, gone, later };
  } finally {
    navigator.gpu.requestAdapter = requestAdapter;
  }
})"""


@pytest.mark.parametrize("hardware", ["auto", "webgpu"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_device_loss(page, runtime_site, browser, hardware, rng):
    bundle = load_bundle(runtime_site / "mlp")
    (x,) = mlp_inputs(bundle, rng, 3)
    got = page(browser, "mlp").evaluate(DEVICE_LOSS, {"hardware": hardware, "x": x.tolist()})
    assert "value" in got, got
    v = got["value"]
    assert v["first"]["path"] == "webgpu"
    assert "value" in v["recreated"], v["recreated"]  # a lost device is replaced once, the run answers
    assert v["recreated"]["value"]["path"] == "webgpu" and v["fresh"]
    assert any("recreated the WebGPU device" in n for n in v["recreated"]["value"]["notes"])
    check_mlp([v["first"]["output"], v["recreated"]["value"]["output"]], bundle, [x, x], GPU_TOLERANCE)
    if hardware == "auto":  # no device to be had: the CPU answers, and says why
        for run in (v["gone"], v["later"]):
            assert "value" in run and run["value"]["path"] == "cpu", run
            check_mlp([run["value"]["output"]], bundle, [x], CPU_TOLERANCE)
        assert any("switched to the CPU path" in n for n in v["gone"]["value"]["notes"])
    else:  # 'webgpu': GpuUnavailable, now and on every later call
        for run in (v["gone"], v["later"]):
            assert run.get("error", {}).get("name") == "GpuUnavailable", run
            assert "device was lost" in run["error"]["message"]


# 5. dispose() -----------------------------------------------------------------------------------

DISPOSE = """async ({ hardware, x }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware });
  const device = m.backend.device ?? null;
  const queued = m.process(x);             // asked before dispose(): it still answers
  const first = m.dispose();
  const second = m.dispose();              // safe twice
  const answer = brief(await queued);
  await first;
  await second;
  const lost = device ? await Promise.race([device.lost.then((info) => info.reason),
    new Promise((r) => setTimeout(() => r('not lost after 10 s'), 10000))]) : null;
  const after = await attempt(() => m.process(x));
  const again = await attempt(() => m.initialize());
  return { answer, lost, after, again, backend: m.backend, tensors: m.tensors, sameDispose: first === second };
})"""


@pytest.mark.parametrize("hardware", ["auto", "cpu"])
@pytest.mark.parametrize("browser", BROWSERS)
def test_dispose_frees_the_model(page, runtime_site, browser, hardware, rng):
    bundle = load_bundle(runtime_site / "mlp")
    (x,) = mlp_inputs(bundle, rng, 2)
    got = page(browser, "mlp").evaluate(DISPOSE, {"hardware": hardware, "x": x.tolist()})
    assert "value" in got, got
    v = got["value"]
    assert v["answer"]["path"] == EXPECTED_PATH[hardware]
    check_mlp([v["answer"]["output"]], bundle, [x], CPU_TOLERANCE if hardware == "cpu" else GPU_TOLERANCE)
    assert v["lost"] == ("destroyed" if hardware == "auto" else None)  # the GPU device itself is freed
    for call in (v["after"], v["again"]):
        assert call.get("error", {}).get("isError") and "model disposed" in call["error"]["message"], call
    assert v["backend"] is None and v["tensors"] is None and v["sameDispose"]


# 6. Options -------------------------------------------------------------------------------------

OPTIONS = """async () => {
  const sync = (f) => { try { f(); return { value: 'no error' }; } catch (e) { return { error: { name: e.name, message: e.message } }; } };
  const { UlpqModel, createBertModel, createVitModel, loadBundle } = ulpq;
  return {
    hardware: sync(() => new UlpqModel('./manifest.json', { hardware: 'gpu' })),
    profileType: sync(() => new UlpqModel('./manifest.json', { profile: 5 })),
    onProgress: sync(() => new UlpqModel('./manifest.json', { onProgress: 'log' })),
    unknownKey: sync(() => new UlpqModel('./manifest.json', { hardwre: 'cpu' })),
    notObject: sync(() => new UlpqModel('./manifest.json', 'cpu')),
    bertHardware: sync(() => createBertModel('fast', { modelId: '.' })),
    bertKey: sync(() => createBertModel('auto', { modelId: '.', quantisation: { bits: 4 } })),
    vitKey: sync(() => createVitModel('cpu', { modelId: '.', hardware: 'cpu' })),
    loadKey: await attempt(() => loadBundle('./manifest.json', { selftest: false })),
  };
}"""
OPTION_ERRORS = {
    "hardware": "option hardware must be one of 'auto', 'webgpu', 'cpu', not the string \"gpu\"",
    "profileType": "option profile must be null or a profile name",
    "onProgress": "option onProgress must be a function",
    "unknownKey": "unknown option 'hardwre'",
    "notObject": "options must be an object",
    "bertHardware": "option hardware must be one of",
    "bertKey": "createBertModel: unknown option 'quantisation'",
    "vitKey": "createVitModel: unknown option 'hardware'",
    "loadKey": "unknown option 'selftest'",
}

PROFILE_AND_PROGRESS = """async () => {
  const unknown = [];
  for (const hardware of ['auto', 'webgpu', 'cpu']) {
    unknown.push(await attempt(() => ulpq.loadBundle('./manifest.json', { hardware, profile: 'opera' })));
  }
  let calls = 0;
  const loaded = await attempt(async () => {
    const m = await ulpq.loadBundle('./manifest.json', { hardware: 'auto', onProgress: () => { calls += 1; throw new Error('boom'); } });
    return { notes: m.notes, path: m.backend.path };
  });
  return { unknown, loaded, calls };
}"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_options_are_checked_when_the_model_is_created(page, browser):
    session = page(browser, "mlp")
    got = session.evaluate(OPTIONS)
    for key, fragment in OPTION_ERRORS.items():
        assert got[key].get("error", {}).get("name") == "TypeError" and fragment in got[key]["error"]["message"], (key, got[key])
    got = session.evaluate(PROFILE_AND_PROGRESS)
    messages = {u.get("error", {}).get("message") for u in got["unknown"]}
    assert all(u.get("error", {}).get("name") == "TypeError" for u in got["unknown"]), got["unknown"]
    assert len(messages) == 1 and "profile 'opera' is unknown; this bundle has" in messages.pop()  # same on every path
    assert "value" in got["loaded"], got["loaded"]  # a throwing onProgress is isolated: the load succeeds
    assert got["loaded"]["value"]["path"] == "webgpu" and got["calls"] > 1
    assert any("onProgress threw (Error: boom)" in n for n in got["loaded"]["value"]["notes"])


# 7. The CPU path hands the page back ---------------------------------------------------------------

RESPONSIVE = """async ({ images }) => attempt(async () => {
  const m = await ulpq.loadBundle('./manifest.json', { hardware: 'cpu' });
  let ticks = 0;
  let running = true;
  const tick = () => { ticks += 1; if (running) setTimeout(tick, 0); };
  setTimeout(tick, 0);
  const input = images.map(({ width, height, data }) => ({ width, height, data: Uint8ClampedArray.from(data) }));
  const result = brief(await m.process(input));
  running = false;
  return { result, ticks };
})"""


@pytest.mark.parametrize("browser", BROWSERS)
def test_cpu_path_lets_the_page_run_between_slices(page, runtime_site, browser, rng):
    images = random_images(rng, 12)  # 12 x 17 rows: four slices of three images
    got = page(browser, "vit").evaluate(RESPONSIVE, {"images": images_arg(images)})
    assert "value" in got, got
    assert got["value"]["ticks"] >= 3  # the page's own timer ran between the slices
    expected = vit_reference(runtime_site / "vit", images)
    assert relative_error(np.asarray(got["value"]["result"]["output"]), expected) < CPU_TOLERANCE
    assert [p["index"] for p in got["value"]["result"]["predictions"]] == expected.argmax(axis=1).tolist()


# 3b. A shader only large batches use (fetched lazily by the old backend) ------------------------------

@pytest.mark.parametrize("browser", BROWSERS)
def test_tampered_lazy_shader_stops_the_load(page, browser):
    session = page(browser, "tampered-lazy-shader")
    for hardware in ("auto", "webgpu"):
        got = session.evaluate(LOAD, {"hardware": hardware, "options": {}})
        assert got.get("error", {}).get("name") == "IntegrityError", (hardware, got)
