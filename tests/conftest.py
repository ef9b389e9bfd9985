import signal

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def main(capsys, monkeypatch, tmp_path):
    """cli.main in this process, run in tmp_path: returns (exit status, stdout, stderr); the signal
    handlers the CLI installs (atomic output cleanup) are restored afterwards."""
    from ulpq_build import cli

    monkeypatch.chdir(tmp_path)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def run(*args):
        try:
            status = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            status = exc.code
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
        out, err = capsys.readouterr()
        return status, out, err

    return run
