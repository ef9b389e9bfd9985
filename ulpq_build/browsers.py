"""Drive real browsers: Chromium and Firefox through Playwright, WebKitGTK through its own
WebDriver (W3C classic, spoken here with the standard library) under Xvfb; and `node`, Node.js
running the bundle's own runtime through its node.js (WebGPU from the npm package `webgpu`,
Dawn, where it finds an adapter, else the CPU path).

Executables are configurable (environment variables below); the defaults are Debian's system
browsers, and where Playwright-managed browsers are installed (`playwright install` on a
laptop) those are used instead, WebKit included.

    ULPQ_CHROMIUM        Chromium executable        (default /usr/lib/chromium/chromium)
    ULPQ_CHROMIUM_FLAGS  extra Chromium command-line flags, space-separated (e.g. --js-flags=--expose-gc,
                         which the CPU benchmark sets to measure the JS heap after a garbage collection)
    ULPQ_FIREFOX         Firefox executable         (default /usr/bin/firefox-esr)
    ULPQ_WEBKIT_DRIVER   WebKitWebDriver executable (default /usr/bin/WebKitWebDriver)
    ULPQ_WEBKIT_BROWSER  browser the driver starts  (default Debian's MiniBrowser)
    ULPQ_BROWSERS_MANAGED=0  ignore Playwright-managed browsers even where installed
    ULPQ_NODE            Node.js executable         (default: node on PATH)
    ULPQ_NODE_MODULES    folder holding the npm package webgpu (default the checkout's .node/node_modules,
                         where scripts/setup.sh installs it; NODE_PATH is kept too)
    ULPQ_MESA            an unpacked Mesa >= 25 whose lavapipe Dawn accepts (default the checkout's .mesa/
                         where scripts/setup.sh unpacks bookworm-backports' one; `system` = the system's drivers)

Remote browsers (`verify --remote`, see endpoints.py): PlaywrightRemoteSession connects to a
Playwright server (`playwright run-server`, launchServer(), a grid's websocket); WebDriverSession
speaks W3C WebDriver to any driver URL (safaridriver, Selenium Grid 4, WebKitWebDriver): the local
WebKit is the same client talking to a WebKitWebDriver this module starts.

Every session offers the same two calls: `goto(url)` and `evaluate(js_function_source, arg)`,
where the source is an (async) arrow function taking one argument; its resolved value comes
back as JSON; and `info`, a BrowserInfo naming the browser, its version, user agent and endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ulpq_build.endpoints import (FIREFOX_WEBGPU_PREFS, LOCAL_BROWSERS, WEBDRIVER_BROWSERS, BrowserSpec,
                                  secure_origin_needed)
from ulpq_build.errors import UserError
from ulpq_build.extras import PLAYWRIGHT_MISSING
from ulpq_build.serve import is_loopback

BROWSERS = LOCAL_BROWSERS
DEBIAN_PATHS = {
    "chromium": "/usr/lib/chromium/chromium",
    "firefox": "/usr/bin/firefox-esr",
    "webkit_driver": "/usr/bin/WebKitWebDriver",
    "webkit_browser": "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
}
# Keep browser traffic on this machine: everything but loopback goes to a dead proxy.
LOCAL_ONLY_PROXY = {"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"}
FIREFOX_PREFS = FIREFOX_WEBGPU_PREFS
CHROMIUM_ARGS = ["--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
CHECKOUT = Path(__file__).resolve().parent.parent
INSTALL_HINT = ("install the browsers with `apt-get install -y chromium firefox-esr mesa-vulkan-drivers "
                "webkit2gtk-driver xvfb xauth` (or run .ci/run)")


class BrowserError(RuntimeError):
    """A browser could not be started or a page call failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _managed_allowed() -> bool:
    return os.environ.get("ULPQ_BROWSERS_MANAGED", "1") != "0"


def _managed_executable(browser_type) -> str | None:
    """The Playwright-managed executable of this type, if one is installed."""
    try:
        path = browser_type.executable_path
    except Exception:  # Playwright raises when the registry has no such browser
        return None
    return path if path and Path(path).exists() else None


@dataclass
class BrowserInfo:
    name: str
    engine: str
    executable: str
    version: str
    managed: bool  # a Playwright-managed build (else a system browser)
    endpoint: str = "local"  # a remote endpoint without credentials, or "local"
    user_agent: str | None = None  # navigator.userAgent as the browser reports it

    def describe(self) -> str:
        where = "this machine" if self.endpoint == "local" else self.endpoint
        return f"{self.engine} {self.version} at {where}; user agent: {self.user_agent or 'unknown'}"


def _user_agent(session) -> str | None:
    try:
        return session.evaluate("() => navigator.userAgent", timeout_s=60)
    except Exception:  # a browser without a page yet (or Node) has none to report; not a failure
        return None


class _SharedPlaywright:
    """Playwright's sync API allows one driver per thread: every session shares it, and the last
    one to close stops it."""

    driver = None
    users = 0

    @classmethod
    def acquire(cls):
        if cls.driver is None:
            try:
                from playwright.sync_api import sync_playwright
            except ImportError:
                raise UserError(PLAYWRIGHT_MISSING) from None
            cls.driver = sync_playwright().start()
        cls.users += 1
        return cls.driver

    @classmethod
    def release(cls):
        cls.users -= 1
        if cls.users == 0 and cls.driver is not None:
            cls.driver.stop()
            cls.driver = None


class PlaywrightSession:
    """Chromium or Firefox under Playwright: one browser, one page, reused across calls."""

    def __init__(self, name: str, headless: bool = True, allow_hosts: tuple[str, ...] = ()):
        self.name = name
        self._allow_hosts = allow_hosts
        self._pw = _SharedPlaywright.acquire()
        self._browser = None
        try:
            self._browser, self.info = self._launch(headless)
            self._context = self._browser.new_context(**self._context_options())
            self.page = self._context.new_page()
            self.console: list[str] = []
            self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
            self.page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
            self.info.user_agent = _user_agent(self)
        except BaseException:
            if self._browser is not None:
                self._browser.close()
            _SharedPlaywright.release()
            raise

    def _context_options(self) -> dict:
        """Keep traffic on this machine, plus the hosts a run needs (a deployed bundle's)."""
        extra = [h for h in self._allow_hosts if h not in ("127.0.0.1", "localhost")]
        return {"proxy": {**LOCAL_ONLY_PROXY, "bypass": ",".join([LOCAL_ONLY_PROXY["bypass"], *extra])}}

    def _launch(self, headless: bool):
        bt = getattr(self._pw, self.name)
        managed = _managed_executable(bt) if _managed_allowed() else None
        env_key = f"ULPQ_{self.name.upper()}"
        executable = os.environ.get(env_key) or managed or DEBIAN_PATHS[self.name]
        if not Path(executable).exists():
            raise BrowserError(f"{self.name}: no executable at {executable}; set {env_key} or {INSTALL_HINT}")
        is_managed = executable == managed
        if self.name == "chromium":
            extra = os.environ.get("ULPQ_CHROMIUM_FLAGS", "").split()
            browser = bt.launch(executable_path=executable, headless=headless, args=CHROMIUM_ARGS + extra)
        else:
            kwargs = {} if is_managed else {"channel": "moz-firefox"}
            browser = bt.launch(executable_path=executable, headless=headless, firefox_user_prefs=FIREFOX_PREFS, **kwargs)
        engine = {"chromium": "Blink/Dawn", "firefox": "Gecko/wgpu"}[self.name]
        return browser, BrowserInfo(self.name, engine, executable, browser.version, is_managed)

    def goto(self, url: str) -> None:
        self.page.goto(url, wait_until="load")

    def evaluate(self, source: str, arg=None, timeout_s: float = 300):
        self.page.set_default_timeout(timeout_s * 1000)
        return self.page.evaluate(source, arg)

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        try:
            self._browser.close()
        finally:
            _SharedPlaywright.release()


class PlaywrightWebKitSession(PlaywrightSession):
    """Playwright-managed WebKit, where installed (a laptop after `playwright install webkit`)."""

    def _launch(self, headless: bool):
        bt = self._pw.webkit
        executable = _managed_executable(bt)
        browser = bt.launch(headless=headless)
        return browser, BrowserInfo("webkit", "WebKit (Playwright build)", executable, browser.version, True)


class PlaywrightRemoteSession(PlaywrightSession):
    """A browser on a Playwright server, through BrowserType.connect().

    Launch options travel in the `x-playwright-launch-options` header (how Playwright's own test
    runner passes them to `run-server`): the WebGPU flags or prefs, merged under any the URL's
    `launch-options` query gives (the URL wins; e.g. an executablePath on the server machine). A
    server started without `--unsafe` drops args, prefs and executablePath and launches its own
    Playwright-managed browser.

    While the bundle is served on this machine's loopback, `expose_network="<loopback>"` tunnels
    the remote browser's requests for 127.0.0.1 back here through the Playwright connection, so
    the page stays a secure context (WebGPU) and no port is opened (run-server honours it; a
    launchServer() endpoint or grid may not: serve on a reachable address with --host there)."""

    def __init__(self, spec: BrowserSpec, page_base: str, headless: bool = True):
        self.spec, self._page_base = spec, page_base
        super().__init__(spec.name, headless)

    def _launch(self, headless: bool):
        bt = getattr(self._pw, self.spec.name)
        parts = urllib.parse.urlsplit(self.spec.endpoint)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        given = {}
        for key, value in query:
            if key == "launch-options":
                try:
                    given = json.loads(value)
                except json.JSONDecodeError:
                    raise BrowserError(f"{self.spec.label}: the URL's launch-options is not JSON") from None
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(
            [(k, v) for k, v in query if k != "launch-options"])))
        origin = secure_origin_needed(self._page_base)
        options = {"headless": headless}
        if self.spec.name == "chromium":
            options["args"] = CHROMIUM_ARGS + ([f"--unsafely-treat-insecure-origin-as-secure={origin}"] if origin else [])
        elif self.spec.name == "firefox":
            host = urllib.parse.urlsplit(self._page_base).hostname
            options["firefoxUserPrefs"] = {**FIREFOX_PREFS, **({"dom.securecontext.allowlist": host} if origin else {})}
        options.update(given)
        loopback = is_loopback(urllib.parse.urlsplit(self._page_base).hostname or "")
        browser = bt.connect(url, timeout=120_000, headers={"x-playwright-launch-options": json.dumps(options)},
                             expose_network="<loopback>" if loopback else None)
        engine = {"chromium": "Chromium", "firefox": "Firefox", "webkit": "WebKit"}[self.spec.name]
        return browser, BrowserInfo(self.spec.label, f"{engine} (Playwright connect)", self.spec.shown, browser.version,
                                    False, endpoint=self.spec.shown)

    def _context_options(self) -> dict:
        return {}  # the remote machine's network; a context proxy would also bypass the loopback tunnel


def _merge(base: dict, extra: dict) -> dict:
    """Capabilities: `extra` over `base`, vendor option objects merged one level down."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class WebDriverSession:
    """A W3C WebDriver (classic) session over HTTP: one client for safaridriver, Selenium Grid 4,
    WebKitWebDriver, chromedriver, msedgedriver and geckodriver.

    Spoken with the standard library rather than through selenium: the five commands used here
    (new session, timeouts, navigate, execute async script, screenshot) are a JSON request each,
    while selenium is a large dependency whose Selenium Manager tries to download drivers and
    browsers, which must never happen on machines without network (see docs/remote-browsers.md).
    Credentials in the URL (https://user:key@hub/wd/hub) become a Basic Authorization header."""

    def __init__(self, url: str, capabilities: dict, label: str, shown: str, owner=None, ready_s: float = 15):
        self.name, self._owner, self._label = label, owner, label
        parts = urllib.parse.urlsplit(url)
        self._auth = None
        if parts.username:
            import base64

            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._shown = shown
        self.console: list[str] = []
        self._session = None
        try:
            self._wait_ready(ready_s)
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities, "firstMatch": [{}]}},
                               timeout=300)
            self._session = value["sessionId"]
            c = value.get("capabilities", {})
            engine = " on ".join(str(x) for x in (c.get("browserName", "?"), c.get("platformName")) if x)
            self.info = BrowserInfo(label, f"{engine} (WebDriver)", shown, c.get("browserVersion", "?"), False,
                                    endpoint=shown)
            self._call("POST", f"/session/{self._session}/timeouts", {"script": 300_000, "pageLoad": 300_000})
            self.info.user_agent = _user_agent(self)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, seconds: float) -> None:
        """A driver just started answers /status a moment later; a dead URL fails after `seconds`."""
        deadline = time.time() + seconds
        while True:
            try:
                self._call("GET", "/status", timeout=5)
                return
            except BrowserError as exc:
                if "cannot reach" not in str(exc) or time.time() > deadline:
                    raise
                time.sleep(0.3)

    def _call(self, method: str, path: str, body=None, timeout: float = 330):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self._base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                value = json.loads(exc.read() or b"{}").get("value", {})
            except (ValueError, AttributeError):
                value = {}
            value = value if isinstance(value, dict) else {}
            raise BrowserError(f"{self._label}: {value.get('error', f'HTTP {exc.code}')}: "
                               f"{str(value.get('message', exc.reason)).splitlines()[0] if value.get('message', exc.reason) else ''}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise BrowserError(f"{self._label}: cannot reach the WebDriver endpoint {self._shown} ({reason})") from None
        except ValueError:
            raise BrowserError(f"{self._label}: {self._shown} did not answer with WebDriver JSON") from None
        if isinstance(payload, dict) and "sessionId" in payload and path == "/session" and "value" in payload \
                and "sessionId" not in (payload["value"] or {}):  # a JSON-wire-era grid: the id at the top
            return {"sessionId": payload["sessionId"], "capabilities": payload["value"] or {}}
        return payload.get("value") if isinstance(payload, dict) else None

    def goto(self, url: str) -> None:
        self._call("POST", f"/session/{self._session}/url", {"url": url})

    def evaluate(self, source: str, arg=None, timeout_s: float = 300):
        script = ("const done = arguments[arguments.length - 1];"
                  f"Promise.resolve().then(() => ({source})(arguments[0]))"
                  ".then((value) => done({ok: true, value: value === undefined ? null : value}),"
                  " (err) => done({ok: false, error: `${err}\n${err && err.stack}`}));")
        result = self._call("POST", f"/session/{self._session}/execute/async", {"script": script, "args": [arg]},
                            timeout=timeout_s + 30)
        if not isinstance(result, dict) or not result.get("ok"):
            raise BrowserError(f"{self._label}: page script failed: {(result or {}).get('error') if isinstance(result, dict) else result}")
        return result["value"]

    def screenshot(self, path: Path) -> None:
        import base64

        png = self._call("GET", f"/session/{self._session}/screenshot")
        Path(path).write_bytes(base64.b64decode(png))

    def close(self) -> None:
        try:
            if self._session:
                self._call("DELETE", f"/session/{self._session}", timeout=30)
        except Exception:
            pass
        self._session = None
        if self._owner is not None:
            self._owner.close()


def webdriver_capabilities(spec: BrowserSpec, page_base: str) -> dict:
    """What to ask a WebDriver endpoint for: the named browser with WebGPU exposed (and, for a page
    on a plain-http LAN address, that origin treated as secure where the browser allows it), then
    the --capabilities extras over that."""
    caps = json.loads(json.dumps(WEBDRIVER_BROWSERS.get(spec.name, {})))
    origin = secure_origin_needed(page_base)
    if origin:
        flag = [f"--unsafely-treat-insecure-origin-as-secure={origin}"]
        for key in ("goog:chromeOptions", "ms:edgeOptions"):
            if key in caps:
                caps[key]["args"] = caps[key]["args"] + flag
        if "moz:firefoxOptions" in caps:
            caps["moz:firefoxOptions"]["prefs"]["dom.securecontext.allowlist"] = urllib.parse.urlsplit(page_base).hostname
    return _merge(caps, spec.capabilities)


class WebKitDriverProcess:
    """WebKitWebDriver on a free loopback port with an Xvfb display of its own; `url` is its
    WebDriver endpoint. Local `webkit` runs through it; tests use it as a stand-in remote endpoint."""

    def __init__(self):
        driver = os.environ.get("ULPQ_WEBKIT_DRIVER", DEBIAN_PATHS["webkit_driver"])
        self.browser = os.environ.get("ULPQ_WEBKIT_BROWSER", DEBIAN_PATHS["webkit_browser"])
        for path in (driver, self.browser):
            if not Path(path).exists():
                raise BrowserError(f"webkit: no executable at {path}; set ULPQ_WEBKIT_DRIVER / ULPQ_WEBKIT_BROWSER or {INSTALL_HINT}")
        if not shutil.which("Xvfb"):
            raise BrowserError(f"webkit: Xvfb is missing; {INSTALL_HINT}")
        self._procs: list[subprocess.Popen] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="ulpq-webkit-")
        try:
            display = self._start_xvfb()
            env = {**os.environ, "DISPLAY": display, "XDG_RUNTIME_DIR": self._tmp.name}
            port = _free_port()
            self._procs.append(subprocess.Popen([driver, f"--port={port}"], env=env, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
            self.port = port
            self.url = f"http://127.0.0.1:{port}/"
        except BaseException:
            self.close()
            raise

    def _start_xvfb(self) -> str:
        for number in range(90, 190):
            if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
                continue
            proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(50):
                if Path(f"/tmp/.X11-unix/X{number}").exists():
                    self._procs.append(proc)
                    return f":{number}"
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            proc.kill()
            proc.wait()
        raise BrowserError("webkit: could not start Xvfb on any display :90-:189")

    def close(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = []
        self._tmp.cleanup()


def WebKitDriverSession(name: str = "webkit") -> WebDriverSession:
    """Stock WebKitGTK: a WebKitWebDriver of our own, driven like any remote WebDriver endpoint."""
    driver = WebKitDriverProcess()
    try:
        caps = {"webkitgtk:browserOptions": {"binary": driver.browser, "args": ["--automation"]}}
        session = WebDriverSession(driver.url, caps, name, driver.browser, owner=driver, ready_s=30)
    except BaseException:
        driver.close()
        raise
    session.info.engine, session.info.executable, session.info.endpoint = "WebKitGTK", driver.browser, "local"
    return session


def node_environment() -> dict:
    """Environment for Node: where the npm package webgpu is, and the private Mesa >= 25 lavapipe
    (Debian 12's Mesa 22 is refused by Dawn) when one is unpacked and no driver was chosen."""
    env = dict(os.environ)
    modules = os.environ.get("ULPQ_NODE_MODULES") or str(CHECKOUT / ".node" / "node_modules")
    env["NODE_PATH"] = os.pathsep.join(p for p in (modules, os.environ.get("NODE_PATH")) if p)
    mesa = Path(os.environ.get("ULPQ_MESA") or CHECKOUT / ".mesa")
    icd = mesa / "lvp_icd.json"
    chosen = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    if os.environ.get("ULPQ_MESA") != "system" and not chosen and icd.is_file():
        env["VK_ICD_FILENAMES"] = str(icd)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(mesa / "lib"), os.environ.get("LD_LIBRARY_PATH")) if p)
    env.setdefault("XDG_RUNTIME_DIR", "")
    return env


class NodeSession:
    """Node.js as the page: ulpq_build/node_page.mjs imports the served bundle's own node.js and
    evaluates the same page scripts a browser gets (JSON lines over stdin/stdout)."""

    MARK = "@@ulpq-reply@@ "

    def __init__(self, name: str = "node"):
        import queue
        import threading

        self.name = name
        node = os.environ.get("ULPQ_NODE") or shutil.which("node")
        if not node or not Path(node).exists():
            raise BrowserError(f"node: no Node.js executable ({os.environ.get('ULPQ_NODE') or 'node on PATH'}); install Node.js >= 20 "
                               f"(`apt-get install -y nodejs`, or run scripts/setup.sh) or set ULPQ_NODE")
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        if not version.startswith("v") or int(version[1:].split(".")[0]) < 20:
            raise BrowserError(f"node: {node} is {version or 'not Node.js'}; the runtime needs Node.js >= 20")
        self._tmp = tempfile.TemporaryDirectory(prefix="ulpq-node-")
        env = node_environment()
        if not env["XDG_RUNTIME_DIR"] or not Path(env["XDG_RUNTIME_DIR"]).is_dir():
            env["XDG_RUNTIME_DIR"] = self._tmp.name
        self._stderr = open(Path(self._tmp.name) / "stderr.txt", "w+")
        self._proc = subprocess.Popen([node, str(Path(__file__).with_name("node_page.mjs"))], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, bufsize=1)
        self.console: list[str] = []
        self._replies = queue.Queue()

        def read():
            for line in self._proc.stdout:
                if line.startswith(self.MARK):
                    self._replies.put(json.loads(line[len(self.MARK):]))
                else:
                    self.console.append(line.rstrip("\n"))
            self._replies.put(None)

        threading.Thread(target=read, daemon=True).start()
        webgpu = "Dawn (npm webgpu)" if Path(env["NODE_PATH"].split(os.pathsep)[0], "webgpu").is_dir() else "no WebGPU package"
        self.info = BrowserInfo("node", f"Node.js/{webgpu}", node, version, False, user_agent=f"Node.js {version}")

    def _call(self, command: dict, timeout_s: float):
        import queue

        try:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            reply = self._replies.get(timeout=timeout_s)
        except (OSError, queue.Empty) as exc:
            raise BrowserError(f"node: no answer to {command['op']} ({type(exc).__name__}){self._stderr_tail()}") from None
        if reply is None:
            raise BrowserError(f"node: the process ended (exit {self._proc.wait()}){self._stderr_tail()}")
        if not reply.get("ok"):
            raise BrowserError(f"node: page script failed: {reply.get('error')}")
        return reply["value"]

    def _stderr_tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        tail = [line for line in self._stderr.read().splitlines() if line.strip()][-3:]
        return f": {' | '.join(tail)}" if tail else ""

    def goto(self, url: str) -> None:
        self._call({"op": "goto", "url": url}, timeout_s=600)

    def evaluate(self, source: str, arg=None, timeout_s: float = 300):
        return self._call({"op": "evaluate", "source": source, "arg": arg}, timeout_s)

    def screenshot(self, path: Path) -> None:
        raise BrowserError("node: no page to take a screenshot of")

    def close(self) -> None:
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()
        self._tmp.cleanup()


def check_browser_names(names: list) -> None:
    """--browsers: refuse an unknown name before anything starts (remote specs are checked when parsed)."""
    unknown = [b for b in names if isinstance(b, str) and b not in BROWSERS]
    if unknown:
        raise UserError(f"--browsers: unknown browser {unknown[0]!r}; choose from {', '.join(BROWSERS)}")


@contextmanager
def started(spec, page_base: str | None = None, allow_hosts: tuple[str, ...] = ()):
    """(session, None) for the `with` block, closed after it; (None, "cannot start: ...") when the
    browser does not start, so a report can record it as a failed check."""
    try:
        session = launch(spec, page_base, allow_hosts)
    except Exception as exc:  # any launch failure is that browser's failed check, not a crash
        yield None, f"cannot start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return
    try:
        yield session, None
    finally:
        session.close()


def launch(spec, page_base: str | None = None, allow_hosts: tuple[str, ...] = ()):
    """Start a session: a local 'chromium', 'firefox', 'webkit' or 'node' (a name or a BrowserSpec),
    or a remote endpoint's browser. `page_base` is the URL the session will open pages under (the
    remote sessions adapt to it); `allow_hosts` are hosts a local browser may reach besides loopback."""
    if isinstance(spec, str):
        spec = BrowserSpec(spec, label=spec)
    name = spec.name
    if spec.protocol == "playwright":
        return PlaywrightRemoteSession(spec, page_base or "http://127.0.0.1/")
    if spec.protocol == "webdriver":
        return WebDriverSession(spec.endpoint, webdriver_capabilities(spec, page_base or "http://127.0.0.1/"),
                                spec.label, spec.shown)
    if name not in BROWSERS:
        raise UserError(f"unknown browser {name!r}; choose from {', '.join(BROWSERS)}")
    if name == "node":
        return NodeSession()
    if name == "webkit":
        if _managed_allowed():
            try:
                managed = _managed_executable(_SharedPlaywright.acquire().webkit)
                _SharedPlaywright.release()
            except UserError:
                managed = None
            if managed:
                return PlaywrightWebKitSession("webkit", allow_hosts=allow_hosts)
        return WebKitDriverSession()
    return PlaywrightSession(name, allow_hosts=allow_hosts)
