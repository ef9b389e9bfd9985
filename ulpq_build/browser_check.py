"""Run a bundle in a browser and compare its output with the numpy reference over the bundle's own
dequantized weights: what `verify` prints and `bench` records. Each architecture's row gives its
fixed input (architectures/*.py verification_input): sentences for text models, the bundle's sample
images (else seeded random images) for image models, the demo input for the MLP, the manifest's prompt
ids for decoders (whose greedy tokens must equal the reference's, every one)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

import numpy as np

from ulpq_build.architectures import architecture_of
from ulpq_build.bundle_reader import LoadedBundle

MIN_COSINE = 0.9999  # text: per input, browser vs numpy
MAX_LOGITS_ERROR = 1e-3  # images: relative error of the logits
MAX_OUTPUT_ERROR = 1e-4  # MLP

WAIT_READY = """async () => {
  for (let i = 0; i < 6000; i++) {
    const d = window.ulpqDemo;
    if (d && d.status !== 'loading') return { status: d.status, error: d.error };
    await new Promise((r) => setTimeout(r, 100));
  }
  return { status: 'timeout' };
}"""
RUN = """async ({ kind, input, repeats }) => {
  const model = window.ulpqDemo.model;
  let x = input;
  if (kind === 'images') x = input.map((im) => ({ width: im.width, height: im.height, data: Uint8ClampedArray.from(im.data) }));
  // decoders ('prompt'): greedy generation from the verification case's token ids
  const call = kind === 'prompt' ? () => model.generate(input.prompt_ids, { maxNewTokens: input.max_new_tokens })
    : () => model.process(x);
  const t0 = performance.now();
  const first = await call();
  const firstMs = performance.now() - t0;
  const runs = [];
  for (let i = 0; i < repeats; i++) { const t = performance.now(); await call(); runs.push(performance.now() - t); }
  const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
  // bytes the page fetched (manifest, shards, shaders, runtime): body sizes as sent, cache or not
  const downloaded = performance.getEntriesByType('resource').reduce((s, e) => s + (e.encodedBodySize || 0), 0);
  return { result: first, first_ms: firstMs, runs_ms: runs, js_heap_bytes: heap, downloaded_bytes: downloaded || null,
           memory: typeof model.backend.memoryBytes === 'function' ? model.backend.memoryBytes() : null, // wasm: a getter
           timings: model.timings };
}"""


@dataclass
class CheckResult:
    browser: str
    query: str
    path: str | None = None
    variant: str | None = None
    metric: str = ""
    value: float | None = None
    passed: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    load_ms: float | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    median_ms: float | None = None
    js_heap_bytes: int | None = None
    downloaded_bytes: int | None = None
    gpu_buffer_bytes: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def fixed_input(bundle: LoadedBundle, images: int = 8) -> tuple[str, object, np.ndarray, callable]:
    """(kind, browser input, numpy reference output, compare) for a bundle: its row's fixed input,
    run through its row's reference forward over the bundle's own weights."""
    model = bundle.model
    arch = architecture_of(model)
    payload, inputs, agreement = arch.verification_input(model, bundle.folder, bundle.manifest, images)
    expected = (arch.verification_forward or arch.reference_forward)(model, bundle.weights, inputs)
    return arch.input_kind, payload, expected, lambda got: agreement(expected, got)


def passes(metric: str, value: float) -> bool:
    if metric == "min cosine":
        return value >= MIN_COSINE
    if metric == "tokens differing":  # decoders: greedy tokens, each one identical
        return value == 0
    return value < (MAX_LOGITS_ERROR if metric.startswith("logits") else MAX_OUTPUT_ERROR)


def check_in_browser(session, page_url: str, bundle: LoadedBundle, browser: str, query: str = "", repeats: int = 0,
                     prepared=None) -> CheckResult:
    """Open the bundle's page (initialise only), run the fixed input, compare; timings if repeats > 0."""
    result = CheckResult(browser, query)
    kind, payload, expected, compare = prepared or fixed_input(bundle)
    try:
        session.goto(page_url + ("&" if "?" in page_url else "?") + "run=0&poison=1" + query)
        state = session.evaluate(WAIT_READY)
        if state["status"] != "ready":
            result.error = f"page {state['status']}: {state.get('error')}"
            return result
        out = session.evaluate(RUN, {"kind": kind, "input": payload, "repeats": repeats})
    except Exception as exc:  # a browser failure is a failed check, reported, not a crash
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return result
    r = out["result"]
    result.path = r["path"]
    result.variant = r["variant"]["name"] if r["variant"] else None
    result.notes = r["notes"]
    got = np.asarray(next(r[key] for key in ("embeddings", "logits", "tokenIds", "output") if r.get(key) is not None),
                     np.float64)
    result.metric, result.value = compare(got)
    result.passed = passes(result.metric, result.value)
    result.load_ms, result.init_ms = out["timings"].get("load_ms"), out["timings"].get("init_ms")
    result.first_ms = out["first_ms"]
    result.median_ms = statistics.median(out["runs_ms"]) if out["runs_ms"] else None
    result.js_heap_bytes = out["js_heap_bytes"]
    result.downloaded_bytes = out["downloaded_bytes"]
    result.gpu_buffer_bytes = (out["memory"] or {}).get("gpu_buffer_bytes")
    return result
