"""Decode speed of decoder bundles on the CPU path, before and after a runtime change, in one run.

Random Llama-shaped decoders (RMSNorm, rotary, SwiGLU, grouped-query attention, untied head) are
bundled at float32, int8, int4 and int2 (groups of 32), in two sizes:
  small  hidden 512, 4 layers, FFN 1408, vocab 4096: 16M parameters, 64 MB as float32 (fits the
         last-level cache of most machines, so a step is bound by arithmetic and call overhead);
  large  hidden 1024, 8 layers, FFN 2816, vocab 8192: 110M parameters, 440 MB as float32 (past the
         300 MB L3 of the 2-core CI/dev VM and any desktop's, so a step streams every weight from
         memory: there fewer bits should mean faster steps). Larger would not fit this machine's time.
Each bundle is run by two runtimes: `before` (the bundle's JS files replaced by those of git
revision --before-rev; same shards and kernels) and `after` (the working tree's), under Node
(wasm on 1 and 2 threads, and the plain-JS path on the small model) and in headless Chromium and
Firefox (wasm, one thread and, the page being cross-origin isolated, two), interleaved round by
round; the figures are the fastest and the median of the rounds' timed runs. With --before-kernels REV
`before` is instead this runtime with REV's wasm kernels built into the bundle (a kernel change measured
alone). A one-thread `after` profile says
where a step's time goes (products, other kernels, the rest).

    python scripts/bench_cpu_decode.py [--sizes small,large] [--engines node,chromium,firefox]
        [--rounds 2] [--tokens 16] [--before-rev b89dcff | --before-kernels REV] [--work .bench/decode]
        [--write-docs docs/benchmarks.md]
    python scripts/bench_cpu_decode.py --from-results --write-docs docs/benchmarks.md   (re-render only)
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.cli import main as cli_main  # noqa: E402
from ulpq_build.serve import BundleServer  # noqa: E402

DRIVER = ROOT / "tests/js/bench_decoder_cpu.mjs"
SIZES = {
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=4096, max_position_embeddings=512),
    "large": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=8, vocab_size=8192, max_position_embeddings=512),
}
FORMATS = {"float32": ["--format", "float32"], "int8": ["--format", "int8"],
           "int4": ["--format", "int4", "--group-size", "32"], "int2": ["--format", "int2", "--group-size", "32"]}
PROMPT = [5, 17, 42, 99, 7, 3, 250, 12]  # 8 prompt ids (within the 300-id tokenizer)
MARK_START, MARK_END = "<!-- bench_cpu_decode:start -->", "<!-- bench_cpu_decode:end -->"
PAGE = "<!doctype html><meta charset=utf-8><title>decode bench</title><p>decode bench</p>\n"


def build_model(folder: Path, size: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from test_decoders import _train_tokenizer

    if (folder / "model.safetensors").exists():
        return folder
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**SIZES[size], tie_word_embeddings=False)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.05 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    _train_tokenizer(folder / "tokenizer.json", 300)
    return folder


def write_kernels(folder: Path, module) -> None:
    """Rebuild a bundle's wasm kernel files with `module` (this checkout's wasm_kernels, or another
    revision's loaded by bench_cpu_gemm.load_kernels_module) and point its manifest at them."""
    from ulpq_build import wasm_kernels as wk

    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    by_key = {v.key: v for v in wk.all_variants()}
    variants = [module.WasmVariant(by_key[key].format, by_key[key].scale_dtype, by_key[key].zeros) for key in manifest["wasm"]["variants"]]
    for kind, (name, shared, relaxed) in module.FILES.items():
        data = module.build(variants, shared=shared, relaxed=relaxed)
        (folder / name).unlink(missing_ok=True)  # never write through a hard link into the other bundle
        (folder / name).write_bytes(data)
        manifest["wasm"]["files"][kind] = {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.unlink()
    manifest_path.write_text(json.dumps(manifest))


def build_site(work: Path, sizes, before_rev: str, before_kernels: str | None = None) -> dict:
    """{(size, fmt, runtime): bundle folder} under work/site; `before` bundles share the shards.
    With `before_kernels`, `before` is this runtime with that revision's wasm kernels (else: the
    runtime of `before_rev`, this checkout's kernels)."""
    from bench_cpu_gemm import load_kernels_module

    from ulpq_build import wasm_kernels as wk_now

    site = work / "site"
    bundles = {}
    wk_before = load_kernels_module(before_kernels, work / "kernels-before") if before_kernels else None
    for size in sizes:
        model = build_model(work / "models" / size, size)
        for fmt, options in FORMATS.items():
            after = site / f"{size}-{fmt}-after"
            if not (after / "manifest.json").exists():
                shutil.rmtree(after, ignore_errors=True)
                print(f"bundling {size} {fmt}", flush=True)
                assert cli_main(["bundle", "--model", str(model), "--out", str(after), *options]) == 0
            # the runtime and the kernels are refreshed from the working tree on every run
            # (every module: a bundle built before a module was added still gets it)
            for js in (ROOT / "web_runtime").glob("*.js"):
                shutil.copyfile(js, after / js.name)
            write_kernels(after, wk_now)
            before = site / f"{size}-{fmt}-before"
            shutil.rmtree(before, ignore_errors=True)
            before.mkdir(parents=True)
            for f in after.iterdir():
                old = subprocess.run(["git", "show", f"{before_rev}:web_runtime/{f.name}"], cwd=ROOT, capture_output=True)
                if f.suffix == ".js" and old.returncode == 0 and not before_kernels:
                    (before / f.name).write_bytes(old.stdout)
                elif f.is_file():
                    os.link(f, before / f.name)
            if before_kernels:
                write_kernels(before, wk_before)
            bundles[size, fmt, "after"], bundles[size, fmt, "before"] = after, before
    shutil.copyfile(DRIVER, site / DRIVER.name)
    (site / "index.html").write_text(PAGE)
    return bundles


def configurations(engine: str, size: str):
    """(label, load options, tokens scale) per engine: wasm 1 and 2 threads; plain JS on the small model (Node)."""
    out = [("wasm t1", {"hardware": "cpu", "cpu": "wasm", "threads": 1}), ("wasm t2", {"hardware": "cpu", "cpu": "wasm", "threads": 2})]
    if engine == "node" and size == "small":
        out.append(("js", {"hardware": "cpu", "cpu": "js"}))
    return out


def run_node(runs: list[dict]) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"runs": runs}, f)
    try:
        p = subprocess.run(["node", str(DRIVER), f.name], capture_output=True, text=True, timeout=1800)
    finally:
        os.unlink(f.name)
    if p.returncode != 0:
        raise SystemExit(f"node driver failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def engine_label(engine: str, session) -> str:
    import re

    if engine == "node":
        return f"Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}"
    ua = session.evaluate("() => navigator.userAgent")
    m = re.search(r"(?:Chrome|Firefox)/([\d]+)", ua)
    return f"{engine} {m.group(1)}" if m else engine


def measure(args, bundles, site: Path) -> dict:
    results: dict = {}
    labels = {}

    def record(engine, size, fmt, runtime, label, r):
        if "error" in r:
            print(f"  {engine} {size} {fmt} {runtime} {label}: ERROR {r['error']}", flush=True)
            return
        key = f"{engine}|{size}|{fmt}|{runtime}|{label}"
        e = results.setdefault(key, {"prefill_ms": [], "tokens_per_second": [], "threads": r["threads"], "kind": r["kind"],
                                     "tokens": r["tokens"], "profile": None, "decode_steps": r["decode_steps"]})
        e["prefill_ms"] += r["prefill_ms"]
        e["tokens_per_second"] += r["tokens_per_second"]
        e["profile"] = r["profile"] or e["profile"]
        e["same_tokens_as_first"] = e["tokens"] == r["tokens"]
        print(f"  {engine:8s} {size:5s} {fmt:7s} {runtime:6s} {label:7s} prefill {statistics.median(r['prefill_ms']):8.1f} ms  "
              f"decode {statistics.median(r['tokens_per_second']):7.1f} tok/s  threads {r['threads']} "
              f"{'profile ' + json.dumps({k: round(v, 2) for k, v in r['profile'].items()}) if r['profile'] else ''}", flush=True)

    def one(engine, session, size, fmt, runtime, label, load, round_):
        slow = load.get("cpu") == "js"
        run = {"load": load, "promptIds": PROMPT, "maxNewTokens": 6 if slow else args.tokens, "warmup": 0 if slow else 1,
               "repeats": 1 if slow else args.repeats, "profile": round_ == 0 and runtime == "after" and label == "wasm t1"}
        folder = bundles[size, fmt, runtime]
        if engine == "node":
            return run_node([{**run, "bundle": str(folder)}])[0]
        session.goto(args.url + "index.html")
        run["bundle"] = f"{args.url}{folder.name}/manifest.json"
        return session.evaluate(
            "async (r) => { const { loadBundle } = await import(r.bundle.replace('manifest.json', 'ulpq.js'));"
            " try { return await (await import('./bench_decoder_cpu.mjs')).benchDecode(loadBundle, r); }"
            " catch (e) { return { error: { name: e.name, message: String(e.message) } }; } }", run, timeout_s=1800)

    for engine in args.engines.split(","):
        ctx = started(engine) if engine != "node" else None
        session = None
        if ctx:
            session, failure = ctx.__enter__()
            if session is None:
                raise SystemExit(f"{engine}: {failure}")
            session.goto(args.url + "index.html")
        try:
            labels[engine] = engine_label(engine, session)
            for round_ in range(args.rounds):
                print(f"{engine} round {round_}", flush=True)
                for size in args.sizes.split(","):
                    for fmt in FORMATS:
                        for label, load in configurations(engine, size):
                            if load.get("cpu") == "js" and round_ > 0:
                                continue
                            for runtime in ("before", "after"):
                                record(engine, size, fmt, runtime, label, one(engine, session, size, fmt, runtime, label, load, round_))
        finally:
            if ctx:
                ctx.__exit__(None, None, None)
    return {"results": results, "engines": labels}


def table(report: dict) -> str:
    res = report["results"]
    if report.get("before_kernels"):
        compared = (f"`before` is this runtime with the wasm kernels of {report['before_kernels']}, `after` with this "
                    f"checkout's kernels (same runtime, same shards)")
    else:
        compared = (f"`before` is the runtime of {report['before_rev']} (a pass = one backend call per product, activations "
                    f"copied in and out, norms/rotary/attention in JS outside the backend), `after` this one (a pass = one "
                    f"recorded program in the wasm memory)")
    lines = [f"Measured {report['date']} on {report['machine']} (load average {report['load_before']:.1f} at the start, "
             f"{report['load_after']:.1f} at the end: other jobs shared the 2 cores). Random Llama-shaped decoders "
             f"(small: hidden 512, 4 layers, 16M parameters, 64 MB float32; large: hidden 1024, 8 layers, 110M parameters, "
             f"440 MB float32, past the 300 MB L3), int4/int2 in groups of 32; prompt {len(PROMPT)} tokens, "
             f"{report['tokens']} new tokens greedy; " + compared + "; both on the same bundles, interleaved over "
             f"{report['rounds']} rounds ({report['repeats']} timed runs each after a warm-up). Decode tokens/s: "
             f"**the fastest timed run** / the median (on a shared machine the fastest run is the one least disturbed; "
             f"medians drift with the other jobs' load), and in brackets the fastest prefill in ms. Engines: " + ", ".join(report["engines"].values()) + ".", "",
             "| engine | size | path | runtime | float32 | int8 | int4 | int2 |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({tuple(k.split("|")[i] for i in (0, 1, 4)) for k in res}, key=lambda t: (t[0], t[1] != "small", t[2]))
    for engine, size, label in keys:
        for runtime in ("before", "after"):
            cells = []
            for fmt in FORMATS:
                e = res.get(f"{engine}|{size}|{fmt}|{runtime}|{label}")
                cells.append(f"**{max(e['tokens_per_second']):.1f}** / {statistics.median(e['tokens_per_second']):.1f} "
                             f"({min(e['prefill_ms']):.0f})" if e else "-")
            lines.append(f"| {report['engines'].get(engine, engine)} | {size} | {label} | {runtime} | " + " | ".join(cells) + " |")
    prof = [(k, v["profile"]) for k, v in res.items() if v.get("profile")]
    if prof:
        lines += ["", "Where an `after` decode step's time goes (one thread, ms per step: products / other kernels "
                  "(norms, rotary, cache, attention, SwiGLU, embedding) / the rest (JS outside kernels, copies, scheduling)):", "",
                  "| engine | size | format | step | products | other kernels | rest |", "|---|---|---|---|---|---|---|"]
        for k, p in sorted(prof):
            engine, size, fmt, _, _ = k.split("|")
            lines.append(f"| {report['engines'].get(engine, engine)} | {size} | {fmt} | {p['step_ms']:.2f} | {p['products_ms']:.2f} | "
                         f"{p['other_kernels_ms']:.2f} | {p['rest_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    intro = ("Decoder generation on the CPU path (`generate()` without WebGPU). Since d7871a8 a decoder pass on the "
             "wasm backend (prefill, or one decode step) is recorded whole and run as one program over the wasm memory "
             "(`decoder_cpu.js` wasmDecoderSession): the KV cache lives in that memory for the whole generation, RMSNorm, "
             "rotary, the cache writes, attention and the SwiGLU product run as JS kernels over views of it "
             "(`decoder_wasm_ops.js`, beside the GEMV/GEMM kernels, on every worker thread), one worker wake-up per pass, "
             "and only the last row's logits come back. The plain-JS path multiplies a decode step's single row by the "
             "packed words as they lie (`ops_cpu.js` rowDot: no decoded copy of a row, bit-identical sums). "
             "Reproduce with `python scripts/bench_cpu_decode.py --write-docs docs/benchmarks.md`.\n\n"
             "What the figures say (this run was taken with the machine's load average at 3-10 on its 2 cores, so "
             "single figures move 2-3x between rounds; read the profile and the plain-JS rows, which are robust): "
             "(1) the products are the step: 70-95% of an `after` step is GEMV kernel time, the other kernels 3-17%, "
             "everything else (JS, copies, scheduling) 2-17%; removing the per-product calls and copies therefore gains "
             "little on this machine: in Node and Chromium the wasm `before`/`after` rows are within the noise of each "
             "other; Firefox (one round, run last) has `after` ahead on two threads (small model 1.2-1.8x). "
             "(2) Whether fewer bits are faster on wasm is the packed GEMV kernel's (`$gemv_<format>` and the "
             "one-row kernel in templates/wasm/kernels.wat.jinja): compare the profile rows' products per format. "
             "(3) The plain-JS path (engines without wasm SIMD) is 2-4x faster on packed formats "
             "(int2 2.2 -> 9.0 tokens/s on the small model) and unchanged on float32.")
    section = f"{MARK_START}\n## Decoder decode speed on the CPU path (scripts/bench_cpu_decode.py)\n\n{intro}\n\n{text}\n{MARK_END}"
    if MARK_START in doc and MARK_END in doc:
        doc = doc[: doc.index(MARK_START)] + section + doc[doc.index(MARK_END) + len(MARK_END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="small,large")
    ap.add_argument("--engines", default="node,chromium,firefox")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (before and after alternate within each)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--before-rev", default="b89dcff")
    ap.add_argument("--before-kernels", metavar="REV", help="`before` = this runtime with REV's wasm kernels (not REV's runtime)")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench/decode")
    ap.add_argument("--write-docs", type=Path)
    ap.add_argument("--from-results", action="store_true")
    ap.add_argument("--merge", action="store_true", help="add this run's engines to the stored results (e.g. one more browser)")
    args = ap.parse_args(argv)
    out = args.work / "cpu_decode_results.json"
    if args.from_results:
        report = json.loads(out.read_text())
    else:
        bundles = build_site(args.work, args.sizes.split(","), args.before_rev, args.before_kernels)
        server = BundleServer(args.work / "site", 0, isolate=True).start_in_background()
        args.url = server.url
        report = {"date": datetime.date.today().isoformat(), "rounds": args.rounds, "repeats": args.repeats, "tokens": args.tokens,
                  "before_rev": args.before_rev, "before_kernels": args.before_kernels, "load_before": os.getloadavg()[0],
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'x86'}), {platform.platform()}"}
        try:
            report.update(measure(args, bundles, args.work / "site"))
        finally:
            server.shutdown()
            server.server_close()
        report["load_after"] = os.getloadavg()[0]
        if args.merge and out.exists():
            stored = json.loads(out.read_text())
            stored["results"].update(report["results"])
            stored["engines"].update(report["engines"])
            stored["load_after"] = max(stored["load_after"], report["load_after"])
            report = stored
        out.write_text(json.dumps(report, indent=1))
    text = table(report)
    print(text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
