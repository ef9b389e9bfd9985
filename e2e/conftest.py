"""Browser fixtures: bundles built once per session and served from sub-paths of one site,
and one session per browser, reused by every test. A browser that cannot start fails the
tests that need it (never a skip)."""

from __future__ import annotations

import shutil

import pytest

from ulpq_build.browsers import launch
from ulpq_build.cli import main as cli_main
from ulpq_build.serve import serving

from e2e_support import E2E_FORMATS, WAIT_FOR_DEMO

@pytest.fixture(scope="session")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for fmt in E2E_FORMATS:
        assert cli_main(["bundle", "--model", "builtin:mlp", "--format", fmt, "--out", str(root / fmt)]) == 0
    tampered = root / "int4-tampered"
    shutil.copytree(root / "int4", tampered)
    shard = tampered / "weights-000.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    shard.write_bytes(bytes(data))
    return root


@pytest.fixture(scope="session")
def server(site):
    with serving(site) as srv:
        yield srv


_sessions: dict[str, object] = {}


@pytest.fixture(scope="session")
def browsers():
    """browsers(name) -> a started session, launched on first use and closed at the end."""
    def get(name: str):
        if name not in _sessions:
            _sessions[name] = launch(name)
        return _sessions[name]

    yield get
    for session in _sessions.values():
        session.close()
    _sessions.clear()


def open_demo(session, url: str) -> dict:
    session.goto(url)
    state = session.evaluate(WAIT_FOR_DEMO)
    assert state["status"] != "timeout", f"{url}: the demo page did not finish"
    return state


@pytest.fixture
def demo(browsers, server):
    def run(browser: str, path: str) -> tuple[object, dict]:
        session = browsers(browser)
        return session, open_demo(session, server.url + path)

    return run


