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


def request(conn, path, **headers):
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    return response, response.read()


def test_keep_alive_serves_several_requests_on_one_connection(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server_address[1], timeout=10)
    first, body = request(conn, "/weights-000.bin")
    sock = conn.sock
    second, _ = request(conn, "/manifest.json")
    assert first.version == 11 and first.status == 200 and body == b"\0\1"
    assert second.status == 200 and conn.sock is sock  # the same connection, not reopened
    third, _ = request(conn, "/missing.bin")
    assert third.status == 404


def test_ranges(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server_address[1], timeout=10)
    response, body = request(conn, "/shaders/k.wgsl", Range="bytes=3-5")
    assert response.status == 206 and body == b"wgs" and response.getheader("Content-Range") == "bytes 3-5/7"
    response, body = request(conn, "/shaders/k.wgsl", Range="bytes=-2")
    assert response.status == 206 and body == b"sl"
    response, body = request(conn, "/shaders/k.wgsl", Range="bytes=4-")
    assert response.status == 206 and body == b"gsl"
    response, body = request(conn, "/shaders/k.wgsl", Range="bytes=7-9")
    assert response.status == 416 and response.getheader("Content-Range") == "bytes */7" and body == b""
    response, body = request(conn, "/shaders/k.wgsl", Range="bytes=0-1,3-4")  # several ranges: the whole file
    assert response.status == 200 and body == b"// wgsl"
    assert response.getheader("Accept-Ranges") == "bytes"


def test_etag_and_if_none_match(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server_address[1], timeout=10)
    response, _ = request(conn, "/ulpq.js")
    etag = response.getheader("ETag")
    assert etag and etag.startswith('"')
    again, body = request(conn, "/ulpq.js", **{"If-None-Match": etag})
    assert again.status == 304 and body == b"" and again.getheader("ETag") == etag
    other, body = request(conn, "/ulpq.js", **{"If-None-Match": '"other"'})
    assert other.status == 200 and body == b"export {}"
    stale, _ = request(conn, "/shaders/k.wgsl", Range="bytes=0-1", **{"If-Range": '"old"'})
    assert stale.status == 200  # the file changed since: the whole of it


def test_security_headers(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.server_address[1], timeout=10)
    for path in ("/index.html", "/nope"):
        response, _ = request(conn, path)
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert response.getheader("Server") == "ulpq_build"  # no Python or tool version
        assert response.getheader("Cross-Origin-Opener-Policy") is None


def test_isolate_sends_coop_and_coep(tmp_path):
    from ulpq_build.serve import BundleServer

    (tmp_path / "index.html").write_text("<html></html>")
    server = BundleServer(tmp_path, 0, isolate=True).start_in_background()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        response, _ = request(conn, "/")
        assert response.status == 200
        assert response.getheader("Cross-Origin-Opener-Policy") == "same-origin"
        assert response.getheader("Cross-Origin-Embedder-Policy") == "require-corp"
    finally:
        server.shutdown()
        server.server_close()


def test_port_in_use_and_out_of_range(served):
    from ulpq_build.errors import UserError
    from ulpq_build.serve import BundleServer

    with pytest.raises(UserError, match="in use"):
        BundleServer(ROOT, served.server_address[1])
    with pytest.raises(UserError, match="65535"):
        BundleServer(ROOT, 70000)
