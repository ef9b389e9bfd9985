"""WebAssembly operators the CPU path's GEMM executes per multiply-add, per format and row count: a
count that a busy machine cannot disturb, beside (never instead of) timings.

Runs gemm_<format> under wasmtime with fuel metering (one unit per wasm operator executed,
local.get/set and constants included, so the count is a proxy for the work, not for cycles: an
engine turns locals into registers and a call or a scalar-to-vector move costs more than one unit)
at all-MiniLM-L6-v2's shapes, on seeded random inputs, after checking each output against numpy
(relative error < 2e-5). `--before REV` counts REV's kernels too (its template and wasm_kernels.py
via `git show`, as scripts/bench_cpu_gemm.py loads them).

    python scripts/count_cpu_gemm_ops.py [--before REV] [--rows 1,8,144]

Prints a markdown table: operators per multiply-add (rows x k x n of them), plain SIMD and
relaxed-SIMD builds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu_gemm import load_kernels_module  # noqa: E402

from ulpq_build import wasm_kernels  # noqa: E402
from ulpq_build.quantize import dequantize, quantize  # noqa: E402
from ulpq_build.quantspec import QuantSpec  # noqa: E402

SHAPES = [(384, 1536), (1536, 384)]  # MiniLM's feed-forward GEMMs (k x n)
FORMATS = {"float32": QuantSpec("float32"), "int8": QuantSpec("int8", group_size=32), "int4": QuantSpec("int4", group_size=32),
           "int4, f16 scales": QuantSpec("int4", group_size=32, scale_dtype="float16"), "int2": QuantSpec("int2", group_size=32)}
TOLERANCE = 2e-5
FUEL = 10**15


def count(module, relaxed: bool, rows_list: list[int]) -> dict:
    """{(format, rows, k, n): operators per multiply-add} for one kernel module."""
    import wasmtime

    variants = sorted({module.WasmVariant(s.format, s.scale_dtype, False) for s in FORMATS.values()})
    config = wasmtime.Config()
    config.consume_fuel = True
    config.wasm_relaxed_simd = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(1024, None)))
    exports = wasmtime.Instance(store, wasmtime.Module(engine, module.build(variants, shared=False, relaxed=relaxed)),
                                [memory]).exports(store)
    rng = np.random.default_rng(3)
    out = {}
    for k, n in SHAPES:
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        x = rng.standard_normal((max(rows_list), k)).astype(np.float32)
        for name, spec in FORMATS.items():
            qt = quantize("w", w, spec)
            top, ptrs = 1024, []
            for part in [qt.parts["codes"]] + ([qt.parts["scales"]] if "scales" in qt.parts else []):
                data = np.ascontiguousarray(part).tobytes()
                memory.write(store, data, top)
                ptrs.append(top)
                top = (top + len(data) + 8 + 63) // 64 * 64
            xp = top
            memory.write(store, x.tobytes(), xp)
            y = xp + (x.nbytes + 64) // 64 * 64
            scratch = y + (x.shape[0] * n * 4 + 64) // 64 * 64
            want = x.astype(np.float64) @ dequantize(qt).astype(np.float64).T
            layout = qt.matrix_layout()
            key = module.WasmVariant(spec.format, spec.scale_dtype, False).key
            for rows in rows_list:
                memory.write(store, np.full(rows * n, np.nan, np.float32).tobytes(), y)  # poisoned
                store.set_fuel(FUEL)
                exports[f"gemm_{key}"](store, xp, rows, k, y, n, 0, n, ptrs[0], ptrs[1] if len(ptrs) > 1 else 0, 0, 0,
                                       layout["words_per_row"], layout["groups_per_row"], layout["group_size"], 0, 0, 0, 0, scratch)
                used = FUEL - store.get_fuel()
                got = np.frombuffer(memory.read(store, y, y + rows * n * 4), dtype=np.float32).reshape(rows, n)
                err = np.abs(got - want[:rows]).max() / np.abs(want[:rows]).max()
                if not err < TOLERANCE:
                    raise SystemExit(f"gemm_{key} {rows} x {k} x {n}: relative error {err:.2e} against numpy")
                out[(name, rows, k, n)] = used / (rows * k * n)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="a git revision whose kernels to count beside this checkout's")
    ap.add_argument("--rows", default="1,8,144")
    args = ap.parse_args(argv)
    rows_list = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        modules = {"now": wasm_kernels}
        if args.before:
            modules = {"before": load_kernels_module(args.before, Path(tmp) / "before"), **modules}
        counts = {(name, relaxed): count(m, relaxed, rows_list) for name, m in modules.items() for relaxed in (False, True)}
    print("wasm operators executed per multiply-add (wasmtime fuel / (rows x k x n))"
          + (f"; before = {args.before}" if args.before else ""))
    print("| build | kernels | rows x k x n | " + " | ".join(FORMATS) + " |")
    print("|---|---|---|" + "---|" * len(FORMATS))
    for relaxed in (False, True):
        for k, n in SHAPES:
            for rows in rows_list:
                for name in modules:
                    c = counts[(name, relaxed)]
                    print(f"| {'relaxed SIMD' if relaxed else 'SIMD'} | {name} | {rows} x {k} x {n} | "
                          + " | ".join(f"{c[(f, rows, k, n)]:.3f}" for f in FORMATS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
