"""Write an output folder or file all-or-nothing: build it under a temporary name beside the
target, then rename it into place. A failure (or Ctrl-C) removes the temporary and leaves
whatever was there before untouched."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ulpq_build.errors import UserError

BUNDLE_MARKER = "manifest.json"


@contextlib.contextmanager
def atomic_folder(target: Path, *, replaceable_marker: str = BUNDLE_MARKER) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`.

    An existing `target` is replaced only if it is empty or holds `replaceable_marker` (an earlier
    bundle): the tool never deletes a folder it did not write.
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise UserError(f"{target}: exists and is not a folder; choose another --out")
        if any(target.iterdir()) and not (target / replaceable_marker).is_file():
            raise UserError(f"{target}: folder exists and is not a ulpq bundle; choose another --out or empty it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is meant to be served
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "previous")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`."""
    target = Path(target)
    if target.is_dir():
        raise UserError(f"{target}: is a folder; --out must name a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
