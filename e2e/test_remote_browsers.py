"""`verify` and `bench` on remote browsers, with stand-ins for other machines started here as a
user would start them there: a `playwright run-server` (Playwright's node driver from the pip
package, launching the system Chromium) and a WebKitWebDriver process under Xvfb, both addressed
only by URL. Also `verify URL` of a deployed bundle (the session's bundle server stands in for the
deployment). A missing browser, driver or Playwright fails these tests; nothing skips."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse

import pytest

from test_commands_in_browsers import run_cli
from ulpq_build.bench import Row, _browser_runs
from ulpq_build.browsers import DEBIAN_PATHS, WebKitDriverProcess, _free_port
from ulpq_build.endpoints import browser_specs
from ulpq_build.serve import route_address

UA = re.compile(r"user agent: (Mozilla/5\.0 .*?); opened ")


@pytest.fixture(scope="module")
def run_server():
    """`python -m playwright run-server` on loopback only: --unsafe lets a client choose the
    executable (this machine has Debian's Chromium, no Playwright-managed one), which nobody else
    may reach."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "playwright", "run-server", "--host", "127.0.0.1", "--port", str(port),
                             "--unsafe"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: node and the browsers it starts
    first = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    try:
        assert first and "Listening on ws://" in first[0], f"playwright run-server did not start: {first}"
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def webkit_driver():
    """WebKitWebDriver as its own process, used by URL only (loopback: it lets a client choose the binary)."""
    driver = WebKitDriverProcess()
    try:
        yield driver
    finally:
        driver.close()


def chromium_remote(host: str, port: int) -> str:
    """--remote value for the run-server: the executable on the server's side travels in the URL."""
    options = json.dumps({"executablePath": os.environ.get("ULPQ_CHROMIUM") or DEBIAN_PATHS["chromium"]})
    return f"chromium=ws://{host}:{port}/?launch-options={urllib.parse.quote(options)}"


def rows_of(stdout: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line for line in stdout.splitlines() if line.rstrip().endswith(("PASS",)) or " FAIL" in line}


def facts_of(stdout: str, label: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(f"{label}: ") and "user agent" in line)


def test_verify_on_a_playwright_run_server(site, run_server):
    proc = run_cli("verify", site / "int4", "--remote", chromium_remote("127.0.0.1", run_server), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    label = f"chromium@127.0.0.1:{run_server}"
    rows = rows_of(proc.stdout)
    assert set(rows) == {label}, proc.stdout  # --remote alone: no local browser runs
    assert " webgpu " in rows[label] and rows[label].rstrip().endswith("PASS"), proc.stdout
    facts = facts_of(proc.stdout, label)
    # the endpoint, the browser's own version and user agent; the page through the loopback tunnel
    assert "(Playwright connect) " in facts and f"at ws://127.0.0.1:{run_server}/;" in facts, facts
    assert re.search(r"\) \d+\.\d+\.\d+", facts) and "HeadlessChrome/" in UA.search(facts).group(1), facts
    assert "opened http://127.0.0.1:" in facts, facts
    assert "executablePath" not in proc.stdout and "launch-options" not in proc.stdout  # the query is never printed


def test_verify_with_host_serves_a_reachable_address(site, run_server):
    """--host ADDRESS (this machine's network address): the remote browser is given that address,
    not loopback, so no tunnel is used, and is told to treat the plain-http origin as secure, so
    WebGPU stays on. (Which address --host 0.0.0.0 gives each endpoint: tests/test_remote_options.py.)"""
    address = route_address("198.51.100.1")
    assert address != "127.0.0.1", "this machine needs a non-loopback interface for the --host test"
    proc = run_cli("verify", site / "int2", "--host", address, "--remote", chromium_remote("127.0.0.1", run_server),
                   timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    label = f"chromium@127.0.0.1:{run_server}"
    assert " webgpu " in rows_of(proc.stdout)[label], proc.stdout
    assert f"opened http://{address}:" in facts_of(proc.stdout, label), proc.stdout


def test_verify_on_webkitwebdriver_as_a_remote_endpoint(site, webkit_driver):
    proc = run_cli("verify", site / "int8", "--remote", f"webkit=webdriver+http://127.0.0.1:{webkit_driver.port}/",
                   timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    label = f"webkit@127.0.0.1:{webkit_driver.port}"
    row = rows_of(proc.stdout)[label]
    assert " cpu " in row and row.rstrip().endswith("PASS"), proc.stdout  # WebKitGTK has no WebGPU: the CPU path
    facts = facts_of(proc.stdout, label)
    assert "(WebDriver) 2." in facts and f"at http://127.0.0.1:{webkit_driver.port}/;" in facts, facts
    assert "AppleWebKit/" in UA.search(facts).group(1), facts


def test_verify_a_deployed_bundle_by_url(server, webkit_driver):
    """The conftest's bundle server stands in for a deployment: the reference comes from the files
    fetched over HTTP, and a local and a remote browser both open the deployed page."""
    url = f"{server.url}int4/manifest.json"
    proc = run_cli("verify", url, "--browsers", "chromium", "--remote", f"http://127.0.0.1:{webkit_driver.port}/",
                   timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_of(proc.stdout)
    assert set(rows) == {"chromium", f"webdriver@127.0.0.1:{webkit_driver.port}"}, proc.stdout
    assert " webgpu " in rows["chromium"], proc.stdout
    assert f"bundle: {server.url}int4/" in proc.stdout
    assert proc.stdout.count(f"opened {server.url}int4/index.html") == 2, proc.stdout


@pytest.mark.parametrize("where, names", [
    ("int4-tampered/manifest.json", "int4-tampered/weights-000.bin: sha256 does not match"),
    ("no-such-bundle/", "no-such-bundle/manifest.json: HTTP 404"),
])
def test_a_bad_deployed_bundle_is_one_line_and_leaves_nothing(server, tmp_path, where, names):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = run_cli("verify", server.url + where, "--browsers", "chromium", env_extra={"TMPDIR": str(tmp)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert "ulpq-deployed" not in lines[0], lines  # names the deployment, not the temporary copy
    assert list(tmp.iterdir()) == [], "the downloaded copy must be removed"


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:{closed}/app/manifest.json", "cannot be fetched"),
    ("ftp://example.com/manifest.json", "give an http(s) URL"),
    ("http://127.0.0.1:{closed}/app/index.html", "manifest.json"),
])
def test_an_unreachable_or_malformed_url_is_one_line(url, says):
    proc = run_cli("verify", url.format(closed=_free_port()), "--browsers", "chromium")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_an_endpoint_that_does_not_answer_is_a_failed_check(site):
    closed = _free_port()
    proc = run_cli("verify", site / "int2", "--remote", f"chromium=ws://127.0.0.1:{closed}/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = rows_of(proc.stdout)[f"chromium@127.0.0.1:{closed}"]
    assert "FAIL: cannot start" in row, proc.stdout
    assert f"not started (ws://127.0.0.1:{closed}/)" in proc.stdout


def test_bench_runs_its_presets_on_remote_endpoints(site, run_server, webkit_driver, tmp_path):
    """bench's browser stage (the same code `bench --remote` runs after building its bundles) on
    both kinds of endpoint: every check passes and the results name endpoint, version and agent."""
    specs = browser_specs([], [chromium_remote("127.0.0.1", run_server), f"webkit=http://127.0.0.1:{webkit_driver.port}/"])
    rows = [Row("int4", "int4", "rtn")]
    shots, details = _browser_runs(rows, site, specs, tmp_path, repeats=2, log=lambda _: None)
    for row in rows:
        assert [b["browser"] for b in row.browsers] == [s.label for s in specs]
        # WebKit's clock is coarse (1 ms): the tiny MLP's median may read 0
        assert all(b["passed"] and b["median_ms"] is not None and b["first_ms"] >= 0 for b in row.browsers), row.browsers
    chromium, webkit = (details[s.label] for s in specs)
    assert chromium["endpoint"] == f"ws://127.0.0.1:{run_server}/" and "HeadlessChrome/" in chromium["user_agent"]
    assert webkit["endpoint"] == f"http://127.0.0.1:{webkit_driver.port}/" and "AppleWebKit/" in webkit["user_agent"]
    assert chromium["version"][0].isdigit() and webkit["version"][0].isdigit(), details
    for spec in specs:
        assert (tmp_path / shots[spec.label]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
