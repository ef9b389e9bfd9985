"""The static server: loopback only, MIME types, no listings, no way out of the folder."""

import http.client
import os
import socket
import subprocess
import sys
import time

import pytest

from support import ROOT
from ulpq_build.serve import serving


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "bundle"
    (root / "shaders").mkdir(parents=True)
    (root / "index.html").write_text("<html></html>")
    (root / "ulpq.js").write_text("export {}")
    (root / "lib.mjs").write_text("export {}")
    (root / "manifest.json").write_text("{}")
    (root / "weights-000.bin").write_bytes(b"\0\1")
    (root / "shaders" / "k.wgsl").write_text("// wgsl")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with serving(root) as server:
        yield server


def get(server, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.getheader("Content-Type"), response.read()


@pytest.mark.parametrize("path, mime", [
    ("/index.html", "text/html"), ("/ulpq.js", "text/javascript"), ("/lib.mjs", "text/javascript"),
    ("/manifest.json", "application/json"), ("/weights-000.bin", "application/octet-stream"),
    ("/shaders/k.wgsl", "text/wgsl"),
])
def test_mime_types(served, path, mime):
    status, content_type, _ = get(served, path)
    assert status == 200 and content_type.startswith(mime)


@pytest.mark.parametrize("path", ["/shaders/", "/../secret.txt", "/%2e%2e/secret.txt", "/shaders/..%2f..%2fsecret.txt",
                                  "/link.txt", "/..\\secret.txt"])
def test_no_listing_and_no_escape(served, path):
    status, _, body = get(served, path)
    assert status == 404 and b"outside" not in body


def test_binds_loopback_only(served):
    assert served.server_address[0] == "127.0.0.1"


def test_serve_command_runs_and_stops(tmp_path, served):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ulpq_build", "serve", str(tmp_path / "bundle"), "--port", str(port), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/manifest.json")
                assert conn.getresponse().status == 200
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        else:
            pytest.fail("serve did not answer")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_missing_folder(tmp_path):
    from support import run_cli

    proc = run_cli("serve", tmp_path / "nope", "--port", "0")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such folder" in proc.stderr
