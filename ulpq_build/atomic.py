"""Write an output folder or file all-or-nothing: build it under a temporary name beside the
target, then rename it into place. A failure, Ctrl-C or SIGTERM (cli.py turns it into
KeyboardInterrupt) removes the temporary and any parent folders this run created, and leaves
whatever was there before untouched.

Temporary names carry the writer's PID (`.NAME.tmp-PID-xxxxxxxx`), so what a killed run
(kill -9, power loss) left behind is reclaimed by the next run that writes beside it: a temporary
whose PID is no longer alive is removed. Names are shortened (with a hash) where the target's own
name is long, so the temporary never passes the 255-byte limit of a file name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from ulpq_build.errors import UserError

OWNER_FILE = ".ulpq-partial"  # inside every temporary folder: proof that a leftover is ours to reclaim
MAX_NAME_BYTES = 255
_SHORT = 100  # bytes of a long target name kept in its temporaries' names


def _stem(name: str) -> str:
    """`name`, or a shortened form with a hash for long names, for temporaries' names."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _SHORT:
        return name
    return raw[:_SHORT].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:10]


def _prefix(target: Path, kind: str) -> str:
    return f".{_stem(target.name)}.{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def reclaim_stale(target: Path) -> list[Path]:
    """Remove temporaries for `target` left by runs that died (their PID is gone); return them."""
    pattern = re.compile(rf"\.{re.escape(_stem(target.name))}\.(?:tmp|old)-(\d+)-[A-Za-z0-9_]{{8}}")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or _pid_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                if not (entry / OWNER_FILE).is_file() and not (entry / "previous").is_dir():
                    continue  # not a folder we made
                if (entry / "previous").is_dir() and not target.exists() and not target.is_symlink():
                    os.rename(entry / "previous", target)  # killed mid-swap: the old output comes back
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # someone else's problem (read-only, vanished): never fail a run over it
    return removed


def _check_target(target: Path, flag: str) -> Path:
    """`target` as an absolute path, or a UserError for names that cannot be an output."""
    if target.name in ("", ".", ".."):
        raise UserError(f"{flag} {target}: names no new file or folder; give a new name, e.g. {flag} out")
    absolute = Path(os.path.abspath(target))
    cwd = Path.cwd()
    if absolute == cwd or absolute in cwd.parents:
        raise UserError(f"{flag} {target}: is the current folder or holds it; give a new name")
    if len(target.name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UserError(f"{flag} {target}: the name is longer than {MAX_NAME_BYTES} bytes; choose a shorter one")
    return absolute


def _make_parents(folder: Path, flag: str, target: Path) -> list[Path]:
    """Create `folder` and missing ancestors; return those created (deepest last)."""
    missing = []
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            raise UserError(f"{flag} {target}: {probe} is a broken symbolic link; choose another {flag}")
        missing.append(probe)
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {target}: {probe} is a file, not a folder; choose another {flag}")
    created = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
    except OSError as exc:
        _remove_created(created)
        raise _write_error(exc, target, flag) from None
    return created


def _remove_created(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break


def _write_error(exc: OSError, target: Path, flag: str) -> UserError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        reason = "a file name is too long"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"not writable ({reason})"
    elif exc.errno == errno.ENOSPC:
        reason = "the disk is full"
    where = ""
    if exc.filename and str(exc.filename) != str(target):
        name = Path(str(exc.filename))
        where = f" in {name.parent}" if ".tmp-" in name.name or ".old-" in name.name else f" at {name}"
    return UserError(f"{flag} {target}: cannot write{where}: {reason}; choose another {flag} or fix the folder")


def _check_parent(target: Path, given: Path, flag: str) -> None:
    """The nearest existing ancestor of `target` must be a folder (not a file)."""
    probe = target.parent
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise UserError(f"{flag} {given}: {probe} is a broken symbolic link; choose another {flag}")
    if not probe.is_dir():
        raise UserError(f"{flag} {given}: {probe} is a file, not a folder; choose another {flag}")


def preflight_folder(target: Path, *, foreign: Callable[[Path], str | None], flag: str = "--out") -> Path:
    """Every check atomic_folder makes before writing, without writing: call it before minutes of
    work. An existing `target` may be replaced only if it is empty or `foreign(target)` is None."""
    given = Path(target)
    target = _check_target(given, flag)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{flag} {given}: exists and is not a folder; choose another {flag}")
    if target.exists():
        try:
            empty = not any(target.iterdir())
        except OSError as exc:
            raise _write_error(exc, given, flag) from None
        reason = None if empty else foreign(target)
        if reason is not None:
            raise UserError(f"{flag} {given}: the folder exists and {reason}; nothing was changed, choose another "
                            f"{flag} or remove the folder yourself")
    _check_parent(target, given, flag)
    return target


def preflight_file(target: Path, *, flag: str = "--out") -> Path:
    """Every check atomic_file makes before writing, without writing."""
    given = Path(target)
    target = _check_target(given, flag)
    if target.is_dir():
        raise UserError(f"{flag} {given}: is a folder; {flag} must name a file")
    _check_parent(target, given, flag)
    return target


@contextlib.contextmanager
def atomic_folder(target: Path, *, foreign: Callable[[Path], str | None], flag: str = "--out") -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target`.

    An existing `target` is replaced only if it is empty or `foreign(target)` returns None (it is
    provably ours); otherwise a UserError, and nothing is touched. The tool never deletes a folder
    it did not write.
    """
    given = Path(target)
    target = preflight_folder(given, foreign=foreign, flag=flag)
    created = _make_parents(target.parent, flag, given)
    reclaim_stale(target)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(target, "tmp"), dir=target.parent))
        (tmp / OWNER_FILE).write_text(f"{os.getpid()}\n")
        yield tmp
        (tmp / OWNER_FILE).unlink()
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is meant to be served
        with _signals_deferred():  # the two renames of a swap are not interrupted between them
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=_prefix(target, "old"), dir=target.parent))
                os.rename(target, old / "previous")
                try:
                    os.rename(tmp, target)
                except OSError:
                    os.rename(old / "previous", target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
    except OSError as exc:
        _discard(tmp, created)
        raise _write_error(exc, given, flag) from None
    except BaseException:
        _discard(tmp, created)
        raise


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM / SIGHUP until the block ends (then they are delivered as usual)."""
    signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _discard(tmp: Path | None, created: list[Path]) -> None:
    if tmp is not None:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
    _remove_created(created)


@contextlib.contextmanager
def atomic_file(target: Path, *, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`."""
    given = Path(target)
    target = preflight_file(given, flag=flag)
    created = _make_parents(target.parent, flag, given)
    reclaim_stale(target)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=_prefix(target, "tmp"), dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        _discard(tmp, created)
        raise _write_error(exc, given, flag) from None
    except BaseException:
        _discard(tmp, created)
        raise


@contextlib.contextmanager
def scratch_folder(prefix: str = "ulpq-model-") -> Iterator[Path]:
    """A temporary folder in TMPDIR named with this PID, removed on exit; those of dead runs are
    reclaimed first (they hold our OWNER_FILE)."""
    base = Path(tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)-[A-Za-z0-9_]{{8}}")
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and not _pid_alive(int(match.group(1))) and (entry / OWNER_FILE).is_file():
                shutil.rmtree(entry, ignore_errors=True)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    except OSError as exc:
        raise UserError(f"TMPDIR {base}: cannot make a scratch folder ({exc.strerror or exc}); set TMPDIR to a "
                        f"writable folder") from None
    try:
        (folder / OWNER_FILE).write_text(f"{os.getpid()}\n")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
