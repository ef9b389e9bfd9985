#!/usr/bin/env python3
"""GPU kernel benchmark: copy bandwidth, a float32 GEMM reference, and the quantized GEMV and GEMM
kernels per format, through one WebGPU engine per run (Dawn: `--engine dawn`, wgpu-native:
`--engine wgpu`). Meant for a machine with a real GPU (the lent H100/H200); on lavapipe use
`--quick` only to check that the script runs.

    python scripts/bench_kernels.py --engine dawn --json out-dawn.json
    python scripts/bench_kernels.py --report out-dawn.json out-wgpu.json --write-docs docs/benchmarks.md
    python scripts/bench_kernels.py --engine dawn --variant subgroups --no-gemm --json out-sg.json
    python scripts/bench_kernels.py --engine dawn --isolate --formats int2,int4,e8p,e8p-rvq3,e8p-rvq4 \
        --gemv-shapes 8192x2048,2048x8192,16384x8192 --json out-codebook.json

Every timing first settles (Timer.settle: trials until the GPU has run 1 s and three agree): on the
H200 a process's kernels ran 2-10x slow for 0.1-0.4 s after setup (GPU timestamps showed it), and
five trials taken right away could land entirely in that period (docs/benchmarks.md, "The slow mode
was a slow period after setup"). `--isolate` still times each (format, GEMV shape) in a process of
its own, which is how the slow times were first worked around.

`--variant subgroups|f16|subgroups+f16` times every GEMV twice on one device requested with those
adapter features (profiles.FEATURES): the base variant (what runs without them) and the feature
variant, interleaved (base, feature, base again: the base's best), each checked against numpy first.

Each kernel is first checked against numpy on a small shape on the same device (each GEMV variant a
timed shape takes: the deep tiles at K >= 2048, vec4 where the shape allows), then timed:
dispatches in one command buffer, enough of them that a trial lasts at least 25 ms (after a warm-up
trial), best of `trials` submissions, wall clock around a blocking read. Weights are random codes and scales of the right layout (the kernels' speed does not
depend on the values); GEMV weights are uploaded in several copies (256 MiB together) that the
repeats cycle through, so the figures are DRAM figures, not L2 hits. Effective bandwidth counts the bytes of every stored weight part; the
fraction is of the measured copy bandwidth (bytes read + written), the roofline for memory-bound
kernels.
"""

from __future__ import annotations

import argparse
import itertools
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ulpq_build.formats import FORMATS  # noqa: E402
from ulpq_build.markdown import write_section  # noqa: E402
from ulpq_build.kernels import KernelVariant, WeightStorage, pack_params, workgroups  # noqa: E402
from ulpq_build.native_webgpu import KernelRunner, engine_module, matmul_params, request_device, weight_arrays  # noqa: E402
from ulpq_build.quantize import QuantizedTensor, dequantize, quantize  # noqa: E402
from ulpq_build.quantspec import QuantSpec, part_layout  # noqa: E402
from ulpq_build.reference import relative_error  # noqa: E402
from ulpq_build.vq.tensor import decode_rotated  # noqa: E402

# --variant: the adapter features each choice requests and times against the base variants
VARIANT_FEATURES = {"subgroups": ("subgroups",), "f16": ("shader-f16",), "subgroups+f16": ("subgroups", "shader-f16")}
L2_DEFEAT_BYTES = 256 << 20  # GEMV weights cycle through copies this large together (H200 L2: 60 MB)
GEMV_SHAPES = [(768, 768), (3072, 768), (768, 3072), (16384, 8192)]  # (N outputs, K inputs)
GEMM_SHAPES = [(128, 3072, 768), (4096, 4096, 4096)]  # (M, N, K)
# Timer.settle: trials before a timing until the GPU has run this long and the last trials agree
SETTLE_SECONDS, SETTLE_MAX_SECONDS, SETTLE_TRIALS, SETTLE_AGREE = 1.0, 8.0, 3, 0.03
CHECK_GEMV_N = 67  # check()'s GEMV outputs: a ragged count


def random_weight(spec: QuantSpec, n: int, k: int, rng) -> QuantizedTensor:
    """Random stored parts of the right dtypes and shapes (codes, scales in a sane range, ...)."""
    parts = {}
    for name, (dtype, shape) in part_layout(spec, (n, k)).items():
        if name == "codes" and spec.fmt.quantized:
            parts[name] = rng.integers(0, 2**32, size=shape, dtype=np.uint32)
        elif name == "zeros":
            parts[name] = rng.integers(0, spec.fmt.n_levels, size=shape, dtype=np.uint8)
        else:
            parts[name] = (rng.standard_normal(shape) * 0.02).astype(dtype)
    return QuantizedTensor("w", (n, k), "float32", spec, parts)


class Timer:
    def __init__(self, runner: KernelRunner):
        self.runner, self.device, self.wgpu = runner, runner.device, runner.wgpu
        self.min_seconds = 0.025  # per timed trial (0 for lavapipe smoke runs, which also skip settling)
        self.last_settle: dict | None = None  # how the last timing with min_seconds settled (Timer.settle)
        self.sync = self.device.create_buffer(size=4, usage=self.wgpu.BufferUsage.COPY_SRC | self.wgpu.BufferUsage.COPY_DST)

    def seconds(self, encode, repeat: int, trials: int, min_seconds: float = 0.0) -> float:
        """Best over trials of the per-repeat time of `encode(encoder)` recorded `repeat` times.
        With min_seconds, `repeat` grows until one trial lasts that long (short bursts between
        uploads run at whatever clock the GPU idled down to), and a warm-up trial precedes them."""
        if min_seconds:
            probe = self.seconds(encode, repeat, 1)
            repeat = max(repeat, min(4000, math.ceil(min_seconds / max(probe, 1e-7))))
            self.settle(encode, repeat)
        best = math.inf
        for _ in range(trials):
            encoder = self.device.create_command_encoder()
            for _ in range(repeat):
                encode(encoder)
            start = time.perf_counter()
            self.device.queue.submit([encoder.finish()])
            self.device.queue.read_buffer(self.sync)  # blocks until the work is done
            best = min(best, (time.perf_counter() - start) / repeat)
        return best

    def settle(self, encode, repeat: int) -> None:
        """Run trials until the GPU has worked SETTLE_SECONDS and the last SETTLE_TRIALS agree within
        SETTLE_AGREE (at most SETTLE_MAX_SECONDS): after a process's setup an H200 ran every kernel
        2-10x slower for a period (GPU timestamps showed it: the dispatches themselves were slow, not
        the submit), so a timing of a few trials could land entirely in it."""
        start, trials = time.perf_counter(), []
        while True:
            trials.append(self.seconds(encode, repeat, 1))
            elapsed = time.perf_counter() - start
            recent = trials[-SETTLE_TRIALS:]
            if elapsed >= SETTLE_MAX_SECONDS or (elapsed >= SETTLE_SECONDS and len(recent) == SETTLE_TRIALS
                                                 and max(recent) <= min(recent) * (1 + SETTLE_AGREE)):
                self.last_settle = {"seconds": round(elapsed, 3), "trials": len(trials),
                                    "first_over_last": round(trials[0] / trials[-1], 2)}
                return

    def kernel(self, variant, arrays, params, outputs, repeat, trials, copies: int = 1) -> float:
        """Time a kernel; with copies > 1 the weight parts (w.*) are uploaded that many times and
        the dispatches cycle through them, so repeated runs cannot be served from the GPU's L2."""
        runner, wgpu = self.runner, self.wgpu
        shared = {name: runner.buffer(np.asarray(a)) for name, a in arrays.items() if not name.startswith("w.")}
        for name, count in outputs.items():
            shared[name] = runner.buffer(np.zeros(count, np.float32), readable=True)
        shared["params"] = self.device.create_buffer_with_data(data=pack_params(variant, params), usage=wgpu.BufferUsage.UNIFORM)
        pipeline = runner.pipeline(variant)
        groups, copy_buffers = [], []
        for _ in range(copies):
            copy_buffers.append({name: runner.buffer(np.asarray(a)) for name, a in arrays.items() if name.startswith("w.")})
            buffers = {**shared, **copy_buffers[-1]}
            entries = [{"binding": slot, "resource": {"buffer": buffers[name], "offset": 0, "size": buffers[name].size}}
                       for name, slot in variant.bindings.items()]
            groups.append(self.device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries))
        grid = workgroups(variant, params)
        turn = [0]

        def encode(encoder):
            p = encoder.begin_compute_pass()
            p.set_pipeline(pipeline)
            p.set_bind_group(0, groups[turn[0] % len(groups)])
            turn[0] += 1
            p.dispatch_workgroups(*grid)
            p.end()

        try:
            return self.seconds(encode, repeat, trials, min_seconds=self.min_seconds)
        finally:
            release(buffers for buffers in [shared, *copy_buffers])

    def copy_bandwidth(self, nbytes: int, repeat: int, trials: int) -> float:
        usage = self.wgpu.BufferUsage
        a = self.device.create_buffer(size=nbytes, usage=usage.COPY_SRC | usage.COPY_DST)
        b = self.device.create_buffer(size=nbytes, usage=usage.COPY_SRC | usage.COPY_DST)
        self.seconds(lambda e: e.copy_buffer_to_buffer(a, 0, b, 0, nbytes), 2, 1)  # first use clears the buffers
        try:
            seconds = self.seconds(lambda e: e.copy_buffer_to_buffer(a, 0, b, 0, nbytes), repeat, trials)
        finally:
            release([{"a": a, "b": b}])
        return 2 * nbytes / seconds


def release(buffer_sets) -> None:
    """Destroy a timing's buffers now (up to 256 MiB of weight copies, 2 GiB for the copy bandwidth)
    rather than whenever Python's collector gets to them. (It did not cure the slowdown late in a
    long run that --isolate works around.)"""
    for buffers in buffer_sets:
        for buffer in buffers.values():
            if hasattr(buffer, "destroy"):
                buffer.destroy()


COPY_WGSL = """
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let total = arrayLength(&src);
  for (var i = gid.x; i < total; i = i + nwg.x * 256u) {
    dst[i] = src[i];
  }
}
"""


def kernel_copy_bandwidth(timer: "Timer", nbytes: int, repeat: int, trials: int) -> float:
    """A compute-shader copy (vec4 loads and stores): the roofline a kernel can actually reach."""
    from ulpq_build.native_webgpu import compile_shader

    device, usage = timer.device, timer.wgpu.BufferUsage
    src = device.create_buffer(size=nbytes, usage=usage.STORAGE | usage.COPY_DST)
    dst = device.create_buffer(size=nbytes, usage=usage.STORAGE | usage.COPY_SRC)
    pipeline = compile_shader(device, COPY_WGSL)
    group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": src, "offset": 0, "size": nbytes}},
        {"binding": 1, "resource": {"buffer": dst, "offset": 0, "size": nbytes}}])

    def encode(encoder):
        p = encoder.begin_compute_pass()
        p.set_pipeline(pipeline)
        p.set_bind_group(0, group)
        p.dispatch_workgroups(132 * 64, 1, 1)
        p.end()

    timer.seconds(encode, 2, 1)
    try:
        return 2 * nbytes / timer.seconds(encode, repeat, trials)
    finally:
        release([{"src": src, "dst": dst}])


def matmul_variant(m: int, k: int, spec: QuantSpec, profile: str, tiles=None, *, n: int) -> KernelVariant:
    """The kernel a bundle and its runtime pick for m rows against W[n, k] (ulpq_build/kernels.py: matmul_choice)."""
    from ulpq_build.kernels import matmul_choice

    kernel, options = matmul_choice(m, k, WeightStorage.of(spec), n)
    return KernelVariant.make(kernel, profile, WeightStorage.of(spec), tiles=tiles, **options)


def check(runner, kernel: str, profile: str, spec: QuantSpec, rng, features=(), k: int = 0, tiles=None, n_of: int | None = None) -> float:
    """Relative error against numpy on a small ragged shape, on this device (with `features`: that
    feature variant; k: that many inputs, for the deep GEMV tiles; tiles: overrides; n_of: check the
    variant a product of that many outputs takes (the wide tiles), not the check's own)."""
    m, n, k = (1, CHECK_GEMV_N, k or 512) if kernel == "gemv" else (45, 70, 320)
    qt = quantize("w", (rng.standard_normal((n, k)) * 0.1).astype(np.float32), spec)
    x = rng.standard_normal((m, k)).astype(np.float32)
    variant = matmul_variant(m, k, spec, profile, tiles, n=n_of or n).with_features(features)
    y = runner.run(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, m), {"y": m * n})["y"].reshape(m, n)
    # a codebook format's product multiplies the matrix as stored, rotated (its input's rotation is
    # the hadamard kernel before it), so x is taken as already rotated
    w = decode_rotated(qt.parts, qt.fmt, n, k) if qt.fmt.levels == "codebook" else dequantize(qt)
    return relative_error(y, x.astype(np.float64) @ w.astype(np.float64).T)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("dawn", "wgpu"))
    parser.add_argument("--profile", default="chrome", help="the variant table row to time (default chrome: 256 threads)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--quick", action="store_true", help="small shapes only (lavapipe smoke run)")
    parser.add_argument("--sweep", action="store_true", help="time other tile shapes per profile instead (to tune the table)")
    parser.add_argument("--gemv-shapes", help="GEMV shapes (n x k, comma-separated) instead of the table's")
    parser.add_argument("--no-gemm", action="store_true", help="time the GEMV shapes only")
    parser.add_argument("--gemv-rows", type=int, default=1,
                        help="input rows of the GEMV shapes (the runtime takes the GEMV up to 8 rows: 1x8 inputs)")
    parser.add_argument("--sweep-shapes", default="16384x8192", help="GEMV shapes (n x k, comma-separated) the sweep times")
    parser.add_argument("--variant", choices=tuple(VARIANT_FEATURES),
                        help="time each GEMV with and without these adapter features on one device (GEMV only)")
    parser.add_argument("--variant-tiles", default="",
                        help="with --variant: tile overrides for the feature variant only, e.g. sg_lid=1 (place threads "
                             "by local_invocation_index, assuming consecutive subgroups) or threads_per_row=32")
    parser.add_argument("--gemv-tiles", default="",
                        help="tile overrides for every timed GEMV, e.g. units=2 or pipeline=1 (codebook formats' "
                             "templates/gemv_codebook.wgsl.jinja) or rows=2,threads_per_row=64")
    parser.add_argument("--isolate", action="store_true",
                        help="time each (format, GEMV shape) in a child process of its own, merged into one result "
                             "(GEMV only): Dawn on the H200 ran every dispatch 3-5x slower after about six timings in "
                             "one process, whatever came before")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--report", type=Path, nargs="+", help="format result files instead of measuring")
    parser.add_argument("--write-docs", type=Path)
    args = parser.parse_args()
    if args.report:
        results = [json.loads(p.read_text()) for p in args.report]
        text = report(results)
        print(text)
        if args.write_docs:
            write_docs(args.write_docs, text)
        return 0

    if args.isolate:
        return isolated(args)
    gemv_tiles = {name: int(value) for name, value in (t.split("=") for t in args.gemv_tiles.split(",") if t)} or None
    rng = np.random.default_rng(0)
    gpu = engine_module(args.engine).gpu
    adapter = gpu.request_adapter_sync(power_preference="high-performance")
    big = int(min(adapter.limits["max-storage-buffer-binding-size"], adapter.limits["max-buffer-size"], 2**31 - 4))
    features = VARIANT_FEATURES[args.variant] if args.variant else ()
    try:
        device = request_device(args.engine, {"maxStorageBufferBindingSize": big, "maxBufferSize": big,
                                              "maxComputeInvocationsPerWorkgroup": 512, "maxComputeWorkgroupSizeX": 512},
                                features=features)
    except RuntimeError as err:  # an adapter without the features asked for
        print(f"--variant {args.variant}: {err}", file=sys.stderr)
        return 2
    runner = KernelRunner(device)
    timer = Timer(runner)
    if args.quick:
        timer.min_seconds = 0.0
    info = adapter.info
    result = {"engine": {"dawn": "Dawn (wgpudawn 0.32.0.4)", "wgpu": "wgpu-native (wgpu-py 0.32.0)"}[args.engine],
              "adapter": f"{info.get('device', '?')} ({info.get('backend_type', '?')}, driver {info.get('description', '?')})",
              "date": datetime.date.today().isoformat(), "host": platform.node(), "profile": args.profile,
              "quick": args.quick, "gemv": [], "gemm": [], "features": list(features),
              "subgroup_sizes": [adapter.limits.get(k) for k in ("min-subgroup-size", "max-subgroup-size")]}
    print(result["engine"], "on", result["adapter"], flush=True)
    copy_bytes = 1 << (24 if args.quick else 30)
    copy = lambda: timer.copy_bandwidth(copy_bytes, 4 if args.quick else 20, 5)  # noqa: E731
    result["copy_bandwidth"] = copy()
    result["kernel_copy_bandwidth"] = kernel_copy_bandwidth(timer, copy_bytes, 4 if args.quick else 20, 5)
    print(f"copy bandwidth: {result['copy_bandwidth'] / 1e12:.3f} TB/s buffer copy, "
          f"{result['kernel_copy_bandwidth'] / 1e12:.3f} TB/s compute-shader copy (read + write)", flush=True)
    if args.sweep:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.sweep_shapes.split(",")]
        result["sweep"] = sweep(timer, rng, args.quick, shapes)
        result["copy_bandwidth"] = max(result["copy_bandwidth"], copy())
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    gemv_shapes = [(768, 768), (3072, 768)] if args.quick else GEMV_SHAPES
    if args.gemv_shapes:
        gemv_shapes = [tuple(int(v) for v in s.split("x")) for s in args.gemv_shapes.split(",")]
    gemm_shapes = [(64, 256, 256)] if args.quick else GEMM_SHAPES
    if args.no_gemm or args.variant:
        gemm_shapes = []  # (no feature changes the GEMM)
    if args.variant:
        for name in args.formats.split(","):
            feature_rows(result, timer, runner, QuantSpec(name, 0), gemv_shapes, args, features, rng)
        return finish(result, args, print_report=True)
    for name in args.formats.split(","):
        spec = QuantSpec(name, 0)
        errors = {kern: check(runner, kern, args.profile, spec, rng, tiles=gemv_tiles if kern == "gemv" else None)
                  for kern in ("gemv", "gemm")}
        checked = {matmul_variant(1, 512, spec, args.profile, gemv_tiles, n=CHECK_GEMV_N).key: errors["gemv"]}
        for n, k in gemv_shapes:
            rows = args.gemv_rows
            variant = matmul_variant(rows, k, spec, args.profile, gemv_tiles, n=n)
            if variant.key not in checked:  # another variant (deep or wide tiles, vec4) than the check's shape takes: check it too
                checked[variant.key] = check(runner, "gemv", args.profile, spec, rng, k=k, tiles=gemv_tiles, n_of=n)
            errors["gemv"] = checked[variant.key]
            qt = random_weight(spec, n, k, rng)
            x = rng.standard_normal((rows, k)).astype(np.float32)
            repeat = 48 if n * k < 1 << 24 else 24
            copies = min(16, max(1, math.ceil(L2_DEFEAT_BYTES / qt.nbytes)))
            seconds = timer.kernel(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, rows), {"y": rows * n},
                                   2 if args.quick else repeat, 2 if args.quick else 5, copies=1 if args.quick else copies)
            row = {"format": name, "m": rows, "n": n, "k": k, "seconds": seconds, "weight_bytes": qt.nbytes, "variant": variant.key,
                   "weight_copies": copies,
                   "bandwidth": qt.nbytes / seconds, "check_rel_error": errors["gemv"],
                   "settle": timer.last_settle}
            result["gemv"].append(row)
            settle = f", settled in {row['settle']['seconds']} s, first trial {row['settle']['first_over_last']}x" if row["settle"] else ""
            print(f"gemv {name:13s} {rows}x{n}x{k}: {seconds * 1e6:9.1f} us  {row['bandwidth'] / 1e9:8.1f} GB/s  "
                  f"(check {errors['gemv']:.1e}{settle})", flush=True)
        for m, n, k in gemm_shapes:
            qt = random_weight(spec, n, k, rng)
            x = rng.standard_normal((m, k)).astype(np.float32)
            variant = matmul_variant(m, k, spec, args.profile, n=n)
            flops = 2 * m * n * k
            probe = timer.kernel(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, m), {"y": m * n}, 1, 1)
            repeat = max(1, min(50, int(0.2 / max(probe, 1e-6))))
            seconds = timer.kernel(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, m), {"y": m * n}, repeat, 3)
            row = {"format": name, "m": m, "n": n, "k": k, "seconds": seconds, "tflops": flops / seconds / 1e12,
                   "variant": variant.key, "check_rel_error": errors["gemm"]}
            result["gemm"].append(row)
            print(f"gemm {name:13s} {m}x{n}x{k}: {seconds * 1e3:9.3f} ms  {row['tflops']:7.2f} TFLOP/s", flush=True)
    result["copy_bandwidth"] = max(result["copy_bandwidth"], copy())  # clocks may have been low at the start
    result["kernel_copy_bandwidth"] = max(result["kernel_copy_bandwidth"],
                                          kernel_copy_bandwidth(timer, copy_bytes, 4 if args.quick else 20, 5))
    print(f"copy bandwidth, best of start and end: {result['copy_bandwidth'] / 1e12:.3f} TB/s buffer copy, "
          f"{result['kernel_copy_bandwidth'] / 1e12:.3f} TB/s compute-shader copy", flush=True)
    return finish(result, args)


def finish(result: dict, args, print_report: bool = False) -> int:
    """Each GEMV row's bandwidth as a fraction of the roofline (the larger copy bandwidth), the report
    printed where asked, the result written to --json."""
    roof = max(result["copy_bandwidth"], result["kernel_copy_bandwidth"])
    for row in result["gemv"]:
        row["fraction_of_copy"] = row["bandwidth"] / roof
    if print_report:
        print(report([result]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def isolated(args) -> int:
    """--isolate: this script once per (format, GEMV shape), each in a fresh process, the rows merged
    into one result (engine, adapter and date from the first child, copy bandwidths the best seen)."""
    import subprocess
    import tempfile

    shapes = args.gemv_shapes.split(",") if args.gemv_shapes else [f"{n}x{k}" for n, k in ([(768, 768), (3072, 768)] if args.quick else GEMV_SHAPES)]
    merged = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, shape) in enumerate(itertools.product(args.formats.split(","), shapes)):
            out = Path(tmp) / f"{i}.json"
            command = [sys.executable, __file__, "--engine", args.engine, "--profile", args.profile, "--formats", name,
                       "--gemv-shapes", shape, "--gemv-rows", str(args.gemv_rows), "--no-gemm", "--json", str(out),
                       *(["--quick"] if args.quick else []),
                       *(["--gemv-tiles", args.gemv_tiles] if args.gemv_tiles else [])]
            if subprocess.run(command, check=False).returncode != 0:
                print(f"--isolate: the child for {name} {shape} failed", file=sys.stderr)
                return 1
            result = json.loads(out.read_text())
            if merged is None:
                merged = {**result, "gemv": [], "isolated": True}
            for key in ("copy_bandwidth", "kernel_copy_bandwidth"):
                merged[key] = max(merged[key], result[key])
            merged["gemv"] += result["gemv"]
    return finish(merged, args, print_report=True)


def feature_rows(result: dict, timer: "Timer", runner, spec: QuantSpec, shapes, args, features, rng) -> None:
    """Each GEMV shape of `spec`, base variant and feature variant side by side on this device."""
    for n, k in shapes:
        base = matmul_variant(1, k, spec, args.profile, n=n)
        tiles = dict(base.tile_overrides)
        tiles.update((name, int(value)) for name, value in (t.split("=") for t in args.variant_tiles.split(",") if t))
        variant = KernelVariant.make(base.kernel, base.profile, base.weight, tiles=tiles or None, features=features,
                                     **base.opts)
        if not variant.features:
            print(f"gemv {spec.format:13s} {n}x{k}: no {args.variant} variant for this storage", flush=True)
            continue
        errors = [check(runner, "gemv", args.profile, spec, rng, f, k, t, n) for f, t in (((), None), (variant.features, tiles))]
        qt = random_weight(spec, n, k, rng)
        x = rng.standard_normal((1, k)).astype(np.float32)
        repeat, trials = (2, 2) if args.quick else (48 if n * k < 1 << 24 else 24, 5)
        copies = 1 if args.quick else min(16, max(1, math.ceil(L2_DEFEAT_BYTES / qt.nbytes)))
        time_of = lambda v: timer.kernel(v, {"x": x, **weight_arrays(qt)}, matmul_params(qt, 1), {"y": n},  # noqa: E731
                                         repeat, trials, copies=copies)
        first = time_of(base)
        seconds = time_of(variant)
        base_seconds = min(first, time_of(base))
        row = {"format": spec.format, "n": n, "k": k, "variant": variant.key, "base_variant": base.key,
               "features": list(variant.features), "seconds": seconds, "base_seconds": base_seconds,
               "speedup": base_seconds / seconds, "weight_bytes": qt.nbytes, "bandwidth": qt.nbytes / seconds,
               "check_rel_error": errors[1], "base_check_rel_error": errors[0]}
        result["gemv"].append(row)
        print(f"gemv {spec.format:13s} {n}x{k}: base {base_seconds * 1e6:9.1f} us, {'+'.join(variant.features)} "
              f"{seconds * 1e6:9.1f} us ({row['speedup']:.2f}x; checks {errors[0]:.1e} / {errors[1]:.1e})", flush=True)


SWEEP_GEMV = [{"threads_per_row": t, "rows": r} for t in (16, 32, 64, 128, 256) for r in (1, 2, 4, 8)]
SWEEP_GEMM = {
    "firefox": [dict(tile_m=32, tile_n=64, tile_k=32, reg_m=4, reg_n=4), dict(tile_m=64, tile_n=32, tile_k=16, reg_m=4, reg_n=4),
                dict(tile_m=64, tile_n=64, tile_k=16, reg_m=8, reg_n=4), dict(tile_m=128, tile_n=32, tile_k=16, reg_m=8, reg_n=4)],
    "chrome": [dict(tile_m=64, tile_n=64, tile_k=16, reg_m=4, reg_n=4), dict(tile_m=128, tile_n=64, tile_k=16, reg_m=8, reg_n=4),
               dict(tile_m=64, tile_n=128, tile_k=16, reg_m=8, reg_n=4), dict(tile_m=128, tile_n=64, tile_k=8, reg_m=8, reg_n=4)],
    "safari": [dict(tile_m=128, tile_n=64, tile_k=16, reg_m=4, reg_n=4), dict(tile_m=128, tile_n=128, tile_k=8, reg_m=8, reg_n=4),
               dict(tile_m=128, tile_n=128, tile_k=16, reg_m=8, reg_n=4), dict(tile_m=256, tile_n=64, tile_k=8, reg_m=8, reg_n=4)],
}


def sweep(timer: Timer, rng, quick: bool, gemv_shapes=((16384, 8192),)) -> list[dict]:
    """Time candidate tiles per profile: GEMV at the given n x k shapes, GEMM at 4096^3 and 128 tokens."""
    rows = []
    for (n, k), name in itertools.product([(768, 768)] if quick else gemv_shapes, ("int4", "int2", "int8")):
        spec = QuantSpec(name)
        qt = random_weight(spec, n, k, rng)
        x = rng.standard_normal((1, k)).astype(np.float32)
        copies = 1 if quick else min(16, max(1, math.ceil(L2_DEFEAT_BYTES / qt.nbytes)))
        for profile in ("chrome",):
            for tiles in SWEEP_GEMV:
                variant = matmul_variant(1, k, spec, profile, tiles, n=n)
                seconds = timer.kernel(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, 1), {"y": n},
                                       2 if quick else 24, 3, copies=copies)
                rows.append({"kernel": "gemv", "profile": profile, "format": name, "tiles": tiles, "shape": [1, n, k],
                             "seconds": seconds, "bandwidth": qt.nbytes / seconds})
                print(f"gemv {profile:8s} {name:10s} {n}x{k} {tiles}: {seconds * 1e6:8.1f} us {qt.nbytes / seconds / 1e9:7.1f} GB/s", flush=True)
    for name in () if not quick else ("int4",):  # GEMM tiles were chosen from the first sweep (docs/benchmarks.md)
        spec = QuantSpec(name)
        for m, n, k in ([(64, 256, 256)] if quick else [(4096, 4096, 4096), (128, 3072, 768)]):
            qt = random_weight(spec, n, k, rng)
            x = rng.standard_normal((m, k)).astype(np.float32)
            for profile, options in SWEEP_GEMM.items():
                for tiles in options:
                    variant = KernelVariant.make("gemm", profile, WeightStorage.of(spec), tiles=tiles)
                    seconds = timer.kernel(variant, {"x": x, **weight_arrays(qt)}, matmul_params(qt, m), {"y": m * n}, 2 if quick else 10, 3)
                    rows.append({"kernel": "gemm", "profile": profile, "format": name, "tiles": tiles, "shape": [m, n, k],
                                 "seconds": seconds, "tflops": 2 * m * n * k / seconds / 1e12})
                    print(f"gemm {profile:8s} {name:8s} {m}x{n}x{k} {tiles}: {2 * m * n * k / seconds / 1e12:6.2f} TFLOP/s", flush=True)
    return rows


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        if r.get("features"):  # a --variant run: base and feature variant side by side
            shapes = _shapes(r["gemv"], ("n", "k"))
            lines += [f"### {r['engine']}, {r['adapter']}, {r['date']}: GEMV without / with {' + '.join(r['features'])} "
                      f"(`{r['profile']}` variants, one device, interleaved{'; quick smoke run' if r['quick'] else ''})", "",
                      "| GEMV (1 token) | " + " | ".join(f"{n}x{k}" for n, k in shapes) + " |", "|---|" + "---:|" * len(shapes)]
            for fmt in dict.fromkeys(row["format"] for row in r["gemv"]):
                cells = {(row["n"], row["k"]): f"{row['base_seconds'] * 1e6:.1f} / {row['seconds'] * 1e6:.1f} us ({row['speedup']:.2f}x)"
                         for row in r["gemv"] if row["format"] == fmt}
                lines.append(f"| {fmt} | " + " | ".join(cells.get(shape, "-") for shape in shapes) + " |")
            lines += ["", "(base / feature variant time per product; speedup = base / feature)", ""]
            continue
        lines += [f"### {r['engine']}, {r['adapter']}, {r['date']} ({'quick smoke run' if r['quick'] else 'full run'}, "
                  f"`{r['profile']}` variants)", "",
                  f"Copy bandwidth (bytes read + written): buffer copy **{r['copy_bandwidth'] / 1e12:.2f} TB/s**, "
                  f"compute-shader copy **{r['kernel_copy_bandwidth'] / 1e12:.2f} TB/s** (the larger is the roofline below).", "",
                  "| GEMV (1 token) | " + " | ".join(f"{n}x{k}" for n, k in _shapes(r['gemv'], ('n', 'k'))) + " |",
                  "|---|" + "---:|" * len(_shapes(r['gemv'], ('n', 'k')))]
        for fmt in dict.fromkeys(row["format"] for row in r["gemv"]):
            cells = [f"{row['seconds'] * 1e6:.1f} us, {100 * row['fraction_of_copy']:.0f}%" for row in r["gemv"] if row["format"] == fmt]
            lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
        lines += ["", "(time per product; % = weight bytes per second as a fraction of the copy bandwidth)", "",
                  "| GEMM | " + " | ".join(f"{m}x{n}x{k}" for m, n, k in _shapes(r['gemm'], ('m', 'n', 'k'))) + " |",
                  "|---|" + "---:|" * len(_shapes(r['gemm'], ('m', 'n', 'k')))]
        for fmt in dict.fromkeys(row["format"] for row in r["gemm"]):
            cells = [f"{row['tflops']:.2f} TFLOP/s" for row in r["gemm"] if row["format"] == fmt]
            lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _shapes(rows, keys):
    return list(dict.fromkeys(tuple(row[k] for k in keys) for row in rows))


def write_docs(path: Path, block: str) -> None:
    write_section(path, "bench_kernels", block, "## Kernels on a GPU (WebGPU through Dawn and wgpu-native)")


if __name__ == "__main__":
    raise SystemExit(main())
