#!/usr/bin/env python3
"""The generative decoders' WGSL kernels (templates/decoder/) on one WebGPU engine: each first checked
against numpy (decoder_reference.py) at a real model's shape on the same device, then timed the way
scripts/bench_kernels.py times (its Timer: dispatches in one command buffer until a trial lasts 25 ms,
best of 5). Shapes: Llama-3.2-1B (32 heads, 8 kv heads, head_dim 64, hidden 2048, vocabulary 128256)
and Qwen2.5-0.5B's attention (14 heads, 2 kv heads). The decode step's attention reads every cached
key and value once: its effective bandwidth (K + V bytes / time) is given beside the copy bandwidth.
Meant for the lent GPU machine; `--quick` checks the script on lavapipe.

    python scripts/bench_decoder_kernels.py --engine dawn --json out.json

--baseline-template FILE also times the decode step's attention (cache_attention_split) rendered from
FILE instead of templates/decoder/cache_attention.wgsl.jinja (an earlier version, e.g. from `git
show`), checked the same way, in the same run: a change's speed-up measured side by side.
--baseline-step-template FILE does the same for the one-dispatch step attention
(rotary_step_attention, templates/decoder/step_attention.wgsl.jinja), timed at the cache fills a
generation passes through; `--only step` times that kernel alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import jinja2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_kernels import Timer  # noqa: E402
from ulpq_build.decoder_reference import causal_attention, rms_norm, rotary  # noqa: E402
from ulpq_build.kernels import KernelVariant, argmax_split, check_cache_attention_dims, decode_chunks  # noqa: E402
from ulpq_build import kernels  # noqa: E402
from ulpq_build.native_webgpu import KernelRunner, adapter_summary, compile_shader, engine_module, request_device  # noqa: E402
from ulpq_build.reference import relative_error  # noqa: E402

SHAPES = {"llama-3.2-1b": (32, 8, 64), "qwen2.5-0.5b": (14, 2, 64)}  # heads, kv heads, head_dim


def attention_inputs(rng, batch, seq, heads, kv, d, start, capacity):
    q = rng.standard_normal((batch * seq, heads * d)).astype(np.float32)
    k = rng.standard_normal((batch, kv, capacity, d)).astype(np.float32)
    v = rng.standard_normal((batch, kv, capacity, d)).astype(np.float32)
    keep = np.ones((batch, capacity), np.float32)
    dims = {"rows": batch * seq, "seq": seq, "heads": heads, "kv_heads": kv, "head_dim": d, "scale": 1 / math.sqrt(d),
            "start": start, "capacity": capacity, "q_stride": heads * d, "q_off": 0, "cache_off": 0}
    return {"q": q, "k_cache": k, "v_cache": v, "keep": keep}, dims


def attention_reference(arrays, dims):
    b, s, h, d = dims["rows"] // dims["seq"], dims["seq"], dims["heads"], dims["head_dim"]
    slots = dims["start"] + s
    q = arrays["q"].astype(np.float64).reshape(b, s, h, d).transpose(0, 2, 1, 3)
    k, v = (arrays[n][:, :, :slots].astype(np.float64) for n in ("k_cache", "v_cache"))
    return causal_attention(q, k, v, arrays["keep"][:, :slots].astype(np.float64), dims["start"]).reshape(b * s, h * d)


class BaselineRunner(KernelRunner):
    """A KernelRunner whose shaders of one template (by default the cache attention's) come from another file."""

    def __init__(self, device, template: Path, name: str = "decoder/cache_attention.wgsl.jinja"):
        super().__init__(device)
        base = kernels._environment()
        loader = jinja2.ChoiceLoader([jinja2.DictLoader({name: template.read_text()}), base.loader])
        self.environment = base.overlay(loader=loader)

    def pipeline(self, variant):
        if variant.key not in self._pipelines:
            original = kernels._environment
            kernels._environment = lambda: self.environment  # render() looks its environment up per call
            try:
                code = kernels.render(variant)
            finally:
                kernels._environment = original
            self._pipelines[variant.key] = compile_shader(self.device, code)
        return self._pipelines[variant.key]


def decode_attention(runner, profile, arrays, dims, chunk):
    split = KernelVariant.make("cache_attention_split", profile)
    combine = KernelVariant.make("attention_combine", profile)
    dims = {**dims, "chunk": chunk, "chunks": math.ceil((dims["start"] + dims["seq"]) / chunk)}
    check_cache_attention_dims(split, dims)
    parts = dims["rows"] * dims["heads"] * dims["chunks"]
    got = runner.run(split, arrays, dims, {"part_o": parts * dims["head_dim"], "part_ml": parts * 2})
    cdims = {"rows": dims["rows"], "heads": dims["heads"], "head_dim": dims["head_dim"], "chunks": dims["chunks"],
             "count": dims["rows"] * dims["heads"] * dims["head_dim"]}
    y = runner.run(combine, got, cdims, {"y": cdims["count"]})["y"]
    return split, combine, dims, cdims, y


def llama_inv_freq(d):
    """Llama-3's rotary frequencies (theta 500000) for head_dim d."""
    return (1.0 / 500000.0 ** (np.arange(0, d, 2) / d)).astype(np.float32)


def step_attention_case(rng, heads, kv, d, start, capacity):
    """Inputs of rotary_step_attention for one sequence whose new token goes to slot `start`, and the
    reference output (tests/test_decoder_kernels.py's test_step_attention, without padding)."""
    qkv = rng.standard_normal((1, (heads + 2 * kv) * d)).astype(np.float32)
    positions = np.array([start], np.uint32)
    freq = llama_inv_freq(d)
    k = rng.standard_normal((1, kv, capacity, d)).astype(np.float32)
    v = rng.standard_normal((1, kv, capacity, d)).astype(np.float32)
    keep = np.ones((1, capacity), np.float32)
    q, k_new, v_new = (part.astype(np.float64).reshape(1, 1, n, d).transpose(0, 2, 1, 3)
                       for part, n in zip(np.split(qkv, [heads * d, (heads + kv) * d], axis=1), (heads, kv, kv)))
    q, k_new = (rotary(a, positions.reshape(1, 1).astype(np.float64), freq.astype(np.float64)) for a in (q, k_new))
    written = [c[:, :, :start + 1].astype(np.float64) for c in (k, v)]
    written[0][:, :, start] = k_new[:, :, 0]
    written[1][:, :, start] = v_new[:, :, 0]
    want = causal_attention(q, *written, keep[:, :start + 1].astype(np.float64), start).reshape(heads * d)
    dims = {"rows": 1, "heads": heads, "kv_heads": kv, "head_dim": d, "scale": 1 / math.sqrt(d), "start": start,
            "capacity": capacity, "cache_off": 0}
    arrays = {"qkv": qkv, "positions": positions, "inv_freq": freq, "k_cache": k.ravel(), "v_cache": v.ravel(), "keep": keep}
    return arrays, dims, want


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("dawn", "wgpu"), required=True)
    parser.add_argument("--profile", default="chrome")
    parser.add_argument("--quick", action="store_true", help="small shapes, no minimum trial time (lavapipe)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("argmax", "step"), help="time only these kernels")
    parser.add_argument("--baseline-template", type=Path, help="also time cache_attention_split from this template file")
    parser.add_argument("--baseline-step-template", type=Path,
                        help="also time rotary_step_attention from this template file (side by side, interleaved)")
    parser.add_argument("--step-starts", help="the slots (comma-separated) at which the step attention is timed "
                        "(one per process on Dawn: it slows down after about six timings in one process)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    adapter = engine_module(args.engine).gpu.request_adapter_sync(power_preference="high-performance")
    big = int(min(adapter.limits["max-storage-buffer-binding-size"], adapter.limits["max-buffer-size"], 2**31 - 4))
    device = request_device(args.engine, {"maxStorageBufferBindingSize": big, "maxBufferSize": big,
                                          "maxComputeInvocationsPerWorkgroup": 512, "maxComputeWorkgroupSizeX": 512})
    runner = KernelRunner(device)
    timer = Timer(runner)
    if args.quick:
        timer.min_seconds = 0.0
    trials = 2 if args.quick else 5
    result = {"engine": args.engine, "adapter": adapter_summary(device), "profile": args.profile, "rows": []}
    print(result["adapter"], args.engine, flush=True)
    copy_bytes = 1 << (24 if args.quick else 30)
    result["copy_bandwidth"] = timer.copy_bandwidth(copy_bytes, 4 if args.quick else 20, trials)
    print(f"copy bandwidth {result['copy_bandwidth'] / 1e12:.2f} TB/s", flush=True)

    def row(what, seconds, nbytes=None, error=None):
        entry = {"what": what, "us": seconds * 1e6, "bytes": nbytes, "error": error}
        if nbytes:
            entry["tb_s"] = nbytes / seconds / 1e12
            entry["of_copy"] = nbytes / seconds / result["copy_bandwidth"]
        result["rows"].append(entry)
        extra = f"  {entry['tb_s']:.2f} TB/s ({entry['of_copy']:.0%} of copy)" if nbytes else ""
        print(f"{what:60s} {entry['us']:9.1f} us{extra}  error {error:.2g}" if error is not None else
              f"{what:60s} {entry['us']:9.1f} us{extra}", flush=True)

    runners = [("", runner, timer)]
    if args.baseline_template:
        baseline = Timer(BaselineRunner(device, args.baseline_template))
        baseline.min_seconds = timer.min_seconds
        runners.append(("baseline ", baseline.runner, baseline))
    step_runners = [("", runner, timer)]
    if args.baseline_step_template:
        baseline = Timer(BaselineRunner(device, args.baseline_step_template, "decoder/step_attention.wgsl.jinja"))
        baseline.min_seconds = timer.min_seconds
        step_runners.append(("baseline ", baseline.runner, baseline))
    heads, kv, d = SHAPES["llama-3.2-1b"]
    starts = [int(v) for v in args.step_starts.split(",")] if args.step_starts else (16, 48, 80) if args.quick else (16, 48, 80, 200, 511)
    for start in () if args.only not in (None, "step") else starts:
        arrays, dims, want = step_attention_case(rng, heads, kv, d, start, 1024)
        variant = KernelVariant.make("rotary_step_attention", args.profile)
        kernels.check_step_attention_dims(variant, dims)
        for _ in range(2):  # the two templates interleaved twice: the machine's drift shows as a difference between rounds
            for which, r, tm in step_runners:
                y = r.run(variant, arrays, dims, {"y": heads * d})["y"]
                error = relative_error(y, want)
                if not error < 1e-5:
                    raise SystemExit(f"{which}step attention at slot {start}: relative error {error:.3g}")
                t = tm.kernel(variant, arrays, dims, {"y": heads * d}, 8, trials)
                row(f"{which}llama-3.2-1b rotary_step_attention, {start + 1} slots", t, 2 * kv * (start + 1) * d * 4, error)

    lengths = (100, 300) if args.quick else (512, 2048, 8192, 32768)
    for name, (heads, kv, d) in SHAPES.items() if not args.only else ():
        for batch in (1, 4):
            for length in lengths:
                arrays, dims = attention_inputs(rng, batch, 1, heads, kv, d, length - 1, length)
                want = attention_reference(arrays, dims) if length <= 8192 else None
                rule = decode_chunks(KernelVariant.make("cache_attention_split", args.profile), length, kv, batch)[0]
                for chunk in dict.fromkeys((64, 256, rule)):  # the rule's pick once, if it is 64 or 256
                    for which, r, tm in runners:
                        split, combine, sdims, cdims, y = decode_attention(r, args.profile, arrays, dims, chunk)
                        error = relative_error(y, want.ravel()) if want is not None else None
                        if error is not None and not error < 1e-5:
                            raise SystemExit(f"{which}{name} decode attention {batch}x{length}: relative error {error:.3g}")
                        parts = sdims["rows"] * heads * sdims["chunks"]
                        t = tm.kernel(split, arrays, sdims, {"part_o": parts * d, "part_ml": parts * 2}, 4, trials)
                        empty = {"part_o": np.zeros(parts * d, np.float32), "part_ml": np.zeros(parts * 2, np.float32)}
                        t += tm.kernel(combine, empty, cdims, {"y": cdims["count"]}, 4, trials)
                        kv_bytes = 2 * batch * kv * length * d * 4
                        label = f"chunk {chunk}" + (" (decode_chunks)" if chunk == rule else "")
                        row(f"{which}{name} decode attention b{batch} L{length} {label}", t, kv_bytes, error)

    heads, kv, d = SHAPES["llama-3.2-1b"]
    for seq in () if args.only else (17,) if args.quick else (128, 512):
        arrays, dims = attention_inputs(rng, 1, seq, heads, kv, d, 0, seq)
        variant = KernelVariant.make("cache_attention", args.profile)
        dims.update(chunk=seq, chunks=1)
        check_cache_attention_dims(variant, dims)
        y = runner.run(variant, arrays, dims, {"y": seq * heads * d})["y"]
        error = relative_error(y, attention_reference(arrays, dims).ravel())
        row(f"llama-3.2-1b prefill attention 1x{seq}", timer.kernel(variant, arrays, dims, {"y": seq * heads * d}, 2, trials),
            None, error)

    inv_freq = llama_inv_freq(d)
    for rows in () if args.only else (1, 512):
        capacity = 8192
        qkv = rng.standard_normal((rows, (heads + 2 * kv) * d)).astype(np.float32)
        positions = rng.integers(0, 8000, rows).astype(np.uint32)
        dims = {"rows": rows, "seq": rows, "heads": heads, "kv_heads": kv, "head_dim": d, "start": 0, "capacity": capacity,
                "cache_off": 0, "count": rows * (heads + 2 * kv) * d // 2}
        variant = KernelVariant.make("rotary_cache", args.profile)
        cache = np.zeros(kv * capacity * d, np.float32)
        arrays = {"qkv": qkv, "positions": positions, "inv_freq": inv_freq}
        got = runner.run(variant, {**arrays, "k_cache": cache, "v_cache": cache}, dims, {"q": rows * heads * d})
        want = rotary(qkv[:, :heads * d].astype(np.float64).reshape(1, rows, heads, d).transpose(0, 2, 1, 3),
                      positions.reshape(1, rows).astype(np.float64), inv_freq.astype(np.float64))
        error = relative_error(got["q"], want.transpose(0, 2, 1, 3).ravel())
        t = timer.kernel(variant, {**arrays, "k_cache": cache, "v_cache": cache}, dims, {"q": rows * heads * d}, 4, trials)
        row(f"llama-3.2-1b rotary_cache {rows} rows (positions < 8000)", t, None, error)

    for rows in () if args.only else (1, 512):
        cols = 2048
        variant = KernelVariant.make("rmsnorm", args.profile, residual=True)
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        stream = rng.standard_normal((rows, cols)).astype(np.float32)
        gamma = rng.standard_normal(cols).astype(np.float32)
        got = runner.run(variant, {"x": x, "residual": stream, "gamma": gamma}, {"rows": rows, "cols": cols, "eps": 1e-5},
                         {"y": rows * cols})
        error = relative_error(got["y"], rms_norm((x + stream).astype(np.float64), gamma, 1e-5).ravel())
        t = timer.kernel(variant, {"x": x, "residual": stream, "gamma": gamma}, {"rows": rows, "cols": cols, "eps": 1e-5},
                         {"y": rows * cols}, 4, trials)
        row(f"rmsnorm + residual {rows} x {cols}", t, None, error)

    vocab = 128256
    for rows in (1, 4) if args.only in (None, "argmax") else ():
        logits = rng.standard_normal((rows, vocab)).astype(np.float32)
        want = logits.argmax(axis=1).tolist()
        variant = KernelVariant.make("argmax", args.profile, indices=False)
        dims = {"rows": rows, "cols": vocab, "row_stride": vocab, "row_off": 0}
        got = runner.run(variant, {"x": logits}, dims, {"y": rows})["y"].view(np.uint32)
        if got.tolist() != want:
            raise SystemExit(f"argmax: {got.tolist()} != {want}")
        row(f"argmax {rows} x {vocab}, one workgroup per row", timer.kernel(variant, {"x": logits}, dims, {"y": rows}, 4, trials),
            logits.nbytes, 0.0)
        first = KernelVariant.make("argmax_parts", args.profile)
        finish = KernelVariant.make("argmax", args.profile, indices=True)
        parts, span = argmax_split(first, vocab)
        pdims = {**dims, "parts": parts, "span": span}
        part = runner.run(first, {"x": logits}, pdims, {"part_value": rows * parts, "part_index": rows * parts})
        fdims = {"rows": rows, "cols": parts, "row_stride": parts, "row_off": 0}
        stage2 = {"x": part["part_value"], "indices": part["part_index"]}
        got = runner.run(finish, stage2, fdims, {"y": rows})["y"].view(np.uint32)
        if got.tolist() != want:
            raise SystemExit(f"argmax in two stages: {got.tolist()} != {want}")
        t = timer.kernel(first, {"x": logits}, pdims, {"part_value": rows * parts, "part_index": rows * parts}, 4, trials)
        t += timer.kernel(finish, stage2, fdims, {"y": rows}, 4, trials)
        row(f"argmax {rows} x {vocab}, argmax_parts ({parts} parts) + argmax", t, logits.nbytes, 0.0)

    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
