"""The CPU path's GEMM kernel alone, in the browsers, against the kernel of another revision.

Renders the wasm kernels of this checkout and of `--before REV` (its template and wasm_kernels.py,
read with `git show`), loads both into one page per browser, and times gemm_<format> at
all-MiniLM-L6-v2's shapes (8 sentences x 18 tokens = 144 rows; 8 rows; 1 row) on seeded random
inputs and weights quantized by this checkout's quantizer (float32; int8, int4 and int2 in groups of
32; the codebook formats e8p and e8p-rvq3, whose time includes the rotation of x by hadamard_rows, as
the runtime runs it before their product). Every configuration runs interleaved for `--rounds` rounds; a figure is the median of its timed
batches and, in brackets, the fastest (on a shared machine the fastest run is the one least
disturbed; medians drift with the load). `node` runs the same page code under Node. Each kernel's output is first checked against numpy (relative error < 2e-5), so a fast wrong
kernel cannot score. Relaxed-SIMD builds where the engine validates them (as the runtime loads).

    python scripts/bench_cpu_gemm.py [--before REV] [--browsers node,chromium,firefox,webkit] [--rounds 5]
        [--formats int2,e8p] [--shapes 1x2048x8192,1x8192x2048]

A second table gives the one-row shapes' time per weight (ns) and each format's time over int2's
(issue 15's target for the codebook formats: at most 1.5x).

    python scripts/bench_cpu_gemm.py --minilm int2,e8p [--browsers node,chromium] [--rounds 5] [--work .bench/cpu-gemm]

times whole all-MiniLM-L6-v2 bundles instead (int2 in groups of 32, the codebook formats as their
rows say) on the wasm CPU path, one thread, 8 sentences (scripts/bench_cpu_peer.py's page code and
sentences), interleaved rounds, each a fresh page (a fresh Node process) with 3 warm-up runs and 10
timed ones; every output is checked against numpy over the bundle's own weights (cosine >= 0.9999).

    python scripts/bench_cpu_gemm.py --minilm float32,int4 --ops [--threads 1,2] [--browsers chromium,firefox] [--rounds 30]

loads the bundles into ONE page (one Node process) instead, 3 warm-up runs each, then runs them
alternately for `--rounds` rounds: per round and bundle one plain run (its wall time, and the CPU
time the engine's processes spent meanwhile: Linux per-thread run times, or Node's cpuUsage; on a
machine shared with other jobs the CPU time does not count the time they held the cores) and, on
one thread, one run with the backend's per-operator timing (backend.profile: each recorded kernel
call timed alone, products by shape). Prints per operator the median per run and, in brackets, the
fastest run, and the whole runs' times with the median of the paired ratios (each run over the
first bundle's run of the same round: load that drifts between rounds cancels); every run's
times go to WORK/ops-<engine>-<threads>.json. Outputs checked as above.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # bench_cpu_peer: the MiniLM page code and sentences

from ulpq_build import wasm_kernels as wk  # noqa: E402
from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.quantize import dequantize, quantize  # noqa: E402
from ulpq_build.quantspec import QuantSpec  # noqa: E402
from ulpq_build.reference import bert_forward, cosine
from ulpq_build.serve import BundleServer  # noqa: E402

# MiniLM's GEMMs at 8 sentences x 18 tokens, at 8 tokens and at one row (a GEMV); then a decoder-sized
# GEMV whose float32 weights (64 MiB) do not fit a CPU cache, as a 1B-parameter model's do not
SHAPES = [(144, 384, 1536), (144, 1536, 384), (144, 384, 384), (8, 384, 1536), (8, 1536, 384), (1, 384, 1536),
          (1, 2048, 8192), (1, 8192, 2048)]
FORMATS = {"float32": QuantSpec("float32"), "int8": QuantSpec("int8", group_size=32), "int4": QuantSpec("int4", group_size=32),
           "int2": QuantSpec("int2", group_size=32), "e8p": QuantSpec("e8p"), "e8p-rvq3": QuantSpec("e8p-rvq3")}
TOLERANCE = 2e-5

PAGE_JS = r"""
export async function bench({ kernels, cases, rounds, base }) {
  const get = async (f) => new Uint8Array(await (await fetch(base ? new URL(f, base).href : f)).arrayBuffer());
  const relaxedOk = WebAssembly.validate(await get(kernels[0].relaxed));
  const mods = [];
  for (const k of kernels) {
    const memory = new WebAssembly.Memory({ initial: 4096 }); // 256 MiB: the largest case's arrays
    const bytes = await get(relaxedOk ? k.relaxed : k.plain);
    const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
    mods.push({ name: k.name, ex: instance.exports, memory });
  }
  const data = {};
  for (const c of cases) data[c.id] = { x: await get(c.x), parts: await Promise.all(c.parts.map(get)), want: await get(c.want) };
  const times = {}, error = {};
  for (let round = 0; round < rounds; round++) for (const m of mods) for (const c of cases) {
    const d = data[c.id];
    const u8 = new Uint8Array(m.memory.buffer);
    let top = 1024;
    const put = (bytes) => { const p = top; u8.set(bytes, p); top = (p + bytes.length + 8 + 63) & ~63; return p; };
    const x = put(d.x), ptrs = d.parts.map(put);
    const y = top; top += c.m * c.n * 4 + 64;
    const [codes, scales = 0, raw = 0] = ptrs;
    const L = c.layout;
    // codebook formats: the decode tables expanded from the codebook buffer, and x rotated (into xr)
    // before every product, as the runtime records it
    let book = 0, signs = 0, xr = x;
    if (c.codebook) {
      book = top; top += c.codebook.bytes + 64;
      m.ex.codebook_expand(raw, book);
      signs = top; top += c.k * 4 + 64;
      m.ex.rotation_signs(c.codebook.seed, c.k, signs);
      xr = top; top += c.m * c.k * 4 + 64;
    }
    const scratch = top;
    const product = () => m.ex[`gemm_${c.key}`](xr, c.m, c.k, y, c.n, 0, c.n, codes, scales, 0, book, L.words_per_row,
      L.groups_per_row, L.group_size, 0, 0, 0, 0, scratch);
    const call = c.codebook ? () => { m.ex.hadamard_rows(x, xr, c.k, signs, 0, c.m); product(); } : product;
    const key = `${m.name}|${c.id}`;
    if (round === 0) {
      new Float32Array(m.memory.buffer, y, c.m * c.n).fill(NaN);
      call();
      const got = new Float32Array(m.memory.buffer, y, c.m * c.n), want = new Float32Array(d.want.buffer);
      let num = 0, den = 0;
      for (let i = 0; i < got.length; i++) { num = Math.max(num, Math.abs(got[i] - want[i])); den = Math.max(den, Math.abs(want[i])); }
      error[key] = Number.isNaN(num) || got.some(Number.isNaN) ? Infinity : num / den;
    }
    const reps = Math.max(2, Math.round(4e6 / (c.m * c.k * c.n)));
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      for (let j = 0; j < reps; j++) call();
      (times[key] ??= []).push((performance.now() - t) / reps);
    }
  }
  const ua = globalThis.navigator?.userAgent ?? `Node ${globalThis.process?.version}`;
  return { times, error, relaxed: relaxedOk, ua };
}
"""


def load_kernels_module(rev: str, work: Path):
    """wasm_kernels.py and its template as of `rev`, importable from `work`."""
    (work / "templates" / "wasm").mkdir(parents=True, exist_ok=True)
    show = lambda path: subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,  # noqa: E731
                                       capture_output=True, text=True).stdout
    (work / "templates" / "wasm" / "kernels.wat.jinja").write_text(show("templates/wasm/kernels.wat.jinja"))
    (work / "wasm_kernels_before.py").write_text(show("ulpq_build/wasm_kernels.py"))
    spec = importlib.util.spec_from_file_location("wasm_kernels_before", work / "wasm_kernels_before.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    module.templates_dir = lambda: work / "templates"
    return module


def write_kernels(module, name: str, site: Path, formats) -> dict:
    variants = [module.variant_of(FORMATS[f]) for f in formats]
    out = {"name": name}
    for kind, relaxed in (("plain", False), ("relaxed", True)):
        path = site / f"{name}-{kind}.wasm"
        path.write_bytes(module.build(variants, shared=False, relaxed=relaxed))
        out[kind] = path.name
    return out


def write_cases(site: Path, shapes, formats) -> list[dict]:
    from ulpq_build.vq.tensor import codebook_tables

    rng = np.random.default_rng(11)
    cases = []
    for m, k, n in shapes:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        for fmt in formats:
            spec = FORMATS[fmt]
            qt = quantize("w", w, spec)
            dense = dequantize(qt).astype(np.float64)  # codebook formats: in the original basis (x is rotated)
            cid = f"{fmt}-{m}x{k}x{n}"
            parts = [np.ascontiguousarray(qt.parts["codes"])] + ([np.ascontiguousarray(qt.parts["scales"])] if "scales" in qt.parts else [])
            codebook = None
            if spec.fmt.levels == "codebook":
                parts.append(codebook_tables())
                codebook = {"bytes": wk.CODEBOOK_BYTES, "seed": int(qt.parts["seeds"][0])}
            names = []
            for i, part in enumerate(parts):
                (site / f"{cid}-{i}.bin").write_bytes(part.tobytes())
                names.append(f"{cid}-{i}.bin")
            (site / f"{cid}-x.bin").write_bytes(x.tobytes())
            (site / f"{cid}-want.bin").write_bytes((x.astype(np.float64) @ dense.T).astype(np.float32).tobytes())
            cases.append({"id": cid, "fmt": fmt, "m": m, "k": k, "n": n, "key": wk.variant_of(spec).key, "parts": names,
                          "x": f"{cid}-x.bin", "want": f"{cid}-want.bin", "layout": qt.matrix_layout(), "codebook": codebook})
    return cases


def run_in_node(site: Path, args: dict) -> dict:
    """The page's bench() under Node (fetching from the same server), as a browser's evaluate returns it."""
    driver = site / "node_driver.mjs"
    driver.write_text("import { bench } from './bench.js';\n"
                      "const args = JSON.parse(process.argv[2]);\n"
                      "console.log(JSON.stringify(await bench(args)));\n")
    (site / "package.json").write_text('{"type": "module"}')
    out = subprocess.run(["node", str(driver), json.dumps(args)], check=True, capture_output=True, text=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


MINILM_OPTIONS = {"int2": ["--format", "int2", "--group-size", "32"], "int4": ["--format", "int4", "--group-size", "32"]}
MINILM_COSINE = 0.9999


def bench_minilm(formats, browsers, rounds: int, work: Path) -> int:
    """Whole MiniLM bundles side by side on the wasm CPU path, one thread (module docstring)."""
    import bench_cpu_peer as peer

    from ulpq_build.cli import main as cli_main

    work.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        if not (work / f"minilm-{fmt}" / "manifest.json").is_file():
            assert cli_main(["bundle", *MINILM_OPTIONS.get(fmt, ["--format", fmt]), "--out", str(work / f"minilm-{fmt}")]) == 0
    (work / "index.html").write_text(peer.PAGE)
    (work / "bench.js").write_text(peer.BENCH_JS)
    (work / "package.json").write_text('{"type": "module"}')
    # Node imports modules from files, not http: the page code reads the folder through file: URLs
    (work / "node_driver.mjs").write_text(
        "import { readFile } from 'node:fs/promises';\n"
        "import { fileURLToPath, pathToFileURL } from 'node:url';\n"
        "globalThis.location = { href: pathToFileURL(process.argv[2] + '/').href };\n"
        "const web = globalThis.fetch;\n"
        "globalThis.fetch = async (u) => (String(u).startsWith('file:') ? new Response(await readFile(fileURLToPath(String(u)))) : web(u));\n"
        "const { runOurs } = await import('./bench.js');\n"
        "console.log(JSON.stringify(await runOurs(JSON.parse(process.argv[3]))));\n")
    server = BundleServer(work, 0, isolate=True).start_in_background()
    results: dict[str, dict[str, list]] = {}
    agents = {}
    try:
        for browser in browsers:
            runs = results.setdefault(browser, {})
            def args(fmt):
                return {"bundle": f"minilm-{fmt}", "cpu": "wasm", "threads": 1, "sentences": peer.SENTENCES,
                        "warmup": 3, "repeats": 10}
            if browser == "node":
                agents[browser] = f"Node {subprocess.run(['node', '--version'], capture_output=True, text=True, check=True).stdout.strip()}"
                for _ in range(rounds):
                    for fmt in formats:
                        out = subprocess.run(["node", str(work / "node_driver.mjs"), str(work), json.dumps(args(fmt))],
                                             check=True, capture_output=True, text=True, timeout=1800)
                        runs.setdefault(fmt, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
                continue
            with started(browser) as (session, failure):
                if session is None:
                    raise SystemExit(f"{browser}: {failure}")
                session.goto(server.url + "index.html")
                agents[browser] = session.evaluate("() => navigator.userAgent")
                for _ in range(rounds):
                    for fmt in formats:
                        session.goto(server.url + "index.html")
                        runs.setdefault(fmt, []).append(session.evaluate(
                            "async (a) => (await import('./bench.js')).runOurs(a)", args(fmt), timeout_s=1800))
    finally:
        server.shutdown()
    bad = []
    print(f"MiniLM, 8 sentences, wasm CPU path, one thread: ms per run, the median of each round's 10 timed runs "
          f"(median over {rounds} rounds; fastest round in brackets)")
    print("| engine | " + " | ".join(formats) + (" | e8p / int2 |" if {"e8p", "int2"} <= set(formats) else " |"))
    print("|---|" + "---|" * (len(formats) + ({"e8p", "int2"} <= set(formats))))
    for browser, runs in results.items():
        med = {}
        for fmt in formats:
            bad += [w for r in runs[fmt] if (w := check_minilm(browser, fmt, r, work, 1))]
            med[fmt] = [r["median_ms"] for r in runs[fmt]]
        cells = [f"{statistics.median(med[f]):.1f} ({min(med[f]):.1f})" for f in formats]
        if {"e8p", "int2"} <= set(formats):
            cells.append(f"{statistics.median(med['e8p']) / statistics.median(med['int2']):.2f}x "
                         f"({min(med['e8p']) / min(med['int2']):.2f}x)")
        print(f"| {browser} | " + " | ".join(cells) + " |")
    print(json.dumps({"user_agents": agents, "notes": {b: runs[formats[0]][0]["notes"] for b, runs in results.items()}}))
    if bad:
        print("WRONG OUTPUTS:\n" + "\n".join(bad))
        return 1
    return 0


OPS_JS = r"""
import { loadOurs } from './bench.js';
// The bundles of one page, loaded once, run one at a time on the driver's call (so it can read the
// CPU time the engine's processes spent around each run)
const state = { models: [], outs: [] };

async function load(bundle, threads, sentences) {
  const { backend, notes, x, shards, run } = await loadOurs({ bundle, cpu: 'wasm', threads, sentences });
  shards.clear(); // the wasm backend holds the weights
  return { backend, notes, x, run };
}

export async function prepare({ bundles, threads, sentences, warmup }) {
  state.models = [];
  for (const b of bundles) state.models.push(await load(b, threads, sentences));
  for (const m of state.models) for (let i = 0; i < warmup; i++) await m.run();
  return { ua: globalThis.navigator?.userAgent ?? `Node ${globalThis.process?.version}`,
    models: state.models.map((m) => ({ threads: m.backend.threads, kind: m.backend.kind, notes: m.notes })) };
}

/** One plain run of bundle i: its wall time (ms). */
export async function runOne(i) {
  const t = performance.now();
  state.outs[i] = await state.models[i].run();
  return performance.now() - t;
}

/** One run of bundle i with the backend's per-operator timing (one thread only; else null). */
export async function profileOne(i) {
  const { backend, run } = state.models[i];
  if (backend.threads !== 1) return null;
  backend.profile = new Map();
  await run();
  const ops = {};
  for (const [k, ms] of backend.profile) ops[k.replace(/^(gemm|embed)_\S+/, '$1')] = ms;
  backend.profile = null;
  return ops;
}

/** Each bundle's last output and its tokens (checked against numpy by the driver); backends closed. */
export function finish() {
  const out = state.models.map((m, i) => ({ batch: m.x.batch, ids: Array.from(m.x.ids), mask: Array.from(m.x.mask),
    embeddings: Array.from({ length: state.outs[i].rows }, (_, r) => Array.from(state.outs[i].data.subarray(
      r * state.outs[i].cols, (r + 1) * state.outs[i].cols))) }));
  for (const m of state.models) m.backend.destroy?.();
  state.models = [];
  return out;
}

/** The driver's loop in this process (Node): CPU time from process.cpuUsage (every thread of it). */
export async function profileOps({ rounds, ...args }) {
  const info = await prepare(args);
  const runs = info.models.map(() => ({ wall: [], cpu: [], ops: [] }));
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < runs.length; i++) {
      const c = process.cpuUsage();
      runs[i].wall.push(await runOne(i));
      const used = process.cpuUsage(c);
      runs[i].cpu.push((used.user + used.system) / 1000);
      const ops = await profileOne(i);
      if (ops) runs[i].ops.push(ops);
    }
  }
  return { ...info, runs, outputs: finish() };
}
"""


def engine_cpu_times() -> dict[tuple[int, int], int]:
    """CPU time (ns) spent so far by each thread of every process this one started (the browser, its
    renderer and workers; Playwright's driver), from the kernel's per-thread run time: unlike the
    wall time, it does not count the time other jobs held the cores."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    times, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                times[pid, int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue
    return times


def cpu_ms_since(before: dict[tuple[int, int], int]) -> float:
    """ms of CPU time the engine's threads spent since `before` (a thread that ended meanwhile is not
    counted, so a figure may be low, never negative)."""
    return sum(ns - before.get(key, 0) for key, ns in engine_cpu_times().items()) / 1e6


def check_minilm(browser: str, fmt: str, r: dict, work: Path, threads: int) -> str | None:
    """None when a run's embeddings match numpy over the bundle's own weights, else what is wrong."""
    if r["kind"] != "wasm-simd" or r["threads"] != threads:
        return f"{browser} {fmt}: ran {r['kind']} on {r['threads']} threads, not wasm-simd on {threads} ({r['notes']})"
    loaded = load_bundle(work / f"minilm-{fmt}")
    ids, mask = np.array(r["ids"]).reshape(r["batch"], -1), np.array(r["mask"]).reshape(r["batch"], -1)
    worst = cosine(np.array(r["embeddings"]), bert_forward(loaded.model, loaded.weights, ids, mask)).min()
    return None if worst >= MINILM_COSINE else f"{browser} {fmt}: cosine to numpy {worst:.6f}"


def bench_minilm_ops(formats, browsers, rounds: int, work: Path, threads_list) -> int:
    """Whole MiniLM bundles in one page, alternating, per operator (module docstring, --ops)."""
    import bench_cpu_peer as peer

    from ulpq_build.cli import main as cli_main

    work.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        if not (work / f"minilm-{fmt}" / "manifest.json").is_file():
            assert cli_main(["bundle", *MINILM_OPTIONS.get(fmt, ["--format", fmt]), "--out", str(work / f"minilm-{fmt}")]) == 0
    (work / "index.html").write_text(peer.PAGE)
    (work / "ops.js").write_text(OPS_JS)
    (work / "bench.js").write_text(peer.BENCH_JS)
    (work / "package.json").write_text('{"type": "module"}')
    (work / "node_ops.mjs").write_text(
        "import { readFile } from 'node:fs/promises';\n"
        "import { fileURLToPath, pathToFileURL } from 'node:url';\n"
        "globalThis.location = { href: pathToFileURL(process.argv[2] + '/').href };\n"
        "globalThis.fetch = async (u) => new Response(await readFile(fileURLToPath(String(u))));\n"
        "const { profileOps } = await import('./ops.js');\n"
        "console.log(JSON.stringify(await profileOps(JSON.parse(process.argv[3]))));\n")
    server = BundleServer(work, 0, isolate=True).start_in_background()
    bad = []
    try:
        for browser, threads in itertools.product(browsers, threads_list):
            args = {"bundles": [f"minilm-{f}" for f in formats], "threads": threads, "sentences": peer.SENTENCES, "warmup": 3}
            load_start = os.getloadavg()[0]
            if browser == "node":
                out = subprocess.run(["node", str(work / "node_ops.mjs"), str(work), json.dumps({**args, "rounds": rounds})],
                                     check=True, capture_output=True, text=True, timeout=3600)
                d = json.loads(out.stdout.strip().splitlines()[-1])
            else:
                with started(browser) as (session, failure):
                    if session is None:
                        raise SystemExit(f"{browser}: {failure}")
                    session.goto(server.url + "index.html")
                    d = session.evaluate("async (a) => (await import('./ops.js')).prepare(a)", args, timeout_s=1800)
                    d["runs"] = [{"wall": [], "cpu": [], "ops": []} for _ in formats]
                    for _ in range(rounds):
                        for i, run in enumerate(d["runs"]):
                            before = engine_cpu_times()
                            run["wall"].append(session.evaluate("async (i) => (await import('./ops.js')).runOne(i)", i))
                            run["cpu"].append(cpu_ms_since(before))
                            ops = session.evaluate("async (i) => (await import('./ops.js')).profileOne(i)", i)
                            if ops:
                                run["ops"].append(ops)
                    d["outputs"] = session.evaluate("async () => (await import('./ops.js')).finish()")
            load_end = os.getloadavg()[0]
            for fmt, info, out in zip(formats, d["models"], d["outputs"]):
                if (why := check_minilm(browser, fmt, {**info, **out}, work, threads)):
                    bad.append(why)
            # every run's times, for a closer look than medians
            (work / f"ops-{browser}-{threads}.json").write_text(json.dumps(
                {"ua": d["ua"], "load": [load_start, load_end], "formats": formats, "runs": d["runs"]}))
            print_ops(browser, threads, d, formats, rounds, (load_start, load_end))
    finally:
        server.shutdown()
    if bad:
        print("WRONG OUTPUTS:\n" + "\n".join(bad))
        return 1
    return 0


def print_ops(browser: str, threads: int, d: dict, formats, rounds: int, load) -> None:
    """--ops tables: per operator (one thread), then whole runs by wall and by CPU time with paired ratios."""
    runs = d["runs"]
    med, lo = statistics.median, min
    print(f"\n{browser}, {threads} thread(s), {d['ua']}; load average {load[0]:.1f} -> {load[1]:.1f}; "
          f"{rounds} alternating rounds. ms per run: median (fastest)")
    if all(r["ops"] for r in runs):
        per = [{k: [o[k] for o in r["ops"]] for k in r["ops"][0]} for r in runs]
        per = [{**p, "all operators": [sum(o.values()) for o in r["ops"]]} for p, r in zip(per, runs)]
        print("| operator | " + " | ".join(formats) + " | " + " | ".join(f"{f} / {formats[0]}" for f in formats[1:]) + " |")
        print("|---|" + "---|" * (2 * len(formats) - 1))
        for k in sorted(per[0], key=lambda k: (k == "all operators", -med(per[0][k]))):
            cells = [f"{med(p[k]):.2f} ({lo(p[k]):.2f})" for p in per]
            ratios = [f"{med(p[k]) / med(per[0][k]):.3f} ({lo(p[k]) / lo(per[0][k]):.3f})" for p in per[1:]]
            print(f"| {k} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    for what in ("wall", "cpu"):
        print(f"whole runs, {'wall time' if what == 'wall' else 'CPU time of the engine (every thread)'}:")
        for f, r in zip(formats, runs):
            line = f"  {f}: {med(r[what]):.1f} ({lo(r[what]):.1f})"
            if r is not runs[0]:
                ratio = sorted(a / b for a, b in zip(r[what], runs[0][what]))
                line += (f"; paired ratio to {formats[0]}: median {med(ratio):.3f}, quartiles {ratio[len(ratio) // 4]:.3f}-"
                         f"{ratio[3 * len(ratio) // 4]:.3f}, lower in {sum(x < 1 for x in ratio)} of {len(ratio)} rounds")
            print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="a git revision whose kernels to time beside this checkout's")
    ap.add_argument("--browsers", default="node,chromium,firefox,webkit", help="engines: node, chromium, firefox, webkit")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--formats", default=",".join(FORMATS), help="formats to time: " + ", ".join(FORMATS))
    ap.add_argument("--shapes", help="rows x k x n, comma-separated (default: MiniLM's and two decoder GEMVs)")
    ap.add_argument("--minilm", help="formats whose whole MiniLM bundles to time instead of kernels (e.g. int2,e8p)")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "cpu-gemm", help="where --minilm keeps its bundles")
    ap.add_argument("--ops", action="store_true", help="with --minilm: the bundles in one page, per operator (docstring)")
    ap.add_argument("--threads", default="1", help="with --minilm --ops: thread counts, comma-separated (per-operator times at 1)")
    args = ap.parse_args(argv)
    if args.ops:
        if not args.minilm:
            raise SystemExit("--ops: only with --minilm FORMATS (e.g. --minilm float32,int4 --ops)")
        return bench_minilm_ops(args.minilm.split(","), args.browsers.split(","), args.rounds, args.work,
                                [int(t) for t in args.threads.split(",")])
    if args.minilm:
        return bench_minilm(args.minilm.split(","), args.browsers.split(","), args.rounds, args.work)
    formats = args.formats.split(",")
    if unknown := [f for f in formats if f not in FORMATS]:
        raise SystemExit(f"--formats: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "index.html").write_text("<!doctype html><meta charset=utf-8><title>GEMM bench</title>")
        (site / "bench.js").write_text(PAGE_JS)
        kernels = [write_kernels(wk, "now", site, formats)]
        if args.before:
            before = load_kernels_module(args.before, Path(tmp) / "before")
            if not hasattr(before, "CODEBOOK_BYTES") and any(FORMATS[f].fmt.levels == "codebook" for f in formats):
                raise SystemExit(f"--before {args.before}: its kernels do not decode the codebook formats; "
                                 "pass --formats without them (e.g. --formats float32,int8,int4,int2)")
            kernels.insert(0, write_kernels(before, "before", site, formats))
        cases = write_cases(site, shapes, formats)
        server = BundleServer(site, 0, isolate=True).start_in_background()
        results = {}
        try:
            for browser in args.browsers.split(","):
                if browser == "node":
                    results[browser] = run_in_node(site, {"kernels": kernels, "cases": cases, "rounds": args.rounds,
                                                          "base": server.url})
                    continue
                with started(browser) as (session, failure):
                    if session is None:
                        raise SystemExit(f"{browser}: {failure}")
                    session.goto(server.url + "index.html")
                    results[browser] = session.evaluate("async (a) => (await import('./bench.js')).bench(a)",
                                                        {"kernels": kernels, "cases": cases, "rounds": args.rounds}, timeout_s=1800)
        finally:
            server.shutdown()
    names = [k["name"] for k in kernels]
    print(f"GFLOP/s: the median of {args.rounds} interleaved rounds x 3 batches (the fastest batch in brackets)"
          + (f"; before = {args.before}" if args.before else ""))
    print("| browser | kernels | shape (rows x k x n) | " + " | ".join(formats) + " |")
    print("|---|---|---|" + "---|" * len(formats))
    bad = []
    for browser, r in results.items():
        label = f"{browser} ({'relaxed SIMD' if r['relaxed'] else 'SIMD'})"
        for m, k, n in shapes:
            for name in names:
                cells = []
                for fmt in formats:
                    key = f"{name}|{fmt}-{m}x{k}x{n}"
                    if r["error"][key] > TOLERANCE:
                        bad.append(f"{browser} {key}: relative error {r['error'][key]:.2e}")
                    flop = 2 * m * k * n / 1e6
                    cells.append(f"{flop / statistics.median(r['times'][key]):.1f} ({flop / min(r['times'][key]):.1f})")
                print(f"| {label} | {name} | {m} x {k} x {n} | " + " | ".join(cells) + " |")
    gemvs = [s for s in shapes if s[0] == 1]
    if gemvs:
        print("\nOne-row products, ns per weight: median (fastest); in brackets after it, the median over int2's"
              + (" (the codebook formats' time includes rotating x)" if any(FORMATS[f].fmt.levels == "codebook" for f in formats) else ""))
        print("| browser | kernels | shape (rows x k x n) | " + " | ".join(formats) + " |")
        print("|---|---|---|" + "---|" * len(formats))
        for browser, r in results.items():
            label = f"{browser} ({'relaxed SIMD' if r['relaxed'] else 'SIMD'})"
            for m, k, n in gemvs:
                for name in names:
                    med = {f: statistics.median(r["times"][f"{name}|{f}-{m}x{k}x{n}"]) for f in formats}
                    cells = []
                    for f in formats:
                        ns = 1e6 / (k * n)
                        cell = f"{med[f] * ns:.3f} ({min(r['times'][f'{name}|{f}-{m}x{k}x{n}']) * ns:.3f})"
                        if "int2" in med and f != "int2":
                            cell += f" [{med[f] / med['int2']:.2f}x]"
                        cells.append(cell)
                    print(f"| {label} | {name} | {m} x {k} x {n} | " + " | ".join(cells) + " |")
    print(json.dumps({"user_agents": {b: r["ua"] for b, r in results.items()}}))
    if bad:
        print("WRONG OUTPUTS:\n" + "\n".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
