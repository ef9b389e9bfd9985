"""`verify BUNDLE`: run the bundle in each browser and compare with the numpy reference over its
own weights; print a pass/fail table; exit status 1 on any failure (a browser that cannot start,
a page error, or numbers outside the tolerance)."""

from __future__ import annotations

from pathlib import Path

from ulpq_build.browser_check import CheckResult, check_in_browser, fixed_input
from ulpq_build.browsers import check_browser_names, started
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.serve import serving


def verify_bundle(folder: Path, browsers: list[str], log=print) -> list[CheckResult]:
    check_browser_names(browsers)
    bundle = load_bundle(folder)  # checks every shard's sha256 first
    prepared = fixed_input(bundle)
    results = []
    with serving(folder) as server:
        for name in browsers:
            log(f"{name}: starting...")
            with started(name) as (session, error):
                results.append(CheckResult(name, "", error=error) if error else
                               check_in_browser(session, server.url + "index.html", bundle, name, prepared=prepared))
    return results


def format_table(results: list[CheckResult]) -> str:
    lines = [f"{'browser':<9} {'path':<7} {'variant':<12} {'check':<18} {'value':>10}  result"]
    for r in results:
        value = "-" if r.value is None else f"{r.value:.6g}"
        status = "PASS" if r.passed else f"FAIL{': ' + r.error if r.error else ''}"
        lines.append(f"{r.browser:<9} {r.path or '-':<7} {r.variant or '-':<12} {r.metric or '-':<18} {value:>10}  {status}")
    return "\n".join(lines)
