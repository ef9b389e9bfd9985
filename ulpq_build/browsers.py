"""Drive real browsers: Chromium and Firefox through Playwright, WebKitGTK through its own
WebDriver (W3C classic, spoken here with the standard library) under Xvfb; and `node`, Node.js
running the bundle's own runtime through its node.js (WebGPU from the npm package `webgpu`,
Dawn, where it finds an adapter, else the CPU path).

Executables are configurable (environment variables below); the defaults are Debian's system
browsers, and where Playwright-managed browsers are installed (`playwright install` on a
laptop) those are used instead, WebKit included.

    ULPQ_CHROMIUM        Chromium executable        (default /usr/lib/chromium/chromium)
    ULPQ_FIREFOX         Firefox executable         (default /usr/bin/firefox-esr)
    ULPQ_WEBKIT_DRIVER   WebKitWebDriver executable (default /usr/bin/WebKitWebDriver)
    ULPQ_WEBKIT_BROWSER  browser the driver starts  (default Debian's MiniBrowser)
    ULPQ_BROWSERS_MANAGED=0  ignore Playwright-managed browsers even where installed
    ULPQ_NODE            Node.js executable         (default: node on PATH)
    ULPQ_NODE_MODULES    folder holding the npm package webgpu (default the checkout's .node/node_modules,
                         where scripts/setup.sh installs it; NODE_PATH is kept too)
    ULPQ_MESA            an unpacked Mesa >= 25 whose lavapipe Dawn accepts (default the checkout's .mesa/
                         where scripts/setup.sh unpacks bookworm-backports' one; `system` = the system's drivers)

Every session offers the same two calls: `goto(url)` and `evaluate(js_function_source, arg)`,
where the source is an (async) arrow function taking one argument; its resolved value comes
back as JSON.
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
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ulpq_build.errors import UserError

BROWSERS = ("chromium", "firefox", "webkit", "node")
DEBIAN_PATHS = {
    "chromium": "/usr/lib/chromium/chromium",
    "firefox": "/usr/bin/firefox-esr",
    "webkit_driver": "/usr/bin/WebKitWebDriver",
    "webkit_browser": "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
}
# Keep browser traffic on this machine: everything but loopback goes to a dead proxy.
LOCAL_ONLY_PROXY = {"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"}
FIREFOX_PREFS = {"dom.webgpu.enabled": True, "gfx.webgpu.ignore-blocklist": True}
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
                raise UserError("playwright is not installed; `pip install playwright==1.64.1` (the test extra)") from None
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

    def __init__(self, name: str, headless: bool = True):
        self.name = name
        self._pw = _SharedPlaywright.acquire()
        try:
            self._browser, self.info = self._launch(headless)
            self._context = self._browser.new_context(proxy=LOCAL_ONLY_PROXY)
            self.page = self._context.new_page()
            self.console: list[str] = []
            self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
            self.page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
        except BaseException:
            _SharedPlaywright.release()
            raise

    def _launch(self, headless: bool):
        bt = getattr(self._pw, self.name)
        managed = _managed_executable(bt) if _managed_allowed() else None
        env_key = f"ULPQ_{self.name.upper()}"
        executable = os.environ.get(env_key) or managed or DEBIAN_PATHS[self.name]
        if not Path(executable).exists():
            raise BrowserError(f"{self.name}: no executable at {executable}; set {env_key} or {INSTALL_HINT}")
        is_managed = executable == managed
        if self.name == "chromium":
            browser = bt.launch(executable_path=executable, headless=headless, args=CHROMIUM_ARGS)
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


class WebKitDriverSession:
    """Stock WebKitGTK through WebKitWebDriver, with an Xvfb display of its own."""

    def __init__(self, name: str = "webkit"):
        self.name = name
        driver = os.environ.get("ULPQ_WEBKIT_DRIVER", DEBIAN_PATHS["webkit_driver"])
        browser = os.environ.get("ULPQ_WEBKIT_BROWSER", DEBIAN_PATHS["webkit_browser"])
        for path in (driver, browser):
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
            self._base = f"http://127.0.0.1:{port}"
            self._wait_ready()
            caps = {"capabilities": {"alwaysMatch": {"webkitgtk:browserOptions": {"binary": browser, "args": ["--automation"]}}}}
            value = self._call("POST", "/session", caps, timeout=120)
            self._session = value["sessionId"]
            c = value.get("capabilities", {})
            self.info = BrowserInfo("webkit", "WebKitGTK", browser, c.get("browserVersion", "?"), False)
            self._call("POST", f"/session/{self._session}/timeouts", {"script": 300_000, "pageLoad": 300_000})
        except BaseException:
            self.close()
            raise
        self.console: list[str] = []

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
        raise BrowserError("webkit: could not start Xvfb on any display :90-:189")

    def _wait_ready(self) -> None:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self._call("GET", "/status", timeout=2).get("ready", True):
                    return
            except (OSError, BrowserError):
                time.sleep(0.2)
        raise BrowserError("webkit: WebKitWebDriver did not answer within 30 s")

    def _call(self, method: str, path: str, body=None, timeout: float = 330):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self._base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            value = payload.get("value", {})
            raise BrowserError(f"webkit: {value.get('error', exc.code)}: {value.get('message', '')}") from None
        return payload.get("value")

    def goto(self, url: str) -> None:
        self._call("POST", f"/session/{self._session}/url", {"url": url})

    def evaluate(self, source: str, arg=None, timeout_s: float = 300):
        script = ("const done = arguments[arguments.length - 1];"
                  f"Promise.resolve().then(() => ({source})(arguments[0]))"
                  ".then((value) => done({ok: true, value: value === undefined ? null : value}),"
                  " (err) => done({ok: false, error: `${err}\n${err && err.stack}`}));")
        result = self._call("POST", f"/session/{self._session}/execute/async", {"script": script, "args": [arg]},
                            timeout=timeout_s + 30)
        if not result.get("ok"):
            raise BrowserError(f"webkit: page script failed: {result.get('error')}")
        return result["value"]

    def screenshot(self, path: Path) -> None:
        import base64

        png = self._call("GET", f"/session/{self._session}/screenshot")
        Path(path).write_bytes(base64.b64decode(png))

    def close(self) -> None:
        try:
            if getattr(self, "_session", None):
                self._call("DELETE", f"/session/{self._session}", timeout=30)
        except Exception:
            pass
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._tmp.cleanup()


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
        self.info = BrowserInfo("node", f"Node.js/{webgpu}", node, version, False)

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


def check_browser_names(names: list[str]) -> None:
    """--browsers: refuse an unknown name before anything starts."""
    unknown = [b for b in names if b not in BROWSERS]
    if unknown:
        raise UserError(f"--browsers: unknown browser {unknown[0]!r}; choose from {', '.join(BROWSERS)}")


@contextmanager
def started(name: str):
    """(session, None) for the `with` block, closed after it; (None, "cannot start: ...") when the
    browser does not start, so a report can record it as a failed check."""
    try:
        session = launch(name)
    except Exception as exc:  # any launch failure is that browser's failed check, not a crash
        yield None, f"cannot start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return
    try:
        yield session, None
    finally:
        session.close()


def launch(name: str):
    """Start a session for 'chromium', 'firefox', 'webkit' or 'node'."""
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
                return PlaywrightWebKitSession("webkit")
        return WebKitDriverSession()
    return PlaywrightSession(name)
