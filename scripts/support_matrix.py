#!/usr/bin/env python3
"""Generate docs/support-matrix.md: which kernel x format x profile compiles in naga and in Tint
and matches numpy when executed on lavapipe. It runs the kernel tests (tests/test_kernels.py,
tests/test_ops_kernels.py) and tabulates their outcomes, so the matrix is what the tests saw,
never typed by hand.

    python scripts/support_matrix.py --write docs/support-matrix.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ulpq_build.profiles import PROFILES  # noqa: E402

TEST_FILES = ["tests/test_kernels.py", "tests/test_ops_kernels.py"]
ENGINES = ("naga", "tint", "run")  # compile in naga, compile in Tint, execute on lavapipe (wgpu) vs numpy


def variants_by_key() -> dict:
    import test_kernels
    import test_ops_kernels

    table = {v.key: v for _, v in test_kernels.VARIANTS}
    table.update(dict(test_ops_kernels.ALL_VARIANTS))
    return table


def family(variant) -> str:
    opts = variant.opts
    if variant.kernel == "gemv":
        return "gemv (vec4)" if opts.get("vec4") else "gemv"
    if variant.kernel == "gemm":
        return f"gemm ({opts['size']} tiles)"
    return variant.kernel


def run_tests(junit: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", f"--junitxml={junit}", *TEST_FILES]
    return subprocess.run(cmd, cwd=ROOT).returncode


def outcomes(junit: Path) -> dict[tuple[str, str], bool]:
    """(variant key, engine) -> passed."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        ok = not any(child.tag in ("failure", "error", "skipped") for child in case)
        m = re.fullmatch(r"test_compiles\[(.+)-(naga|tint)\]", name)
        if m:
            result[(m.group(1), m.group(2))] = ok
            continue
        m = re.fullmatch(r"test_\w+\[(.+)\]", name)
        if m and not name.startswith(("test_epilogues", "test_scale_granularities")):
            result[(m.group(1), "run")] = ok
    return result


def render(results: dict, variants: dict) -> str:
    cells: dict = defaultdict(lambda: [0, 0])  # (family, format, profile, engine) -> [passed, total]
    for (key, engine), ok in results.items():
        variant = variants.get(key)
        if variant is None:
            continue
        fmt = variant.weight.format if variant.weight else "-"
        cell = cells[(family(variant), fmt, variant.profile, engine)]
        cell[0] += ok
        cell[1] += 1
    profiles = list(PROFILES)
    lines = ["# Kernel support matrix", "",
             f"Generated {datetime.date.today().isoformat()} by `python scripts/support_matrix.py --write docs/support-matrix.md` "
             f"on {platform.machine()} ({platform.system()}), from the outcomes of {', '.join(TEST_FILES)}.", "",
             "Each cell: **N** compiles in naga (wgpu-native, Firefox's compiler), **T** compiles in Tint (Dawn, Chrome's "
             "compiler; 512-thread variants as modules, since Dawn's driverless backend stops at 256), **R** executes on "
             "lavapipe through wgpu and matches numpy within the kernel's tolerance. A letter is shown when every variant "
             "of that cell (scale dtypes, zero points, options) passed; `x` marks a failure, `-` untested. Safari 512 "
             "variants execute here with the raised limit (on real Safari they are the intended path; WebKitGTK has no WebGPU).", ""]
    for fam in dict.fromkeys(k[0] for k in cells):
        lines += [f"## {fam}", "", "| format | " + " | ".join(f"{p} {PROFILES[p].workgroup_size}" for p in profiles) + " |",
                  "|---|" + ":-:|" * len(profiles)]
        for fmt in dict.fromkeys(k[1] for k in cells if k[0] == fam):
            row = []
            for p in profiles:
                marks = ""
                for engine, letter in zip(ENGINES, "NTR"):
                    passed, total = cells.get((fam, fmt, p, engine), (0, 0))
                    marks += "-" if total == 0 else (letter if passed == total else "x")
                row.append(marks)
            lines.append(f"| {fmt} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "support-matrix.md")
    parser.add_argument("--junit", type=Path, help="tabulate an existing junit XML instead of running the tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        junit = args.junit or Path(tmp) / "kernels.xml"
        status = 0 if args.junit else run_tests(junit)
        text = render(outcomes(junit), variants_by_key())
    args.write.write_text(text + "\n")
    print(f"wrote {args.write}; kernel tests exited {status}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
