"""Property-based fuzzing of every input reader (issue 12): mutations of valid seed files (byte flips,
truncation, JSON edits, type swaps, deep nesting, huge numbers, NaN; see tests/fuzzing.py) are either
read, or refused with a UserError whose message is one line naming the input; never another
exception. Then a few mutated inputs through the CLI in a subprocess: exit status 0 or 2, at most
one line on stderr, no traceback, nothing left behind. Bounded for CI (about a minute in all);
scripts/fuzz_readers.py runs >= 10,000 inputs per reader."""

import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from support import ROOT

OPS = st.lists(st.tuples(st.integers(0, fuzzing.N_KINDS - 1), st.integers(0, 2**30), st.integers(0, 2**30)),
               min_size=1, max_size=4)
IN_PROCESS = settings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLI = settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return fuzzing.Workspace(tmp_path_factory.mktemp("fuzz"))


def test_every_seed_is_valid(ws):
    """The properties below start from files every reader accepts (else they test nothing)."""
    for reader in fuzzing.READERS:
        for name, data in ws.seeds(reader):
            if name == "mlp-int4.json":  # committed manifest: its runtime hashes follow web_runtime/
                continue
            assert fuzzing.check_one(ws, reader, name, data) == "ok", (reader, name)


@pytest.mark.parametrize("reader", list(fuzzing.READERS))
def test_reader_gives_one_line_user_errors_only(ws, reader):
    seeds = ws.seeds(reader)
    outcomes = {"ok": 0, "user_error": 0}

    @IN_PROCESS
    @given(index=st.integers(0, len(seeds) - 1), ops=OPS)
    def run(index, ops):
        name, seed = seeds[index]
        outcomes[fuzzing.check_one(ws, reader, name, fuzzing.mutate(seed, ops, fuzzing.codec_for(reader, name)))] += 1

    run()
    assert sum(outcomes.values()) >= 100 and outcomes["user_error"] > 0  # the mutations do reach the checks


def test_deep_nesting_and_huge_numbers_in_every_json_reader(ws):
    """The classic crashers, explicitly (hypothesis may not draw them every run)."""
    for reader in ("hf_config", "quant_config", "manifest"):
        name = next(n for n, _ in ws.seeds(reader) if n.endswith(".json"))
        for data in (b"[" * 100000 + b"]" * 100000, b'{"a": ' + b"9" * 100000 + b"}", b'{"a": 1e400}', b'{"a": NaN}',
                     b'{"a": "\xff"}', b"", b"\x00" * 64):
            assert fuzzing.check_one(ws, reader, name, data) == "user_error", (reader, data[:20])
    for data in (b"\xff" * 8 + b"{}", (10**6).to_bytes(8, "little") + b"[" * 10**6):
        assert fuzzing.check_one(ws, "safetensors", "small.safetensors", data) == "user_error"


def cli(*args, cwd):
    env_path = str(ROOT)
    return subprocess.run([sys.executable, "-m", "ulpq_build", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=300)


def assert_clean(proc, out_dir, out_name):
    assert proc.returncode in (0, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert not (out_dir / out_name).exists()
    assert not [p for p in out_dir.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("reader", ["safetensors", "checkpoint", "quant_config", "hf_config", "manifest"])
def test_cli_with_mutated_inputs(ws, tmp_path_factory, reader):
    seeds = ws.seeds(reader)

    @CLI
    @given(index=st.integers(0, len(seeds) - 1), ops=OPS)
    def run(index, ops):
        name, seed = seeds[index]
        data = fuzzing.mutate(seed, ops, fuzzing.codec_for(reader, name))
        work = tmp_path_factory.mktemp("cli")
        if reader == "safetensors":
            (work / "m.safetensors").write_bytes(data)
            assert_clean(cli("quantize", "m.safetensors", "--out", "q.safetensors", cwd=work), work, "q.safetensors")
        elif reader == "checkpoint":
            (work / "q.safetensors").write_bytes(data)
            assert_clean(cli("dequantize", "q.safetensors", "--out", "d.safetensors", cwd=work), work, "d.safetensors")
        elif reader == "hf_config":
            model = work / "model"
            shutil.copytree(ws.vit if name.startswith("vit--") else ws.bert, model)
            stem = name.split("--")[-1]
            target = model / ("1_Pooling/config.json" if stem == "pooling.json" else stem)
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
            assert_clean(cli("bundle", "--model", model, "--out", "b", cwd=work), work, "b")
        elif reader == "quant_config":
            config = work / ("c" + name[name.rfind("."):])
            config.write_bytes(data)
            proc = cli("quantize", fuzzing.SEEDS / "safetensors" / "small.safetensors", "--config", config,
                       "--out", "q.safetensors", cwd=work)
            assert_clean(proc, work, "q.safetensors")
        else:
            shutil.copytree(ws.bundle, work / "b")
            (work / "b" / "manifest.json").write_bytes(data)
            proc = cli("inspect", "b", cwd=work)
            assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
            assert proc.returncode == 0 or len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    run()
