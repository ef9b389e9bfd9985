"""The runtime as an npm package, as an app developer meets it: `npm pack` of web_runtime/, the
tarball installed into an app's node_modules, TypeScript and esbuild from the checkout's .node/
(scripts/setup.sh installs them, pinned). Shared by tests/test_npm_package.py and
e2e/test_npm_app_in_browser.py. A missing tool FAILS the test that needs it (never a skip)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "web_runtime"
APP_SOURCES = ROOT / "tests" / "js" / "npm_app"
NODE_BIN = ROOT / ".node" / "node_modules" / ".bin"
PACKAGE = json.loads((RUNTIME / "package.json").read_text())


def tool(name: str) -> str:
    """A command: npm and node from PATH, tsc and esbuild from .node/ (where setup.sh pins them)."""
    found = shutil.which(name) if name in ("npm", "node") else (str(NODE_BIN / name) if (NODE_BIN / name).exists() else None)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/setup.sh (it installs node, npm, and typescript and "
                    "esbuild into .node/); the npm package tests need it")
    return found


def run(*args, cwd=None, check=True, timeout=300, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def pack(dest: Path) -> tuple[Path, dict]:
    """`npm pack` web_runtime into `dest`: the tarball and npm's report (name, version, size, files)."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = run(tool("npm"), "pack", "--json", "--pack-destination", dest, cwd=RUNTIME)
    [report] = json.loads(proc.stdout)
    return dest / report["filename"], report


def install_app(tarball: Path, app: Path) -> Path:
    """An app folder with the tarball installed as an ordinary dependency (offline: nothing is fetched)."""
    app.mkdir(parents=True, exist_ok=True)
    (app / "package.json").write_text(json.dumps({"name": "npm-app", "private": True, "type": "module"}))
    run(tool("npm"), "install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", tarball, cwd=app)
    assert (app / "node_modules" / PACKAGE["name"] / "package.json").is_file()
    return app


def copy_app_sources(app: Path, *names: str) -> None:
    for name in names:
        shutil.copyfile(APP_SOURCES / name, app / name)


def esbuild_app(app: Path, entry: str = "main.js", out: str = "app.js") -> Path:
    """Bundle `entry` and everything it imports (the package included) into one browser script."""
    run(tool("esbuild"), entry, "--bundle", "--format=esm", "--platform=browser", "--log-level=warning", f"--outfile={out}",
        cwd=app)
    return app / out
