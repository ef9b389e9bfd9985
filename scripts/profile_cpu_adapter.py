#!/usr/bin/env python3
"""Where a CPU adapter's time goes for one MiniLM 8x18 forward (m = 144 rows): each kernel of the
graph at its real shape, timed alone through wgpu-py on a software Vulkan (lavapipe, Firefox's
adapter here; or Chromium's own SwiftShader, `--swiftshader`, which wgpu-native drives through
VK_ICD_FILENAMES). Prints ms per dispatch and per forward (times the count per forward).

    python scripts/profile_cpu_adapter.py [--swiftshader] [--profiles chrome,chrome-cpu] [--formats float32,int4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--swiftshader", action="store_true")
    ap.add_argument("--profiles", default="chrome")
    ap.add_argument("--formats", default="float32,int4")
    ap.add_argument("--ops", action="store_true", help="also the weightless operators")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trials", type=int, default=3, help="each timing the fastest of this many")
    ap.add_argument("--cpu-time", action="store_true", help="CPU time of this process (all threads) instead of wall time")
    ap.add_argument("--gemm-tiles", default=None, help='JSON tile overrides for the GEMMs, e.g. {"tile_m": 64, "reg_m": 8}')
    ap.add_argument("--only", default=None, help="comma-separated matmul names (qkv,attn_out,ffn_up,ffn_down)")
    ap.add_argument("--compile", action="store_true",
                    help="time only the pipeline creation (WGSL to the driver's machine code) of each product's kernel")
    args = ap.parse_args()
    if args.swiftshader:
        os.environ["VK_ICD_FILENAMES"] = SWIFTSHADER_ICD
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    from ulpq_build.kernels import KernelVariant, WeightStorage, matmul_choice, split_for, workgroups
    from ulpq_build.kernels import render as kernel_render
    from ulpq_build.native_webgpu import (KernelRunner, adapter_summary, compile_shader, matmul_params, request_device,
                                          weight_arrays)
    from ulpq_build.quantize import quantize
    from ulpq_build.quantspec import QuantSpec

    clock = time.process_time if args.cpu_time else time.perf_counter
    device = request_device("wgpu", {})
    print(adapter_summary(device), flush=True)
    runner = KernelRunner(device)
    rng = np.random.default_rng(0)
    m = 144
    # MiniLM per layer: fused QKV, attention out, FFN up (GELU), FFN down; 6 layers
    shapes = [("qkv", 1152, 384, 6), ("attn_out", 384, 384, 6), ("ffn_up", 1536, 384, 6), ("ffn_down", 384, 1536, 6)]

    def timed(variant, arrays, params, outputs):
        """ms per dispatch: (a submit of 1 + repeat dispatches) - (a submit of 1), each the fastest of
        `trials` (the machine is shared: the fastest is the one least disturbed). --cpu-time: the
        process's CPU time (the driver's worker threads are in this process), not wall time: on a
        loaded machine it moves far less with the other jobs; a quiet machine's wall time is about
        it divided by the driver's threads."""
        runner.run(variant, arrays, params, outputs)  # compile + warm

        def fastest(repeat):
            best = float("inf")
            for _ in range(args.trials):
                t = clock()
                runner.run(variant, arrays, params, outputs, repeat=repeat)
                best = min(best, clock() - t)
            return best

        return max(fastest(1 + args.repeat) - fastest(1), 1e-9) / args.repeat * 1e3

    for profile in args.profiles.split(","):
        for fmt in args.formats.split(","):
            spec = QuantSpec(fmt) if fmt == "float32" else QuantSpec(fmt, 32)
            weight = WeightStorage.of(spec)
            total = 0.0
            for name, n, k, count in shapes:
                qt = quantize("w", (rng.standard_normal((n, k)) * 0.1).astype(np.float32), spec)
                x = rng.standard_normal((m, k)).astype(np.float32)
                if args.only and name not in args.only.split(","):
                    continue
                kernel, opts = matmul_choice(m, k, weight, n)
                tiles = json.loads(args.gemm_tiles) if args.gemm_tiles and kernel == "gemm" else None
                v = KernelVariant.make(kernel, profile, weight, tiles, **opts)
                params = matmul_params(qt, m)
                params["k_split"] = split_for(m, n, k, v.tiles)
                split = params["k_split"] < k
                if split:
                    v = KernelVariant.make(kernel, profile, weight, tiles, **opts, split=True)
                outn = m * n * -(-k // params["k_split"])
                if args.compile:
                    # a fresh device per kernel: the driver may cache compiled pipelines by text
                    t = clock()
                    compile_shader(request_device("wgpu", {}), kernel_render(v))
                    ms = (clock() - t) * 1e3
                    total += ms
                    print(f"{profile:10s} {fmt:8s} {name:9s} {v.key[:60]:60s} compile {ms:8.1f} ms", flush=True)
                    continue
                ms = timed(v, {"x": x, **weight_arrays(qt)}, params, {"y": outn})
                total += ms * count
                print(f"{profile:10s} {fmt:8s} {name:9s} {m}x{n}x{k} {v.key[:60]:60s} grid {workgroups(v, params)} "
                      f"{ms:8.2f} ms x{count}", flush=True)
            print(f"{profile:10s} {fmt:8s} {'compile, all products' if args.compile else 'matmuls per forward'} "
                  f"{total:8.1f} ms", flush=True)
        if args.ops:
            b, s, h, d = 8, 18, 12, 32
            qkv = rng.standard_normal((m, 3 * h * d)).astype(np.float32)
            keep = np.ones(m, np.float32)
            v = KernelVariant.make("attention", profile)
            dims = {"batch": b, "seq": s, "heads": h, "head_dim": d, "scale": d ** -0.5, "in_stride": 3 * h * d,
                    "q_off": 0, "k_off": h * d, "v_off": 2 * h * d}
            ms = timed(v, {"q": qkv, "k": qkv, "v": qkv, "mask": keep}, dims, {"y": m * h * d})
            print(f"{profile:10s} attention {ms:8.2f} ms x6 = {ms * 6:.1f}", flush=True)
            v = KernelVariant.make("layernorm", profile)
            x = rng.standard_normal((m, 384)).astype(np.float32)
            ms = timed(v, {"x": x, "gamma": x[0], "beta": x[1]}, {"rows": m, "cols": 384, "eps": 1e-12}, {"y": m * 384})
            print(f"{profile:10s} layernorm {ms:8.2f} ms x13 = {ms * 13:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
