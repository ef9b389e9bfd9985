"""The README's two commands stay true: the first is run here on a copy of the working tree in a
fresh virtual environment (a non-editable install, then used from another folder to prove the
templates and the runtime ship inside the wheel); the second is what .ci/run runs, verbatim."""

import json
import os
import re
import shutil
import subprocess
import sys


from support import ROOT


def readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_readme_starts_with_two_commands():
    commands = readme_commands()
    assert len(commands) == 2
    head = (ROOT / "README.md").read_text().split("## ", 2)
    assert head[1].startswith("Two commands")  # the first section a reader meets


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert readme_commands()[1] in ci
    assert readme_commands()[1].endswith("python3 -m pytest")


def copy_working_tree(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_first_command_on_a_fresh_copy(tmp_path):
    repo = tmp_path / "repo"
    copy_working_tree(repo)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_commands()[0]], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((repo / "ulpq-bundle" / "manifest.json").read_text())
    # int4 by GPTQ, so the calibration text was found inside the installed wheel
    assert (manifest["quantization"]["method"], manifest["quantization"]["default"]["format"]) == ("gptq", "int4")
    assert {s["profile"] for s in manifest["shaders"]} == {"cpu", "firefox", "chrome", "safari", "edge"}
    assert (repo / "ulpq-bundle" / "index.html").is_file()

    # the installed wheel (not the checkout) works from any folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([venv / "bin" / "python", "-c", "import ulpq_build.resources as r, ulpq_build; "
                            "print(ulpq_build.__file__); print(r.templates_dir()); print(r.web_runtime_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert str(venv) in probe[0] and "_data" in probe[1] and "_data" in probe[2], probe
    run = subprocess.run([venv / "bin" / "python", "-m", "ulpq_build", "bundle", "--format", "int2", "--out", "b"],
                         cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "b" / "ulpq.js").is_file() and any((elsewhere / "b" / "shaders").iterdir())


def test_examples_block_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Examples", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("minilm-int4.safetensors", "minilm-restored.safetensors", "minilm-mixed.safetensors",
                 "bundle-int3/manifest.json"):
        assert (tmp_path / name).is_file(), name
    assert "rel.rmse" in proc.stdout and "encoder.layer.5.output.dense.weight" in proc.stdout
