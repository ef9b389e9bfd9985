"""Serve a bundle folder over HTTP on 127.0.0.1 (a secure context, so browsers expose WebGPU and
SubtleCrypto): correct MIME types, no directory listings, nothing outside the folder."""

from __future__ import annotations

import functools
import http.server
import os
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


class BundleRequestHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

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
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "index.html")):
            self.send_error(404, "Not found")
            return None
        return super().send_head()

    def end_headers(self):
        # Bundles are rebuilt in place during development: make browsers revalidate.
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


class BundleServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, port: int = 0, verbose: bool = False):
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder; build one with `python -m ulpq_build bundle --out {folder}`")
        self.verbose = verbose
        handler = functools.partial(BundleRequestHandler, directory=str(folder.resolve()))
        try:
            super().__init__(("127.0.0.1", port), handler)
        except OSError as exc:
            raise UserError(f"port {port}: cannot listen on 127.0.0.1 ({exc.strerror}); choose another --port") from None

    def handle_error(self, request, client_address):
        # A browser that closes a connection early (navigation, cancelled fetch) is not an error.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start_in_background(self) -> "BundleServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


@contextmanager
def serving(folder: Path):
    """A BundleServer for `folder` on a free port, running in the background for the `with` block."""
    server = BundleServer(folder, 0).start_in_background()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
