"""Helpers shared by the unit tests (imported as `support`; conftest.py holds only fixtures)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, check=None, timeout=600):
    """Run `python -m ulpq_build ...` as a user would; return the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "ulpq_build", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def run_node(script, *args, flags=(), timeout=600):
    """Run a Node script (the JS runtime's test drivers in tests/js) with `args`; return the
    CompletedProcess. Without node the test fails: .ci/run installs it, so it is never skipped."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it): the JS runtime tests need it")
    return subprocess.run([node, *flags, str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def node_json(script, *args, request=None, tmp_path=None, flags=(), timeout=600):
    """run_node, which must exit 0; its stdout parsed as JSON. `request` (any JSON value) is written
    to tmp_path/request.json and passed as the last argument."""
    if request is not None:
        path = Path(tmp_path) / "request.json"
        path.write_text(json.dumps(request))
        args = (*args, path)
    proc = run_node(script, *args, flags=flags, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_model(folder, tensors, config=None, **side_files):
    """A Hugging Face-style model folder: model.safetensors (+ config.json, + other JSON/text files)."""
    import json

    import safetensors.numpy

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    for name, content in side_files.items():
        name = name.replace("__", ".")
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def tiny_bert(folder, seed=0, hidden=32, layers=2, heads=2, inter=64, vocab=40, positions=16):
    """A small random BertModel folder (config.json, vocab.txt, model.safetensors with a pooler and
    int64 position ids, as real checkpoints carry) that `bundle` and `quantize` both take."""
    import numpy as np

    rng = np.random.default_rng(seed)
    f32 = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)
    t = {"embeddings.word_embeddings.weight": f32(vocab, hidden), "embeddings.position_embeddings.weight": f32(positions, hidden),
         "embeddings.token_type_embeddings.weight": f32(2, hidden), "embeddings.LayerNorm.weight": 1 + f32(hidden),
         "embeddings.LayerNorm.bias": f32(hidden), "embeddings.position_ids": np.arange(positions, dtype=np.int64)[None],
         "pooler.dense.weight": f32(hidden, hidden), "pooler.dense.bias": f32(hidden)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for stem, shape in (("attention.self.query", (hidden, hidden)), ("attention.self.key", (hidden, hidden)),
                            ("attention.self.value", (hidden, hidden)), ("attention.output.dense", (hidden, hidden)),
                            ("intermediate.dense", (inter, hidden)), ("output.dense", (hidden, inter))):
            t[p + stem + ".weight"], t[p + stem + ".bias"] = f32(*shape), f32(shape[0])
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"], t[p + norm + ".bias"] = 1 + f32(hidden), f32(hidden)
    config = {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": inter, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "vocab_size": vocab,
              "max_position_embeddings": positions}
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab - 5)]
    return write_model(folder, t, config, vocab__txt="\n".join(words) + "\n",
                       tokenizer_config__json={"do_lower_case": True, "model_max_length": 512})


def run_again_on_dawn(test_file, selection: str, variable: str, tmp_path) -> None:
    """Run the tests of `test_file` chosen by `selection` (pytest -k) again in a child pytest with
    `variable` set to "dawn", so they execute on Dawn (Tint's code, as Chrome runs it). Dawn refuses
    Debian 12's Mesa 22 lavapipe, so the child gets the Mesa 25 one in .mesa/ through
    VK_ICD_FILENAMES and LD_LIBRARY_PATH, which must be set before the process starts. Fails (never
    skips) without that lavapipe, when the child fails, or when it skipped anything."""
    from ulpq_build.browsers import node_environment

    env = node_environment()
    if "VK_ICD_FILENAMES" not in env:
        pytest.fail("no Mesa >= 25 lavapipe for Dawn: run scripts/private_mesa.sh (scripts/setup.sh does) or set ULPQ_MESA")
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    env.update({variable: "dawn", "XDG_RUNTIME_DIR": str(xdg)})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(test_file), "-k", selection],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "skipped" not in proc.stdout and "deselected" in proc.stdout


def serving(root, payload):
    """A module fixture's body: serve `root` (ulpq_build.serve.BundleServer, any free port) and yield
    (server, payload) to the tests; shut the server down after them."""
    from ulpq_build.serve import BundleServer

    server = BundleServer(root, 0).start_in_background()
    try:
        yield server, payload
    finally:
        server.shutdown()
        server.server_close()
