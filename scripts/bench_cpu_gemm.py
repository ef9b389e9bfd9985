"""The CPU path's GEMM kernel alone, in the browsers, against the kernel of another revision.

Renders the wasm kernels of this checkout and of `--before REV` (its template and wasm_kernels.py,
read with `git show`), loads both into one page per browser, and times gemm_<format> at
all-MiniLM-L6-v2's shapes (8 sentences x 18 tokens = 144 rows; 8 rows; 1 row) on seeded random
inputs and weights quantized by this checkout's quantizer (float32; int8, int4 and int2 in groups of
32). Every configuration runs interleaved for `--rounds` rounds; a figure is the median of its timed
batches and, in brackets, the fastest (on a shared machine the fastest run is the one least
disturbed; medians drift with the load). `node` runs the same page code under Node. Each kernel's output is first checked against numpy (relative error < 2e-5), so a fast wrong
kernel cannot score. Relaxed-SIMD builds where the engine validates them (as the runtime loads).

    python scripts/bench_cpu_gemm.py [--before REV] [--browsers node,chromium,firefox,webkit] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ulpq_build import wasm_kernels as wk  # noqa: E402
from ulpq_build.browsers import started  # noqa: E402
from ulpq_build.quantize import dequantize, quantize  # noqa: E402
from ulpq_build.quantspec import QuantSpec  # noqa: E402
from ulpq_build.serve import BundleServer  # noqa: E402

# MiniLM's GEMMs at 8 sentences x 18 tokens, at 8 tokens and at one row (a GEMV); then a decoder-sized
# GEMV whose float32 weights (64 MiB) do not fit a CPU cache, as a 1B-parameter model's do not
SHAPES = [(144, 384, 1536), (144, 1536, 384), (144, 384, 384), (8, 384, 1536), (8, 1536, 384), (1, 384, 1536),
          (1, 2048, 8192)]
FORMATS = {"float32": QuantSpec("float32"), "int8": QuantSpec("int8", group_size=32), "int4": QuantSpec("int4", group_size=32),
           "int2": QuantSpec("int2", group_size=32)}
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
    const scratch = top;
    const [codes, scales = 0] = ptrs;
    const L = c.layout;
    const call = () => m.ex[`gemm_${c.key}`](x, c.m, c.k, y, c.n, 0, c.n, codes, scales, 0, 0, L.words_per_row,
      L.groups_per_row, L.group_size, 0, 0, 0, 0, scratch);
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


def write_kernels(module, name: str, site: Path) -> dict:
    variants = [module.WasmVariant(s.format, s.scale_dtype, False) for s in FORMATS.values()]
    out = {"name": name}
    for kind, relaxed in (("plain", False), ("relaxed", True)):
        path = site / f"{name}-{kind}.wasm"
        path.write_bytes(module.build(variants, shared=False, relaxed=relaxed))
        out[kind] = path.name
    return out


def write_cases(site: Path) -> list[dict]:
    rng = np.random.default_rng(11)
    cases = []
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        for fmt, spec in FORMATS.items():
            qt = quantize("w", w, spec)
            dense = dequantize(qt).astype(np.float64)
            cid = f"{fmt}-{m}x{k}x{n}"
            parts = [np.ascontiguousarray(qt.parts["codes"])] + ([np.ascontiguousarray(qt.parts["scales"])] if "scales" in qt.parts else [])
            names = []
            for i, part in enumerate(parts):
                (site / f"{cid}-{i}.bin").write_bytes(part.tobytes())
                names.append(f"{cid}-{i}.bin")
            (site / f"{cid}-x.bin").write_bytes(x.tobytes())
            (site / f"{cid}-want.bin").write_bytes((x.astype(np.float64) @ dense.T).astype(np.float32).tobytes())
            cases.append({"id": cid, "fmt": fmt, "m": m, "k": k, "n": n, "key": wk.variant_of(spec).key, "parts": names,
                          "x": f"{cid}-x.bin", "want": f"{cid}-want.bin", "layout": qt.matrix_layout()})
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="a git revision whose kernels to time beside this checkout's")
    ap.add_argument("--browsers", default="node,chromium,firefox,webkit", help="engines: node, chromium, firefox, webkit")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "index.html").write_text("<!doctype html><meta charset=utf-8><title>GEMM bench</title>")
        (site / "bench.js").write_text(PAGE_JS)
        kernels = [write_kernels(wk, "now", site)]
        if args.before:
            kernels.insert(0, write_kernels(load_kernels_module(args.before, Path(tmp) / "before"), "before", site))
        cases = write_cases(site)
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
    print("| browser | kernels | shape (rows x k x n) | " + " | ".join(FORMATS) + " |")
    print("|---|---|---|" + "---|" * len(FORMATS))
    bad = []
    for browser, r in results.items():
        label = f"{browser} ({'relaxed SIMD' if r['relaxed'] else 'SIMD'})"
        for m, k, n in SHAPES:
            for name in names:
                cells = []
                for fmt in FORMATS:
                    key = f"{name}|{fmt}-{m}x{k}x{n}"
                    if r["error"][key] > TOLERANCE:
                        bad.append(f"{browser} {key}: relative error {r['error'][key]:.2e}")
                    flop = 2 * m * k * n / 1e6
                    cells.append(f"{flop / statistics.median(r['times'][key]):.1f} ({flop / min(r['times'][key]):.1f})")
                print(f"| {label} | {name} | {m} x {k} x {n} | " + " | ".join(cells) + " |")
    print(json.dumps({"user_agents": {b: r["ua"] for b, r in results.items()}}))
    if bad:
        print("WRONG OUTPUTS:\n" + "\n".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
