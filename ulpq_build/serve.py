"""Serve a bundle folder over HTTP on 127.0.0.1 (a secure context, so browsers expose WebGPU and
SubtleCrypto): correct MIME types, no directory listings, nothing outside the folder.

A browser on another machine (`verify --remote`) cannot reach 127.0.0.1: `host` binds another
address (0.0.0.0 = every interface), and `url_for(peer)` is the address to give a browser at
`peer`: the bound address, or for a wildcard bind the address of the interface that routes
towards that peer; `public_url` (a tunnel, a TLS reverse proxy) overrides both.

HTTP/1.1 with keep-alive (a page fetches dozens of shaders), single byte ranges (206 / 416) so a
shard can be fetched in parts or resumed, a strong ETag per file version answered with 304 on
If-None-Match, `X-Content-Type-Options: nosniff` and a Server header without versions. With
isolate=True every response carries COOP/COEP, so pages are cross-origin isolated and may use
SharedArrayBuffer (threads)."""

from __future__ import annotations

import errno
import functools
import http.server
import ipaddress
import os
import re
import socket
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from ulpq_build.errors import UserError

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wgsl": "text/wgsl; charset=utf-8",
    ".bin": "application/octet-stream",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".safetensors": "application/octet-stream",
}


ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Slice:
    """A file object that yields `length` bytes from `start` (a byte range of the file)."""

    def __init__(self, f, start: int, length: int):
        self.f, self.left = f, length
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n) if n > 0 else b""
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


class BundleRequestHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    server_version = "ulpq_build"
    sys_version = ""

    def version_string(self) -> str:  # no Python or tool version to fingerprint
        return self.server_version

    def list_directory(self, path):  # never list folders
        self.send_error(404, "Not found")
        return None

    def _inside(self, path: str) -> bool:
        # SimpleHTTPRequestHandler already drops '..' segments; also refuse anything (a symlink,
        # an encoded separator) that resolves outside the served folder.
        root = Path(self.directory).resolve()
        resolved = Path(path).resolve()
        return resolved == root or root in resolved.parents

    def send_head(self):
        raw = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        path = self.translate_path(self.path)
        if ".." in raw.split("/") or "\\" in raw or "\0" in raw or not self._inside(path):
            self.send_error(404, "Not found")
            return None
        if os.path.isdir(path):
            if not raw.endswith("/"):
                return super().send_head()  # the usual redirect to "dir/"
            path = os.path.join(path, "index.html")
        if not os.path.isfile(path):
            self.send_error(404, "Not found")
            return None
        try:
            f = open(path, "rb")
            stat = os.fstat(f.fileno())
        except OSError:
            self.send_error(404, "Not found")
            return None
        size = stat.st_size
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        match = self.headers.get("If-None-Match")
        if match and (match.strip() == "*" or etag in [m.strip().removeprefix("W/") for m in match.split(",")]):
            f.close()
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start, length, status = 0, size, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and (not if_range or if_range.strip() == etag):
            parsed = _RANGE.fullmatch(wanted.strip())
            if parsed and (parsed.group(1) or parsed.group(2)):  # one range; several: send the whole file
                first, last = parsed.groups()
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:  # a suffix: the last N bytes
                    start, end = max(0, size - int(last)), size - 1
                if start >= size or (first and last and int(last) < start):
                    f.close()
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                length, status = end - start + 1, 206
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", self.date_time_string(stat.st_mtime))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        self.end_headers()
        return _Slice(f, start, length)

    def end_headers(self):
        # Bundles are rebuilt in place during development: make browsers revalidate (the ETag makes
        # that a 304 when nothing changed).
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.server.isolate:
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def route_address(peer: str | None, ipv6: bool = False) -> str:
    """This machine's address on the interface that routes towards `peer` (the loopback address for
    a local or unknown peer). A UDP connect only consults the routing table; nothing is sent."""
    loopback = "::1" if ipv6 else "127.0.0.1"
    if not peer or is_loopback(peer):
        return loopback
    # the peer itself; else (no resolver here for its name) the default route, probed with a
    # documentation address (RFC 5737) that is never contacted
    for target in (peer, "198.51.100.1"):
        try:
            family, _, _, _, address = socket.getaddrinfo(target, 9, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(address)
                return s.getsockname()[0]
        except OSError:
            continue
    return loopback


def check_public_url(url: str | None) -> str | None:
    """--public-url: an http(s) URL with a host, ending in '/' (the bundle folder's URL)."""
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UserError(f"--public-url {url}: give the http(s) URL at which a remote browser reaches the served "
                        f"folder, e.g. https://tunnel.example.com/")
    return url if url.endswith("/") else url + "/"


class BundleServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, port: int = 0, verbose: bool = False, isolate: bool = False,
                 host: str = "127.0.0.1", public_url: str | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder; build one with `python -m ulpq_build bundle --out {folder}`")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise UserError(f"--port {port}: ports run from 1 to 65535 (0 picks a free one); choose one in that range")
        self.verbose, self.isolate = verbose, isolate
        self.host = host.strip("[]") or "0.0.0.0"
        self.public_url = check_public_url(public_url)
        if ":" in self.host:
            self.address_family = socket.AF_INET6
        handler = functools.partial(BundleRequestHandler, directory=str(folder.resolve()))
        try:
            super().__init__((self.host, port), handler)
        except (OSError, UnicodeError) as exc:
            if getattr(exc, "errno", None) == errno.EADDRINUSE:
                raise UserError(f"--port {port}: cannot listen on {self.host} (in use by another program); choose "
                                f"another --port, or 0 for a free one") from None
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise UserError(f"--host {host}: cannot listen there ({reason}); give an address of this machine "
                            f"(127.0.0.1, the default; 0.0.0.0 for every interface)") from None

    def handle_error(self, request, client_address):
        # A browser that closes a connection early (navigation, cancelled fetch) is not an error.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """The URL for a browser on this machine: loopback where the bind allows it (a secure context)."""
        if self.host in WILDCARD_HOSTS or is_loopback(self.host):
            return f"http://{_url_host(route_address(None, ':' in self.host))}:{self.server_address[1]}/"
        return f"http://{_url_host(self.host)}:{self.server_address[1]}/"

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)

    def url_for(self, peer: str | None) -> str:
        """The URL for a browser at `peer` (a host name or address; None = this machine)."""
        if self.public_url:
            return self.public_url
        if self.host in WILDCARD_HOSTS:
            return f"http://{_url_host(route_address(peer, ':' in self.host))}:{self.server_address[1]}/"
        return self.url

    def start_in_background(self) -> "BundleServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


@contextmanager
def serving(folder: Path, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None):
    """A BundleServer for `folder` (by default on a free loopback port), running in the background
    for the `with` block."""
    server = BundleServer(folder, port, host=host, public_url=public_url).start_in_background()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
