"""What the CPU path keeps in Chromium's JS heap, stage by stage, beside the wasm memory: the same
measurement as scripts/bench_cpu_peer.py's memory line (usedJSHeapSize after forced garbage
collections, Chromium started with --js-flags=--expose-gc --enable-precise-memory-info), taken after
each step of a page's load: the runtime's modules, the tokenizer, the manifest, the backend with its
weights moved into wasm memory and three runs of all-MiniLM-L6-v2 (8 sentences), then with the
tensor table, the manifest (all but manifest.model) and the tokenizer dropped again.

`--before REV` also measures each bundle with REV's tokenizer.js in place of this checkout's (the
tokenizer is the largest thing the heap keeps), in the same browser, interleaved.

    python scripts/bench_cpu_heap.py [--formats float32,int4] [--threads 1,2] [--rounds 2] [--before REV]

Prints one line per page load: MiB at each stage, and the wasm memory's parts.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu_peer import SENTENCES  # the peer benchmark's 8 sentences (8 x 18 tokens)

from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.cli import main as cli_main  # noqa: E402
from ulpq_build.serve import BundleServer  # noqa: E402

PROBE_JS = r"""
const heap = async () => {
  for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 20)); }
  return performance.memory.usedJSHeapSize;
};
// fetched in a function of its own: a suspended async frame keeps its dead locals alive
async function fetchShards(manifest, base) {
  const shards = new Map();
  for (const s of manifest.shards) shards.set(s.file, new Uint8Array(await (await fetch(new URL(s.file, base))).arrayBuffer()));
  return shards;
}
export async function probe({ bundle, threads, sentences }) {
  if (typeof globalThis.gc !== 'function' || !performance.memory) throw new Error('start Chromium with --js-flags=--expose-gc');
  const at = { page: await heap() };
  const base = new URL(`./${bundle}/`, location.href);
  const load = (name) => import(new URL(name, base).href);
  const { tensorTable } = await load('bundle_loader.js');
  const { createCpuBackend } = await load('cpu_select.js');
  const { GRAPHS } = await load('graphs.js');
  const { WordPieceTokenizer } = await load('tokenizer.js');
  at.modules = await heap();
  let tokenizer = WordPieceTokenizer.fromTokenizerJson(await (await fetch(new URL('tokenizer.json', base))).json(), 256);
  at.tokenizer = await heap();
  let manifest = await (await fetch(new URL('manifest.json', base))).json();
  at.manifest = await heap();
  let shards = await fetchShards(manifest, base);
  let tensors = tensorTable(manifest, shards);
  const { backend } = await createCpuBackend(manifest, tensors, { cpu: 'wasm', threads });
  shards.clear();
  shards = null;
  const x = tokenizer.batch(sentences);
  const model = manifest.model;
  for (let i = 0; i < 3; i++) await GRAPHS.bert(backend, model, x);
  at.runs = await heap();
  tensors = null;
  manifest = null;
  at.no_tables = await heap();
  tokenizer = null;
  at.no_tokenizer = await heap();
  const wasm = backend.memoryBytes;
  const threadsUsed = backend.threads;
  backend.destroy?.();
  return { at, wasm, threads: threadsUsed };
}
"""

STAGES = ["page", "modules", "tokenizer", "manifest", "runs", "no_tables", "no_tokenizer"]


def build_site(work: Path, formats: list[str], before: str | None) -> list[str]:
    site = work / "site"
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    names = []
    for fmt in formats:
        options = ["--format", fmt] + (["--group-size", "32"] if fmt != "float32" else [])
        assert cli_main(["bundle", *options, "--out", str(site / f"bundle-{fmt}")]) == 0
        names.append(f"bundle-{fmt}")
        if before:
            old = site / f"bundle-{fmt}-before"
            shutil.copytree(site / f"bundle-{fmt}", old, copy_function=os.link)
            (old / "tokenizer.js").unlink()
            (old / "tokenizer.js").write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{before}:web_runtime/tokenizer.js"],
                                                             check=True, capture_output=True, text=True).stdout)
            names.append(old.name)
    (site / "index.html").write_text("<!doctype html><meta charset=utf-8><title>heap</title>\n")
    (site / "probe.js").write_text(PROBE_JS)
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="float32,int4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before", help="a git revision whose tokenizer.js to measure beside this checkout's")
    ap.add_argument("--work", type=Path, default=None, help="folder for the bundles (default: a temporary one)")
    args = ap.parse_args(argv)
    os.environ.setdefault("ULPQ_CHROMIUM_FLAGS", "--js-flags=--expose-gc --enable-precise-memory-info")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        bundles = build_site(work, args.formats.split(","), args.before)
        server = BundleServer(work / "site", 0, isolate=True).start_in_background()
        rows: dict[tuple[str, int], list[dict]] = {}
        try:
            for _ in range(args.rounds):
                for bundle in bundles:
                    for threads in map(int, args.threads.split(",")):
                        # a fresh browser per measurement: a page loaded after another in the same
                        # renderer starts with some of the earlier page's heap still counted
                        with started("chromium") as (session, failure):
                            if session is None:
                                raise SystemExit(f"chromium: {failure}")
                            session.goto(server.url + "index.html")
                            r = session.evaluate("async (a) => (await import('./probe.js')).probe(a)",
                                                 {"bundle": bundle, "threads": threads, "sentences": SENTENCES}, timeout_s=600)
                        rows.setdefault((bundle, r["threads"]), []).append(r)
                        print(f"{bundle:22s} t{r['threads']} " + " ".join(f"{s} {r['at'][s] / 2**20:.2f}" for s in STAGES), flush=True)
        finally:
            server.shutdown()
            server.server_close()
    mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
    print("\nMiB, medians over page loads; `+x` is what a step added to the JS heap after GC")
    print("| bundle | threads | page | +modules | +tokenizer | +manifest | +backend, 3 runs | heap at the end | without tensor table, manifest | without tokenizer | wasm memory (weights + activations + scratch) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (bundle, threads), rs in rows.items():
        med = {s: statistics.median(r["at"][s] for r in rs) for s in STAGES}
        step = {s: statistics.median(r["at"][s] - r["at"][p] for r in rs) for p, s in itertools.pairwise(STAGES)}
        w = rs[-1]["wasm"]
        print(f"| {bundle} | {threads} | {mib(med['page'])} | +{mib(step['modules'])} | +{mib(step['tokenizer'])} | "
              f"+{mib(step['manifest'])} | +{mib(step['runs'])} | {mib(med['runs'])} | {mib(med['no_tables'])} | "
              f"{mib(med['no_tokenizer'])} | {mib(w['total'])} ({mib(w['weights'])} + {mib(w['activations'])} + {mib(w['scratch'])}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
