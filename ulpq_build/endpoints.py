"""Which browsers a `verify` or `bench` run drives: local ones by name (`--browsers`), remote ones
by endpoint (`--remote [NAME=]URL`), each one BrowserSpec.

    --remote chromium=ws://host:3000/          Playwright connect(): a `playwright run-server`, a
                                               launchServer() endpoint or a grid's websocket; NAME
                                               is the browser type to connect with (chromium for
                                               Chrome and Edge too, firefox, webkit)
    --remote safari=http://mac.local:4444/     W3C WebDriver: safaridriver, Selenium Grid 4,
    --remote webdriver+https://hub/wd/hub      WebKitWebDriver, chromedriver, geckodriver; NAME
                                               (optional) picks capabilities from WEBDRIVER_BROWSERS,
                                               without it the driver starts its default browser

The URL may carry credentials (user:key@host); they are sent, never printed: `shown` drops
them and the query.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field

from ulpq_build.errors import UserError
from ulpq_build.serve import is_loopback

LOCAL_BROWSERS = ("chromium", "firefox", "webkit", "node")
PLAYWRIGHT_TYPES = ("chromium", "firefox", "webkit")
WEBGPU_FLAGS = ["--enable-unsafe-webgpu"]
FIREFOX_WEBGPU_PREFS = {"dom.webgpu.enabled": True, "gfx.webgpu.ignore-blocklist": True}
# NAME= of a WebDriver endpoint -> the capabilities that start that browser with WebGPU exposed.
# Selenium Grid matches nodes on browserName; chromedriver/msedgedriver/geckodriver read their
# vendor options; safaridriver needs nothing but the name (WebGPU is on in Safari 26).
WEBDRIVER_BROWSERS = {
    "chrome": {"browserName": "chrome", "goog:chromeOptions": {"args": WEBGPU_FLAGS}},
    "chromium": {"browserName": "chrome", "goog:chromeOptions": {"args": WEBGPU_FLAGS}},
    "edge": {"browserName": "MicrosoftEdge", "ms:edgeOptions": {"args": WEBGPU_FLAGS}},
    "firefox": {"browserName": "firefox", "moz:firefoxOptions": {"prefs": FIREFOX_WEBGPU_PREFS}},
    "safari": {"browserName": "safari"},
    "webkit": {},  # WebKitWebDriver / WPEWebDriver: the driver's own browser (MiniBrowser, cog)
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class BrowserSpec:
    name: str  # local browser; Playwright browser type; WebDriver name ("" = the driver's default)
    endpoint: str | None = None  # the URL as given (credentials included); None = this machine
    protocol: str = "local"  # local | playwright | webdriver
    capabilities: dict = field(default_factory=dict, compare=False, hash=False)  # WebDriver extras (--capabilities)
    label: str = ""  # how reports name it; unique within a run

    @property
    def remote(self) -> bool:
        return self.protocol != "local"

    @property
    def peer_host(self) -> str | None:
        return urllib.parse.urlsplit(self.endpoint).hostname if self.endpoint else None

    @property
    def shown(self) -> str:
        """The endpoint without credentials or query (BrowserStack-style URLs put keys in both)."""
        if not self.endpoint:
            return "local"
        p = urllib.parse.urlsplit(self.endpoint)
        host = p.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{p.port}" if p.port else "")
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path or "/", "", ""))


def parse_remote(text: str, capabilities: dict | None = None) -> BrowserSpec:
    """One --remote value, [NAME=]URL, checked before anything starts."""
    name, url = "", text.strip()
    head, sep, tail = url.partition("=")
    if sep and _NAME.fullmatch(head):  # a URL's own '=' comes after its scheme's ':'
        name, url = head.lower(), tail.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UserError(f"--remote {text}: not a URL ({exc}); give e.g. chromium=ws://host:3000/ or http://host:4444/") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise UserError(f"--remote {text}: the URL has no host; give e.g. chromium=ws://host:3000/ or http://host:4444/")
    if scheme in ("ws", "wss"):
        if name not in PLAYWRIGHT_TYPES:
            raise UserError(f"--remote {text}: a Playwright endpoint needs the browser type to connect with: "
                            f"{', '.join(f'{t}=' for t in PLAYWRIGHT_TYPES)} before the URL (chromium for Chrome and Edge)")
        return BrowserSpec(name, url, "playwright")
    if scheme in ("http", "https", "webdriver+http", "webdriver+https"):
        if name and name not in WEBDRIVER_BROWSERS:
            raise UserError(f"--remote {text}: unknown WebDriver browser {name!r}; choose from "
                            f"{', '.join(WEBDRIVER_BROWSERS)}, or give the URL alone for the driver's default browser")
        return BrowserSpec(name, url.removeprefix("webdriver+"), "webdriver", dict(capabilities or {}))
    raise UserError(f"--remote {text}: unknown scheme {scheme or '(none)'!r}; use ws:// or wss:// for Playwright, "
                    f"http:// or https:// (or webdriver+http://) for W3C WebDriver")


def parse_capabilities(text: str | None) -> dict:
    """--capabilities: a JSON object merged into every WebDriver session's alwaysMatch."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--capabilities: not JSON ({exc.msg} at character {exc.pos}); give an object, e.g. "
                        f"'{{\"platformName\": \"mac\"}}'") from None
    if not isinstance(value, dict):
        raise UserError("--capabilities: give a JSON object, e.g. '{\"platformName\": \"mac\"}'")
    return value


def browser_specs(names: list[str], remotes: list[str], capabilities: str | None = None) -> list[BrowserSpec]:
    """--browsers names then --remote endpoints, each labelled once (a second of the same name gets #2)."""
    unknown = [n for n in names if n not in LOCAL_BROWSERS]
    if unknown:
        raise UserError(f"--browsers: unknown browser {unknown[0]!r}; choose from {', '.join(LOCAL_BROWSERS)}, or "
                        f"reach another machine's browser with --remote")
    caps = parse_capabilities(capabilities)
    specs = [BrowserSpec(n) for n in names] + [parse_remote(r, caps) for r in remotes]
    if caps and not any(s.protocol == "webdriver" for s in specs):
        raise UserError("--capabilities: applies to WebDriver endpoints only; add --remote http://host:port/")
    out, seen = [], {}
    for s in specs:
        label = s.name if not s.remote else f"{s.name or 'webdriver'}@{s.shown.split('://', 1)[1].split('/', 1)[0]}"
        seen[label] = seen.get(label, 0) + 1
        out.append(BrowserSpec(s.name, s.endpoint, s.protocol, s.capabilities,
                               label if seen[label] == 1 else f"{label}#{seen[label]}"))
    return out


def page_base(spec: BrowserSpec, server) -> str:
    """Where `spec`'s browser opens the served folder: this machine's loopback URL for local browsers
    and for Playwright endpoints while the bundle is served on loopback (their connection tunnels
    it, see PlaywrightRemoteSession), else an address the remote machine can reach."""
    if not spec.remote or (spec.protocol == "playwright" and server.loopback_only and not server.public_url):
        return server.url
    return server.url_for(spec.peer_host)


def secure_origin_needed(page_url: str) -> str | None:
    """The origin a remote browser must be told to treat as secure (WebGPU exists only in secure
    contexts: https, or http on loopback), or None."""
    p = urllib.parse.urlsplit(page_url)
    if p.scheme == "https" or is_loopback(p.hostname or ""):
        return None
    return f"{p.scheme}://{p.netloc}"
