"""Issue 12, the CLI half: every class of bad input, odd output path and interruption gives exit
status 2 and one line naming the input (or the correct result), never a traceback, never a file
half-written, never a file the tool did not write deleted. One test per class; in-process through
cli.main where an exit code is all that is checked, a subprocess where signals are involved.
docs/reliability.md maps each class to its test."""

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from support import ROOT, run_cli, tiny_bert
from ulpq_build import cli
from ulpq_build.default_model import default_mlp_tensors
from ulpq_build.errors import UserError
from ulpq_build.safetensors_io import SafetensorsFile


def one_line(status, err, *needles):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "b"
    from ulpq_build.bundle import build_bundle

    build_bundle("builtin:mlp", out, {"format": "int4"}, log=lambda m: None)
    return out


@pytest.fixture
def bundle_copy(mlp_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mlp_bundle, copy)
    return copy


def mlp_file(tmp_path, **changes) -> Path:
    tensors = default_mlp_tensors()
    tensors.update(changes)
    path = tmp_path / "mlp.safetensors"
    safetensors.numpy.save_file(tensors, path)
    return path


# --- data loss -----------------------------------------------------------------------------------

def test_bundle_never_replaces_a_web_apps_folder(main, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text('{"name":"x"}')
    (app / "app.js").write_text("keep")
    before = tree(app)
    status, out, err = main("bundle", "--model", "builtin:mlp", "--out", app)
    one_line(status, err, "app", "not a ulpq bundle")
    assert tree(app) == before and out == ""  # refused before any work


def test_bundle_never_deletes_a_file_added_to_a_bundle(main, tmp_path, bundle_copy):
    (bundle_copy / "notes.txt").write_text("mine")
    status, _, err = main("bundle", "--model", "builtin:mlp", "--out", bundle_copy)
    one_line(status, err, "notes.txt")
    assert (bundle_copy / "notes.txt").read_text() == "mine"


def test_bundle_replaces_its_own_bundle(main, tmp_path, bundle_copy):
    status, _, err = main("bundle", "--model", "builtin:mlp", "--format", "int8", "--out", bundle_copy)
    assert status == 0, err
    assert json.loads((bundle_copy / "manifest.json").read_text())["quantization"]["default"]["format"] == "int8"
    assert leftovers(tmp_path) == []


# --- safetensors and checkpoints -----------------------------------------------------------------

def raw_safetensors(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize("header", [
    b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",  # nested thousands deep (was RecursionError)
    b'{"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}',  # a shape holding true
    b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}',
    b'{"w":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}}',
    b'{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}',
    b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,' + b"9" * 5000 + b"]}}",
    b'{"__metadata__":{"a":1}}',
    b'\xff\xfe{}',
])
def test_malformed_safetensors_headers(tmp_path, main, header):
    path = raw_safetensors(tmp_path / "m.safetensors", header, b"\0" * 4)
    with pytest.raises(UserError, match="m.safetensors: not a valid safetensors file"):
        SafetensorsFile(path)
    one_line(*main("inspect", path)[::2], "m.safetensors")


def test_zero_dim_tensors_are_kept_and_written(main, tmp_path):
    tensors = {**default_mlp_tensors(), "bn.num_batches_tracked": np.array(7, np.int64), "temperature": np.array(0.5, np.float32)}
    model = tmp_path / "m.safetensors"
    safetensors.numpy.save_file(tensors, model)
    assert main("quantize", model, "--out", tmp_path / "q.safetensors", "--format", "int8")[0] == 0
    assert main("dequantize", tmp_path / "q.safetensors", "--out", tmp_path / "d.safetensors")[0] == 0
    back = safetensors.numpy.load_file(tmp_path / "d.safetensors")
    assert back["bn.num_batches_tracked"].shape == () and back["bn.num_batches_tracked"] == 7
    assert back["temperature"].shape == () and back["temperature"] == np.float32(0.5)
    assert main("inspect", tmp_path / "q.safetensors")[0] == 0


@pytest.fixture
def checkpoint(tmp_path):
    model = mlp_file(tmp_path)
    q = tmp_path / "q.safetensors"
    run_main_quietly("quantize", model, "--out", q, "--format", "int4")
    return q


def run_main_quietly(*args):
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert cli.main([str(a) for a in args]) == 0
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def edit_metadata(path: Path, edit) -> Path:
    """Rewrite a checkpoint's ulpq metadata through `edit(meta)` (bytes of the tensors unchanged)."""
    f = SafetensorsFile(path)
    meta = json.loads(f.metadata["ulpq"])
    edit(meta)
    header = {n: {"dtype": code, "shape": list(shape), "data_offsets": [b, e]} for n, (code, shape, b, e) in f.entries.items()}
    header["__metadata__"] = {**f.metadata, "ulpq": json.dumps(meta)}
    raw = json.dumps(header).encode()
    data = path.read_bytes()[f.data_start:]
    out = path.with_name("edited.safetensors")
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return out


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(tensors=list(m["tensors"])), "tensors"),
    (lambda m: m["tensors"]["layers.1.weight"].update(parts=["codes"]), "parts"),
    (lambda m: m["tensors"]["layers.1.weight"].update(shape=[160, 144]), "needs"),
    (lambda m: m["tensors"]["layers.1.weight"].update(shape=[160, True]), "integer"),
    (lambda m: m["tensors"]["layers.1.weight"]["spec"].update(format="int2"), "needs"),
    (lambda m: m["tensors"]["layers.1.weight"]["spec"].update(format="int5"), "unknown format"),
    (lambda m: m["tensors"]["layers.1.weight"]["spec"].update(group_size="abc"), "integer"),
    (lambda m: m.update(version=7), "version 7"),
    (lambda m: m.pop("tensors"), "tensors"),
])
def test_edited_checkpoint_metadata_is_rejected(main, checkpoint, tmp_path, edit, needle):
    edited = edit_metadata(checkpoint, edit)
    line = one_line(*main("inspect", edited)[::2], "edited.safetensors", needle)
    assert "--format" not in line  # a format edited inside a file names the file, not the flag
    one_line(*main("dequantize", edited, "--out", tmp_path / "d.safetensors")[::2], "edited.safetensors")
    assert not (tmp_path / "d.safetensors").exists() and leftovers(tmp_path) == []


def test_missing_part_is_rejected(main, checkpoint, tmp_path):
    f = SafetensorsFile(checkpoint)
    kept = {n: np.array(f.raw(n)) for n in f.names if n != "layers.1.weight:scales"}
    out = tmp_path / "cut.safetensors"
    safetensors.numpy.save_file(kept, out, metadata=f.metadata)
    one_line(*main("inspect", out)[::2], "cut.safetensors", "scales")


# --- configs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, needle", [
    ("c.json", '{"groupSize": "abc"}', "groupSize"),
    ("c.json", '{"groupSize": NaN}', "not valid JSON"),
    ("c.json", '{"bitsPerWeight": 1e400}', "not valid JSON"),
    ("c.toml", "bitsPerWeight = nan", "not valid TOML"),
    ("c.toml", "groupSize = 1e400", "not valid TOML"),
    ("c.toml", 'distributeOptimalValues = "false"', "distributeOptimalValues"),
    ("c.json", '{"distributeOptimalValues": 0}', "distributeOptimalValues"),
    ("c.json", '{"rules": {"pattern": "*"}}', "rules"),
    ("c.json", '{"rules": [{"pattern": "*", "format": "int4", "asymmetric": "yes"}]}', "asymmetric"),
    ("c.json", '{"mixedPrecision": [8]}', "mixedPrecision"),
    ("c.json", "[" * 10000 + "]" * 10000, "nested"),
    ("c.json", '{"groupSize": 10000000000000000000000000000000000000000}', "groupSize"),
    ("c.toml", "format = " + "[" * 3000 + "]" * 3000, "nested"),
])
def test_bad_config_values(main, tmp_path, name, text, needle):
    config = tmp_path / name
    config.write_text(text)
    model = mlp_file(tmp_path)
    one_line(*main("quantize", model, "--out", tmp_path / "q.safetensors", "--config", config)[::2], name, needle)
    assert not (tmp_path / "q.safetensors").exists()


def test_config_invalid_utf8_and_folder(main, tmp_path):
    model = mlp_file(tmp_path)
    bad = tmp_path / "c.toml"
    bad.write_bytes(b"bitsPerWeight = 4 # \xff\xfe\n")
    one_line(*main("quantize", model, "--out", tmp_path / "q.safetensors", "--config", bad)[::2], "c.toml", "UTF-8")
    folder = tmp_path / "cfg.json"
    folder.mkdir()
    one_line(*main("quantize", model, "--out", tmp_path / "q.safetensors", "--config", folder)[::2], "cfg.json", "folder")


# --- Hugging Face config and side files ----------------------------------------------------------

@pytest.mark.parametrize("file, content, needle", [
    ("config.json", {"layer_norm_eps": "abc"}, "layer_norm_eps"),
    ("config.json", {"layer_norm_eps": 0}, "layer_norm_eps"),
    ("config.json", {"hidden_size": True}, "hidden_size"),
    ("config.json", {"num_hidden_layers": 2.5}, "num_hidden_layers"),
    ("modules.json", {"type": "x"}, "modules.json"),
    ("modules.json", [{"type": 3}], "modules.json"),
    ("tokenizer_config.json", {"model_max_length": [1]}, "model_max_length"),
    ("tokenizer_config.json", {"do_lower_case": "false"}, "do_lower_case"),
    ("sentence_bert_config.json", {"max_seq_length": "256"}, "max_seq_length"),
])
def test_bad_hugging_face_side_files(main, tmp_path, file, content, needle):
    folder = tiny_bert(tmp_path / "bert")
    if file == "config.json":
        config = json.loads((folder / file).read_text())
        config.update(content)
        content = config
    (folder / file).write_text(json.dumps(content))
    one_line(*main("bundle", "--model", folder, "--out", tmp_path / "out")[::2], file, needle)
    assert not (tmp_path / "out").exists()


# --- bundles: inspect and verify read them through one validating reader --------------------------

def edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    result = edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest if result is None else result))


@pytest.mark.parametrize("edit, needle", [
    (lambda m: [1, 2], "expected an object"),
    (lambda m: m.pop("tensors") and None, "missing key 'tensors'"),
    (lambda m: m["tensors"][0]["parts"]["codes"].update(offset=10**9), "does not fit"),
    (lambda m: m["tensors"][0].update(shape=[288, 32]), "needs"),
    (lambda m: m["tensors"][0].update(shape=[288, True]), "integer"),
    (lambda m: m["tensors"][0]["spec"].update(format="int5"), "unknown format"),
    (lambda m: m["shards"][0].update(file="../../etc/passwd"), "shards[0].file"),
    (lambda m: m.update(schema_version=99), "newer"),
    (lambda m: m["generator"].update(name="other"), "generator"),
])
def test_edited_manifests_fail_inspect(main, bundle_copy, edit, needle):
    edit_manifest(bundle_copy, edit)
    line = one_line(*main("inspect", bundle_copy)[::2], "manifest.json", needle)
    assert "--format" not in line


def test_missing_shard_and_edited_files_fail_inspect(main, bundle_copy):
    shader = next((bundle_copy / "shaders").iterdir())
    shader.write_text(shader.read_text() + "\n// edited\n")  # was silently accepted
    one_line(*main("inspect", bundle_copy)[::2], shader.name, "the manifest says")  # its size (shader_files bytes)
    shader.unlink()
    one_line(*main("inspect", bundle_copy)[::2], shader.name, "missing")
    (bundle_copy / "weights-000.bin").unlink()
    one_line(*main("inspect", bundle_copy)[::2], "weights-000.bin", "missing")


def test_verify_checks_every_file_before_any_browser(main, bundle_copy):
    shader = next((bundle_copy / "shaders").iterdir())
    shader.write_text("// edited")
    one_line(*main("verify", bundle_copy, "--browsers", "chromium")[::2], shader.name, "the manifest says")


def test_edited_runtime_file_fails_inspect(main, bundle_copy):
    (bundle_copy / "ulpq.js").write_text("// replaced")
    one_line(*main("inspect", bundle_copy)[::2], "ulpq.js", "sha256")


# --- output paths --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["bundle", "quantize", "dequantize"])
def test_unwritable_outputs(main, tmp_path, checkpoint, command):
    (tmp_path / "file.txt").write_text("x")
    args = {"bundle": ["bundle", "--model", "builtin:mlp"], "quantize": ["quantize", mlp_file(tmp_path)],
            "dequantize": ["dequantize", checkpoint]}[command]
    for out, needle in ((tmp_path / "file.txt" / "x", "is a file"), (".", "names no new"),
                        (tmp_path / ("n" * 256), "longer than 255")):
        one_line(*main(*args, "--out", out)[::2], "--out", needle)
    before = sorted(p.name for p in tmp_path.iterdir())
    long_name = tmp_path / "new" / ("n" * 250)  # its temporary name would pass 255 bytes
    assert main(*args, "--out", long_name)[0] == 0 and long_name.exists()
    assert leftovers(tmp_path / "new") == [] and sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["new"])


def test_read_only_folder(main, tmp_path, monkeypatch):
    """An immutable or read-only folder (root ignores chmod, so the refusal is simulated at mkdtemp)."""
    import tempfile

    def refusing(real):
        def make(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == tmp_path / "ro":
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)
        return make

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", refusing(tempfile.mkdtemp))
    monkeypatch.setattr(tempfile, "mkstemp", refusing(tempfile.mkstemp))
    one_line(*main("quantize", mlp_file(tmp_path), "--out", tmp_path / "ro" / "q.safetensors")[::2], "--out", "not writable")
    one_line(*main("bundle", "--model", mlp_file(tmp_path), "--out", tmp_path / "ro" / "b")[::2], "--out", "not writable")
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_failed_run_leaves_no_new_parent_folders(main, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    bad = mlp_file(tmp_path, **{"layers.1.weight": np.full((160, 288), np.nan, np.float32)})
    one_line(*main("bundle", "--model", bad, "--out", tmp_path / "a" / "b" / "out")[::2], "NaN")
    one_line(*main("quantize", bad, "--out", tmp_path / "c" / "d" / "q.safetensors")[::2], "mlp.safetensors", "NaN")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert list((tmp_path / "tmpdir").iterdir()) == []  # no ulpq-model-* left in TMPDIR
    monkeypatch.setattr(tempfile, "tempdir", None)


def test_stale_temporaries_of_killed_runs_are_reclaimed(main, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a PID that has exited
    stale = tmp_path / f".out.tmp-{pid}-abcd1234"
    stale.mkdir()
    (stale / ".ulpq-partial").write_text(str(pid))
    (stale / "weights-000.bin").write_bytes(b"\0" * 1000)
    foreign = tmp_path / f".out.tmp-{pid}-zzzz9999"  # the same name pattern, but not a folder we made
    foreign.mkdir()
    alive = tmp_path / f".out.tmp-{os.getpid()}-efgh5678"  # a run still going
    alive.mkdir()
    (alive / ".ulpq-partial").write_text("")
    assert main("bundle", "--model", "builtin:mlp", "--out", tmp_path / "out")[0] == 0
    assert not stale.exists() and foreign.exists() and alive.exists()


def test_a_bundle_killed_mid_swap_comes_back(tmp_path, mlp_bundle):
    """kill -9 between the two renames of a swap: the old bundle sits in .NAME.old-PID-*/previous; the
    next run puts it back instead of deleting it."""
    import shutil

    from ulpq_build.atomic import reclaim_stale

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    old = tmp_path / f".out.old-{dead}-abcd1234"
    old.mkdir()
    shutil.copytree(mlp_bundle, old / "previous")
    reclaim_stale(tmp_path / "out")
    assert tree(tmp_path / "out") == tree(mlp_bundle) and not old.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_bundle_leaves_nothing(tmp_path, sig):
    """SIGTERM / Ctrl-C while the bundle is written: the temporary folder and the scratch model folder
    are removed, exit status 128 + signal, one line."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir)}
    model = tiny_bert(tmp_path / "bert", hidden=256, inter=1024, layers=4, vocab=3000)
    proc = subprocess.Popen([sys.executable, "-m", "ulpq_build", "bundle", "--model", str(model), "--format", "int4-optimal",
                             "--codebook", "channel", "--out", str(tmp_path / "out")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # as in a terminal's foreground job: a test run started in the background by a
                            # shell without job control inherits SIGINT ignored, and Python then never
                            # raises KeyboardInterrupt (POSIX: asynchronous lists ignore SIGINT)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not leftovers(tmp_path) and proc.poll() is None:
        time.sleep(0.02)
    assert leftovers(tmp_path), "the bundle finished before it could be interrupted"
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + sig, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists() and list(tmpdir.iterdir()) == []


# --- silently wrong, now refused or reported -----------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--target-bpw", "nan"), ("--target-bpw", "inf"), ("--target-bpw", "-1"),
                                         ("--target-bpw", "0"), ("--target-size", "nan"), ("--target-size", "-5")])
def test_budgets_checked_up_front(main, tmp_path, flag, value):
    model = mlp_file(tmp_path)
    for args in (["quantize", model, "--out", tmp_path / "q.safetensors"], ["bundle", "--model", model, "--out", tmp_path / "b"]):
        status, out, err = main(*args, flag, value)
        one_line(status, err, flag)
        assert out == ""  # refused before any work


def test_nan_in_a_bias_is_refused_by_quantize_as_by_bundle(main, tmp_path):
    bias = default_mlp_tensors()["layers.0.bias"]
    bias[5] = np.nan
    model = mlp_file(tmp_path, **{"layers.0.bias": bias})
    one_line(*main("quantize", model, "--out", tmp_path / "q.safetensors")[::2], "mlp.safetensors", "layers.0.bias", "NaN")
    one_line(*main("bundle", "--model", model, "--out", tmp_path / "b")[::2], "layers.0.bias", "NaN")
    assert not (tmp_path / "q.safetensors").exists() and not (tmp_path / "b").exists()


def test_float16_scales_that_flush_weights_warn_once(main, tmp_path):
    weight = default_mlp_tensors()["layers.1.weight"]
    weight[:40] *= 1e-9  # rows whose scales fall below float16's range
    model = mlp_file(tmp_path, **{"layers.1.weight": weight})
    status, _, err = main("quantize", model, "--out", tmp_path / "q.safetensors", "--scale-dtype", "float16")
    assert status == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "layers.1.weight" in lines[0]
    assert "RuntimeWarning" not in err and "--scale-dtype float32" in lines[0]


def test_values_past_the_original_dtypes_range_are_refused_by_dequantize(main, tmp_path):
    """A damaged checkpoint whose scales stay finite but decode past float16's range: dequantize says
    so in one line naming the tensor, and writes nothing (it wrote Inf after numpy's overflow
    warning, which a fuzzed file found)."""
    model = tmp_path / "m16.safetensors"
    safetensors.numpy.save_file({k: v.astype(np.float16) for k, v in default_mlp_tensors().items()}, model)
    assert main("quantize", model, "--out", tmp_path / "q.safetensors", "--format", "int8")[0] == 0
    with safetensors.safe_open(tmp_path / "q.safetensors", "np") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    tensors["layers.1.weight:scales"] = tensors["layers.1.weight:scales"] * np.float32(1e8)
    assert np.isfinite(tensors["layers.1.weight:scales"]).all()
    safetensors.numpy.save_file(tensors, tmp_path / "damaged.safetensors", metadata=metadata)
    one_line(*main("dequantize", tmp_path / "damaged.safetensors", "--out", tmp_path / "d.safetensors")[::2],
             "damaged.safetensors", "layers.1.weight", "float16's range")
    assert not (tmp_path / "d.safetensors").exists() and leftovers(tmp_path) == []
    # the undamaged file restores
    assert main("dequantize", tmp_path / "q.safetensors", "--out", tmp_path / "d.safetensors")[0] == 0


def test_integer_weights_get_advice_that_works(main, tmp_path):
    ints = (np.arange(288 * 64).reshape(288, 64) % 7 - 3).astype(np.int64)
    model = mlp_file(tmp_path, **{"layers.0.weight": ints})
    rule = tmp_path / "c.json"
    rule.write_text(json.dumps({"rules": [{"pattern": "layers.0.weight", "format": "int4"}]}))
    line = one_line(*main("quantize", model, "--out", tmp_path / "q.safetensors", "--config", rule)[::2], "c.json", "int64")
    assert "float32 rule" not in line
    # by default integer tensors are kept as they are (quantize) or widened exactly (bundle)
    assert main("quantize", model, "--out", tmp_path / "q.safetensors")[0] == 0
    assert safetensors.numpy.load_file(tmp_path / "q.safetensors")["layers.0.weight"].dtype == np.int64
    assert main("bundle", "--model", model, "--out", tmp_path / "b")[0] == 0


def test_no_advice_to_use_the_default_method(main, tmp_path):
    status, _, err = main("quantize", mlp_file(tmp_path), "--out", tmp_path / "q.safetensors", "--target-bpw", "4")
    line = one_line(status, err, "--target-bpw")
    assert "--method rtn" not in line


# --- one planner for quantize and bundle ---------------------------------------------------------

def specs_of_bundle(folder: Path) -> dict:
    return {t["name"]: t["format"] for t in json.loads((folder / "manifest.json").read_text())["tensors"]}


def specs_of_checkpoint(path: Path) -> dict:
    from ulpq_build.checkpoint import Checkpoint

    return {t.name: (t.spec.format if t.spec else "float32") for t in Checkpoint(path).tensors}


@pytest.mark.parametrize("model", ["builtin:vit", "builtin:mlp", "bert"])
def test_quantize_and_bundle_quantize_the_same_tensors(main, tmp_path, model):
    from ulpq_build.bundle import resolve_model

    if model == "bert":
        path = tiny_bert(tmp_path / "bert")
    else:
        path, _ = resolve_model(model, tmp_path)
    assert main("bundle", "--model", path, "--format", "int8", "--out", tmp_path / "b")[0] == 0
    assert main("quantize", path, "--format", "int8", "--out", tmp_path / "q.safetensors")[0] == 0
    bundled, checkpoint = specs_of_bundle(tmp_path / "b"), specs_of_checkpoint(tmp_path / "q.safetensors")
    assert {n: checkpoint[n] for n in bundled} == bundled
    if model == "builtin:vit":  # the token-assembly kernel reads these as float32 (was: int8 in the checkpoint)
        pinned = [n for n in checkpoint if n.endswith(("embeddings.cls_token", "embeddings.position_embeddings"))]
        assert len(pinned) == 2 and {checkpoint[n] for n in pinned} == {"float32"}


# --- serve and usage errors ----------------------------------------------------------------------

def test_serve_bad_port(tmp_path):
    proc = run_cli("serve", tmp_path, "--port", "70000")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--port 70000" in proc.stderr, proc.stderr


def test_usage_errors_are_one_line(main):
    status, _, err = main("quantize", "m.safetensors", "--out", "q.safetensors", "--group-size", "abc")
    one_line(status, err, "--group-size")
