"""What a command needs beyond the runtime dependencies (pyproject.toml's optional extras), and the
one line that says how to get it. `verify` and `bench` drive browsers through Playwright, which the
`browsers` extra installs; they check for it before any work starts, so a missing package is one
line and exit status 2, not a failed row per browser after minutes of building."""

from __future__ import annotations

from ulpq_build.errors import UserError

PLAYWRIGHT_MISSING = "playwright is not installed: pip install 'ulpq_build[browsers]'"


def needs_playwright(spec) -> bool:
    """Whether a browser of `--browsers` / `--remote` (an endpoints.BrowserSpec or a local name) runs
    through Playwright: local Chromium and Firefox, and Playwright servers. Local WebKit falls back
    to WebKitWebDriver and Node runs itself, so neither needs it; nor do WebDriver endpoints."""
    name, protocol = (spec, "local") if isinstance(spec, str) else (spec.name, spec.protocol)
    return protocol == "playwright" or (protocol == "local" and name in ("chromium", "firefox"))


def require_playwright() -> None:
    try:
        import playwright  # noqa: F401  (the browsers extra)
    except ImportError:
        raise UserError(PLAYWRIGHT_MISSING) from None


def require_for_browsers(specs) -> None:
    """One line and exit status 2 when a chosen browser needs Playwright and it is not installed."""
    if any(needs_playwright(s) for s in specs):
        require_playwright()
