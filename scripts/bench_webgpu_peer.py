"""This runtime's WebGPU path beside ONNX Runtime Web's WebGPU EP on the browsers' own adapters here
(Chromium: SwiftShader, a CPU Vulkan; Firefox: lavapipe), in one run (issue 10's software-adapter
target): all-MiniLM-L6-v2 in float32 and 4-bit (ours: int4 groups of 32; ORT: MatMulNBits block 32,
exported by torch.onnx as in scripts/bench_cpu_peer.py), the same 8 sentences (8 x 18 tokens), a
fresh page per configuration, interleaved rounds, warm-up runs then timed runs; the median of all
timed runs per configuration. Ours is timed around `process()` (tokenization included), ORT around
`session.run()`.

    python scripts/bench_webgpu_peer.py [--browsers chromium,firefox] [--rounds 2] [--warmup 2] [--repeats 5]
                                        [--work .bench] [--write-docs docs/benchmarks.md]

Needs what scripts/bench_cpu_peer.py needs (npm for onnxruntime-web 1.30, torch for the export).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu_peer import SENTENCES, browser_label, cosines, ensure_ort, export_onnx, measure  # noqa: E402

from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.cli import main as cli_main  # noqa: E402

MARK_START, MARK_END = "<!-- bench_webgpu_peer:start -->", "<!-- bench_webgpu_peer:end -->"
PAGE = "<!doctype html><meta charset=utf-8><title>WebGPU bench</title><p>bench page</p>\n"
BENCH_JS = r"""
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };

async function adapterInfo() {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  return [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || null;
}

export async function runOurs({ bundle, sentences, warmup, repeats, profile = null }) {
  const ulpq = await import(`./${bundle}/ulpq.js`);
  const t0 = performance.now();
  const model = await ulpq.loadBundle(`./${bundle}/manifest.json`, { hardware: 'webgpu', cache: false, profile });
  const initMs = performance.now() - t0;
  const times = [];
  let out;
  for (let i = 0; i < warmup + repeats; i++) {
    const t = performance.now();
    out = await model.process(sentences);
    times.push(performance.now() - t);
  }
  const result = { first_ms: times[0], median_ms: median(times.slice(warmup)), times, init_ms: initMs, path: out.path,
    variant: out.variant?.name ?? null, tokens: out.tokens, embeddings: out.embeddings, adapter: await adapterInfo() };
  await model.dispose();
  return result;
}

export async function tokens({ bundle, sentences }) {
  const { WordPieceTokenizer } = await import(`./${bundle}/tokenizer.js`);
  const manifest = await (await fetch(`./${bundle}/manifest.json`)).json();
  const tokenizer = WordPieceTokenizer.fromTokenizerJson(await (await fetch(`./${bundle}/tokenizer.json`)).json(),
    manifest.model.tokenizer.max_length);
  const x = tokenizer.batch(sentences);
  return { ids: Array.from(x.ids), mask: Array.from(x.mask), batch: x.batch, seq: x.seq };
}

export async function runOrt({ model, ids, mask, batch, seq, warmup, repeats }) {
  const ort = await import('./ort/ort.webgpu.min.mjs');
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(new URL(model, location.href).href, { executionProviders: ['webgpu'] });
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
    hidden = await result.last_hidden_state.getData();
    times.push(performance.now() - t);
  }
  const width = hidden.length / (batch * seq);
  const embeddings = [];
  for (let b = 0; b < batch; b++) {
    const v = new Float64Array(width);
    for (let s = 0; s < seq; s++) {
      if (!(mask[b * seq + s] > 0.5)) continue;
      for (let i = 0; i < width; i++) v[i] += hidden[(b * seq + s) * width + i];
    }
    const norm = Math.hypot(...v);
    embeddings.push(Array.from(v, (e) => e / norm));
  }
  await session.release();
  return { first_ms: times[0], median_ms: median(times.slice(warmup)), times, init_ms: initMs, embeddings,
    adapter: await adapterInfo() };
}
"""

CONFIGURATIONS = [
    ("ort fp32", "runOrt", {"model": "models/minilm-fp32.onnx"}),
    ("ours fp32", "runOurs", {"bundle": "bundle-fp32"}),
    ("ort int4", "runOrt", {"model": "models/minilm-int4.onnx"}),
    ("ours int4", "runOurs", {"bundle": "bundle-int4"}),
]


# --gpu-variants: also this runtime forced onto the browser's GPU profile (what ran on these adapters
# before the cpu profile existed), so before and after come from one run
GPU_PROFILE = {"chromium": "chrome", "firefox": "firefox"}
GPU_CONFIGURATIONS = [("ours-gpu fp32", "runOurs", {"bundle": "bundle-fp32"}), ("ours-gpu int4", "runOurs", {"bundle": "bundle-int4"})]
# --before REV: also this runtime's bundles as commit REV builds them (its shaders and runtime), so a
# change's before and after come from one run on the same machine state
BEFORE_CONFIGURATIONS = [("before fp32", "runOurs", {"bundle": "bundle-fp32-before"}),
                         ("before int4", "runOurs", {"bundle": "bundle-int4-before"})]
BUNDLE_OPTIONS = {"fp32": ["--format", "float32"], "int4": ["--format", "int4", "--group-size", "32"]}


def build_before(work: Path, site: Path, rev: str) -> None:
    """The fp32 and int4 bundles built by commit `rev`'s own code (git archive into work/before-REV)."""
    import io
    import subprocess
    import tarfile

    tree = work / f"before-{rev}"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree)
    for name, options in BUNDLE_OPTIONS.items():
        subprocess.run([sys.executable, "-m", "ulpq_build", "bundle", *options, "--out", str(site / f"bundle-{name}-before")],
                       cwd=tree, check=True, env={**os.environ, "PYTHONPATH": str(tree)})


def build_site(work: Path, before: str | None = None) -> Path:
    site = work / "gpu-site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    dist = ensure_ort(work)
    (site / "ort").mkdir()
    for f in dist.iterdir():
        if f.name == "ort.webgpu.min.mjs" or f.name.startswith("ort-wasm-simd-threaded.") and f.suffix in (".mjs", ".wasm"):
            os.link(f, site / "ort" / f.name)
    (site / "models").mkdir()
    for path in export_onnx(work).values():
        os.link(path, site / "models" / path.name)
    for name, options in BUNDLE_OPTIONS.items():
        assert cli_main(["bundle", *options, "--out", str(site / f"bundle-{name}")]) == 0
    if before:
        build_before(work, site, before)
    (site / "index.html").write_text(PAGE)
    (site / "bench.js").write_text(BENCH_JS)
    return site


def bench_browser(browser: str, url: str, warmup: int, repeats: int, rounds: int, gpu_variants: bool = False,
                  before: bool = False) -> dict:
    results: dict[str, dict] = {}
    with started(browser) as (session, failure):
        if session is None:
            raise SystemExit(f"{browser}: {failure}")
        session.goto(url)
        ua = session.evaluate("() => navigator.userAgent")
        x = session.evaluate("async (s) => (await import('./bench.js')).tokens({bundle: 'bundle-fp32', sentences: s})",
                             SENTENCES, timeout_s=600)
        for round_ in range(rounds):
            extra = [(label, fn, {**args, "profile": GPU_PROFILE[browser]}) for label, fn, args in GPU_CONFIGURATIONS]
            for label, fn, args in CONFIGURATIONS + (extra if gpu_variants else []) + (BEFORE_CONFIGURATIONS if before else []):
                session.goto(url)  # a fresh page, a fresh device
                arg = {**args, **x, "sentences": SENTENCES, "warmup": warmup, "repeats": repeats}
                r = session.evaluate(f"async (a) => (await import('./bench.js')).{fn}(a)", arg, timeout_s=1800)
                if fn == "runOurs" and r["path"] != "webgpu":
                    raise SystemExit(f"{browser} {label}: ran on {r['path']}, not WebGPU")
                timed = r["times"][warmup:]
                entry = results.setdefault(label, {**r, "timed": [], "round_medians": []})
                entry["timed"] += timed
                entry["round_medians"].append(r["median_ms"])
                print(f"{browser:9s} round {round_} {label:10s} first {r['first_ms']:9.1f} ms  median {r['median_ms']:9.1f} ms  "
                      f"init {r['init_ms']:8.1f} ms  {r.get('adapter')}", flush=True)
    for r in results.values():
        r["median_ms"] = statistics.median(r.pop("timed"))
        r.pop("times", None)
    ref = results["ort fp32"]["embeddings"]
    for r in results.values():
        r["cos_min"] = float(cosines(r["embeddings"], ref).min())
    for r in results.values():
        r.pop("embeddings")
    return {"user_agent": ua, "label": browser_label(browser, ua), "batch": x["batch"], "seq": x["seq"], "runs": results}


def table(report: dict) -> str:
    lines = [f"Measured {report['date']} on {report['machine']} (load average {report['load_before']:.1f} when it started, "
             f"{report['load_after']:.1f} at the end); all-MiniLM-L6-v2, {report['batch']} sentences x {report['seq']} tokens; "
             f"per configuration {report['rounds']} interleaved page loads, each {report['warmup']} warm-up runs then "
             f"{report['repeats']} timed runs; the median of all timed runs (the first run and the initialisation in "
             f"brackets). ORT is ONNX Runtime Web 1.30.0 with its WebGPU EP. cos = lowest cosine over the 8 sentences to "
             f"ORT float32.", "",
             "| browser (adapter) | runtime | float32 ms (first / init) | 4-bit ms (first / init) | cos fp32 / 4-bit | ours / ORT |",
             "|---|---|---|---|---|---|"]
    for browser, b in report["browsers"].items():
        runs = b["runs"]
        adapter = runs["ours fp32"].get("adapter") or "?"
        for runtime in ("ort", "ours", "before", "ours-gpu"):
            if f"{runtime} fp32" not in runs:
                continue
            fp, q = runs[f"{runtime} fp32"], runs[f"{runtime} int4"]
            cell = lambda r: f"{r['median_ms']:.0f} ({r['first_ms']:.0f} / {r['init_ms']:.0f})"  # noqa: E731
            ratio = "" if runtime == "ort" else " / ".join(
                f"{runs[f'{runtime} {f}']['median_ms'] / runs[f'ort {f}']['median_ms']:.2f}x" for f in ("fp32", "int4"))
            name = {"ort": "ORT Web WebGPU EP", "ours": f"this runtime, WebGPU ({runs['ours fp32'].get('variant')})",
                    "before": f"this runtime as commit {report.get('before')} built it ({runs['before fp32'].get('variant') if 'before fp32' in runs else ''})",
                    "ours-gpu": f"this runtime, GPU variant forced ({runs['ours-gpu fp32'].get('variant') if 'ours-gpu fp32' in runs else ''})"}[runtime]
            lines.append(f"| {browser} ({adapter}) | {name} | {cell(fp)} | {cell(q)} | {fp['cos_min']:.5f} / {q['cos_min']:.5f} | {ratio} |")
    lines += ["", "Target (issue 10): on the software adapters, at most 0.5x ORT's WebGPU time, float32 and 4-bit:"]
    for browser, b in report["browsers"].items():
        runs = b["runs"]
        for fmt in ("fp32", "int4"):
            ratio = runs[f"ours {fmt}"]["median_ms"] / runs[f"ort {fmt}"]["median_ms"]
            lines.append(f"- {browser} {fmt}: {ratio:.2f}x ({'met' if ratio <= 0.5 else 'missed'})")
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    section = (f"{MARK_START}\n### Software adapters beside ONNX Runtime Web's WebGPU EP (scripts/bench_webgpu_peer.py)\n\n"
               f"{text}\n{MARK_END}")
    if MARK_START in doc and MARK_END in doc:
        doc = doc[: doc.index(MARK_START)] + section + doc[doc.index(MARK_END) + len(MARK_END):]
    else:
        anchor = "## Accuracy, size and speed per precision"
        doc = doc.replace(anchor, section + "\n\n" + anchor, 1) if anchor in doc else doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--browsers", default="chromium,firefox")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / ".bench")
    ap.add_argument("--write-docs", type=Path)
    ap.add_argument("--gpu-variants", action="store_true",
                    help="also time this runtime forced onto the browser's GPU profile (before/after in one run)")
    ap.add_argument("--before", metavar="REV",
                    help="also time the bundles commit REV builds (its shaders and runtime): before and after in one run")
    args = ap.parse_args(argv)
    bench = lambda *a: bench_browser(*a, gpu_variants=args.gpu_variants, before=bool(args.before))  # noqa: E731
    report = measure(build_site(args.work, args.before), bench, args, isolate=False)
    report["before"] = args.before
    (args.work / "webgpu_peer_results.json").write_text(json.dumps(report, indent=1))
    text = table(report)
    print(text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
