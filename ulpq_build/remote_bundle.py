"""`verify https://host/path/manifest.json`: check a deployed bundle where it lives.

Every file the manifest lists is downloaded into a temporary folder, checked against the
manifest's size and sha256 as it arrives, then read back through bundle_reader.load_bundle (the
same schema, part and layout checks as a local bundle), so the numpy reference is computed from
exactly the bytes the deployment serves. The browsers then open the deployed page itself. The
temporary copy is removed when the run ends, whatever happens.
"""

from __future__ import annotations

import hashlib
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ulpq_build import __version__
from ulpq_build.bundle_reader import MAX_MANIFEST_BYTES, LoadedBundle, listed_files, load_bundle, read_manifest
from ulpq_build.errors import UserError

TIMEOUT_S = 60
MAX_FILE_BYTES = 4 << 30  # any one listed file without a declared size (shaders, runtime)
ADVICE = "redeploy the bundle (rebuild it with `python -m ulpq_build bundle`)"


def is_url(target: str) -> bool:
    return "://" in str(target)


def manifest_url(target: str) -> str:
    """The manifest's URL for a `verify` target URL (the manifest itself, or its folder ending in '/')."""
    try:
        parts = urllib.parse.urlsplit(target)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise UserError(f"{target}: not a valid URL ({exc}); give the deployed bundle's manifest.json URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{target}: give an http(s) URL of a deployed bundle's manifest.json, e.g. "
                        f"https://example.com/app/manifest.json (or a local bundle folder)")
    path = parts.path or "/"
    if path.endswith("/"):
        path += "manifest.json"
    if not path.endswith("/manifest.json"):
        raise UserError(f"{target}: give the URL of the bundle's manifest.json (or of its folder, ending in '/')")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch(url: str, limit: int) -> bytes:
    """GET `url`, at most `limit` bytes; any failure is one line naming the URL."""
    request = urllib.request.Request(url, headers={"User-Agent": f"ulpq_build/{__version__} verify",
                                                   "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise UserError(f"{url}: HTTP {exc.code} {exc.reason}; check the address, or {ADVICE}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"{url}: cannot be fetched ({reason}); check the address and that the server is up") from None
    if len(data) > limit:
        raise UserError(f"{url}: larger than {limit} bytes, more than the manifest allows; {ADVICE}")
    return data


def _download(base: str, folder: Path, manifest: dict) -> None:
    """Every listed file into `folder`, each checked before it is written."""
    sizes = {entry["file"]: entry["bytes"] for entries in manifest.values() if isinstance(entries, list)
             for entry in entries if isinstance(entry, dict) and "file" in entry and "bytes" in entry}
    for name, digest in listed_files(manifest).items():
        url = urllib.parse.urljoin(base, urllib.parse.quote(name))
        data = fetch(url, sizes.get(name, MAX_FILE_BYTES))
        if name in sizes and len(data) != sizes[name]:
            raise UserError(f"{url}: {len(data)} bytes, the manifest says {sizes[name]} (truncated or edited); {ADVICE}")
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{url}: sha256 does not match the manifest (tampered or corrupt); {ADVICE}")
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@contextmanager
def deployed_bundle(target: str, log=print):
    """(LoadedBundle from a checked temporary copy, the deployed folder's URL ending in '/')."""
    url = manifest_url(target)
    base = urllib.parse.urljoin(url, ".")
    with tempfile.TemporaryDirectory(prefix="ulpq-deployed-") as tmp:
        folder = Path(tmp)
        try:
            log(f"fetching {url} and the files it lists...")
            (folder / "manifest.json").write_bytes(fetch(url, MAX_MANIFEST_BYTES))
            manifest = read_manifest(folder)
            _download(base, folder, manifest)
            bundle: LoadedBundle = load_bundle(folder)
        except UserError as exc:  # name the deployment, not the temporary copy
            raise UserError(str(exc).replace(str(folder) + "/", base).replace(str(folder), base.rstrip("/"))) from None
        yield bundle, base
