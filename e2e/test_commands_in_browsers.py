"""The `verify` and `bench` commands as a user runs them (subprocesses), in all three browsers.

`bench` runs on a small subset (the built-in ViT, two presets, one timed repeat) so the command,
its report and its browser checks cannot rot; the full tables come from the same command
(docs/benchmarks.md says how)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = "chromium,firefox,webkit"


def run_cli(*args, env_extra=None, timeout=1800):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ulpq_build", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def table_rows(stdout: str) -> dict[str, str]:
    """browser -> its line of verify's table."""
    rows = {}
    for line in stdout.splitlines():
        first = line.split(" ", 1)[0]
        if first in ("chromium", "firefox", "webkit") and ("PASS" in line or "FAIL" in line):
            rows[first] = line
    return rows


def test_verify_passes_in_every_browser(site):
    proc = run_cli("verify", site / "int4", "--browsers", BROWSERS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert set(rows) == {"chromium", "firefox", "webkit"}, proc.stdout
    assert all(line.rstrip().endswith("PASS") for line in rows.values()), proc.stdout
    assert "webgpu" in rows["chromium"] and "webgpu" in rows["firefox"], proc.stdout


def test_verify_exits_1_when_a_browser_fails(site, tmp_path):
    broken = tmp_path / "firefox"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    proc = run_cli("verify", site / "int2", "--browsers", "chromium,firefox",
                   env_extra={"ULPQ_FIREFOX": str(broken), "ULPQ_BROWSERS_MANAGED": "0"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert rows["chromium"].rstrip().endswith("PASS"), proc.stdout
    assert "FAIL" in rows["firefox"], proc.stdout


def test_verify_refuses_a_tampered_bundle(site):
    proc = run_cli("verify", site / "int4-tampered", "--browsers", "chromium")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "weights-000.bin" in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_quick_bench_writes_results_and_report(tmp_path):
    out = tmp_path / "bench"
    proc = run_cli("bench", "--model", "builtin:vit", "--formats", "int4,mixed-3", "--browsers", BROWSERS,
                   "--repeats", "1", "--out", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["architecture"] == "vit" and result["browsers"] == BROWSERS.split(",")
    assert 0.85 < result["float32"] < 0.92  # the built-in ViT's recorded test accuracy is 0.8848
    rows = {r["preset"]: r for r in result["rows"]}
    assert set(rows) == {"int4", "mixed-3"}
    assert abs(rows["mixed-3"]["bits_per_weight"] - 3) < 0.15, rows["mixed-3"]["bits_per_weight"]
    assert rows["int4"]["weight_bytes"] > rows["mixed-3"]["weight_bytes"]
    for row in rows.values():
        assert row["accuracy"]["metric"] == "Fashion-MNIST top-1" and row["accuracy"]["ratio"] > 95, row["accuracy"]
        assert [b["browser"] for b in row["browsers"]] == BROWSERS.split(",")
        for b in row["browsers"]:
            assert b["passed"], b
            assert b["median_ms"] > 0 and b["first_ms"] > 0, b
        paths = {b["browser"]: b["path"] for b in row["browsers"]}
        assert paths["chromium"] == "webgpu" and paths["firefox"] == "webgpu", paths
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 4, "the report should hold its charts"
    for browser in BROWSERS.split(","):
        shot = out / "screenshots" / f"{browser}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 2000, shot
        assert f"screenshots/{browser}.png" in report
