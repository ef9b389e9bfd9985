"""`verify BUNDLE`: run the bundle in each browser and compare with the numpy reference over its
own weights; print a pass/fail table; exit status 1 on any failure (a browser that cannot start,
a page error, or numbers outside the tolerance)."""

from __future__ import annotations

from pathlib import Path

from ulpq_build.browser_check import CheckResult, check_in_browser, fixed_input
from ulpq_build.browsers import BROWSERS, launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.errors import UserError
from ulpq_build.serve import BundleServer


def verify_bundle(folder: Path, browsers: list[str], log=print) -> list[CheckResult]:
    unknown = [b for b in browsers if b not in BROWSERS]
    if unknown:
        raise UserError(f"--browsers: unknown browser {unknown[0]!r}; choose from {', '.join(BROWSERS)}")
    bundle = load_bundle(folder)  # checks every shard's sha256 first
    prepared = fixed_input(bundle)
    server = BundleServer(folder, 0).start_in_background()
    results = []
    try:
        for name in browsers:
            log(f"{name}: starting...")
            try:
                session = launch(name)
            except Exception as exc:
                results.append(CheckResult(name, "", error=f"cannot start: {str(exc).splitlines()[0]}"))
                continue
            try:
                results.append(check_in_browser(session, server.url + "index.html", bundle, name, prepared=prepared))
            finally:
                session.close()
    finally:
        server.shutdown()
        server.server_close()
    return results


def format_table(results: list[CheckResult]) -> str:
    lines = [f"{'browser':<9} {'path':<7} {'variant':<12} {'check':<18} {'value':>10}  result"]
    for r in results:
        value = "-" if r.value is None else f"{r.value:.6g}"
        status = "PASS" if r.passed else f"FAIL{': ' + r.error if r.error else ''}"
        lines.append(f"{r.browser:<9} {r.path or '-':<7} {r.variant or '-':<12} {r.metric or '-':<18} {value:>10}  {status}")
    return "\n".join(lines)
