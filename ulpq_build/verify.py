"""`verify BUNDLE`: run the bundle in each browser and compare with the numpy reference over its
own weights; print a pass/fail table and which browser (version, user agent, endpoint) ran each
row; exit status 1 on any failure (a browser that cannot start, a page error, or numbers outside
the tolerance).

BUNDLE is a folder, served here for the run (on --host for remote browsers), or the URL of a
deployed bundle's manifest.json, whose files are fetched and checked to build the reference while
the browsers open the deployed page itself (remote_bundle.py)."""

from __future__ import annotations

import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ulpq_build.browser_check import CheckResult, check_in_browser, fixed_input
from ulpq_build.browsers import BrowserInfo, started
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.endpoints import BrowserSpec, browser_specs, page_base
from ulpq_build.errors import UserError
from ulpq_build.remote_bundle import deployed_bundle, is_url
from ulpq_build.serve import is_loopback, serving


@dataclass
class ServeOptions:
    """Where a local bundle is served for the run (--host, --port, --public-url)."""
    host: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None

    @property
    def default(self) -> bool:
        return self == ServeOptions()


@dataclass
class VerifyRun:
    target: str  # the folder or the deployed manifest's folder URL
    results: list[CheckResult] = field(default_factory=list)
    browsers: dict[str, BrowserInfo | str] = field(default_factory=dict)  # label -> info, or the endpoint that did not start
    pages: dict[str, str] = field(default_factory=dict)  # label -> the page URL its browser opened


@contextmanager
def _pages(target, specs: list[BrowserSpec], serve: ServeOptions, log):
    """(bundle, {label: page base URL}, hosts local browsers may reach) for the run."""
    if is_url(str(target)):
        if not serve.default:
            raise UserError(f"--host/--port/--public-url: {target} is already served where it is deployed; "
                            f"these options serve a local bundle folder")
        with deployed_bundle(str(target), log) as (bundle, base):
            yield bundle, {s.label: base for s in specs}, (urllib.parse.urlsplit(base).hostname,), base
        return
    bundle = load_bundle(Path(target))  # checks every shard's sha256 first
    with serving(Path(target), serve.host, serve.port, serve.public_url) as server:
        bases = {s.label: page_base(s, server) for s in specs}
        for s in specs:
            host = urllib.parse.urlsplit(bases[s.label]).hostname or ""
            if s.protocol == "webdriver" and is_loopback(host) and not is_loopback(s.peer_host or ""):
                log(f"note: {s.label} opens {bases[s.label]}, this machine's loopback: that works only through a "
                    f"tunnel (ssh -R); serve on a reachable address with --host (see docs/remote-browsers.md)")
        extra = () if server.loopback_only else (urllib.parse.urlsplit(server.url).hostname,)
        yield bundle, bases, extra, str(target)


def verify(target, specs: list[BrowserSpec], serve: ServeOptions | None = None, log=print) -> VerifyRun:
    serve = serve or ServeOptions()
    run = VerifyRun(str(target))
    with _pages(target, specs, serve, log) as (bundle, bases, allow_hosts, shown_target):
        run.target = shown_target
        prepared = fixed_input(bundle)
        page = bundle.manifest["runtime"]["page"]
        for spec in specs:
            log(f"{spec.label}: starting{'' if not spec.remote else ' at ' + spec.shown}...")
            with started(spec, bases[spec.label], allow_hosts) as (session, error):
                if error:
                    run.results.append(CheckResult(spec.label, "", error=error))
                    run.browsers[spec.label] = spec.shown
                    continue
                run.browsers[spec.label] = session.info
                run.pages[spec.label] = bases[spec.label] + page
                run.results.append(check_in_browser(session, bases[spec.label] + page, bundle, spec.label,
                                                    prepared=prepared))
    return run


def verify_bundle(folder: Path, browsers: list[str], log=print) -> list[CheckResult]:
    """The local browsers `browsers` on a local bundle folder."""
    return verify(folder, browser_specs(browsers, []), log=log).results


def format_table(results: list[CheckResult]) -> str:
    width = max([9, *(len(r.browser) for r in results)])
    lines = [f"{'browser':<{width}} {'path':<7} {'variant':<12} {'check':<18} {'value':>10}  result"]
    for r in results:
        value = "-" if r.value is None else f"{r.value:.6g}"
        status = "PASS" if r.passed else f"FAIL{': ' + r.error if r.error else ''}"
        lines.append(f"{r.browser:<{width}} {r.path or '-':<7} {r.variant or '-':<12} {r.metric or '-':<18} {value:>10}  {status}")
    return "\n".join(lines)


def format_browsers(run: VerifyRun) -> str:
    """Which browser ran each row: engine, version, endpoint, user agent."""
    lines = [f"bundle: {run.target}"]
    for label, info in run.browsers.items():
        lines.append(f"{label}: " + (f"{info.describe()}; opened {run.pages[label]}" if isinstance(info, BrowserInfo)
                                     else f"not started ({info})"))
    return "\n".join(lines)
