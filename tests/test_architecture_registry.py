"""The architecture registry (ulpq_build/architectures/, web_runtime/architectures.js): a model family
is one row on each side. A toy family, defined only here, is registered as a row and goes the whole
way (describe, GPTQ calibration, bundle, verification input, bench scoring, the JS runtime's CPU path)
without an edit anywhere else; and no module outside the rows branches on an architecture's name."""

import ast
import json
import re

import numpy as np
import pytest

from support import ROOT, node_json, write_model
from ulpq_build import architectures
from ulpq_build.architectures import Architecture, CalibrationInputs, describe_model, supported
from ulpq_build.architectures.reading import Tensors
from ulpq_build.bench import Evaluator, Preset
from ulpq_build.browser_check import fixed_input
from ulpq_build.bundle import build_bundle
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.calibration import calibration_for
from ulpq_build.errors import UserError
from ulpq_build.model_source import open_model
from ulpq_build.reference import layernorm, linear, relative_error

IN, OUT = 24, 40
# the JS CPU path computes in float64 over float32 weights; its GELU's erf is an approximation
TOY_CPU_TOLERANCE = 1e-4


def toy_describe(source):
    t = Tensors(source, "toy")
    return {"architecture": "toy", "input_size": IN, "layers": [t.linear("proj", "gelu", expect=(OUT, IN))],
            "norm": t.norm("norm"), "layer_norm_eps": 1e-5, "output": "output"}


def toy_forward(model, weights, x, hook=None, dtype=np.float64):
    h = linear(np.asarray(x, dtype), model["layers"][0], weights, hook=hook)
    return layernorm(h, model["norm"], weights, model["layer_norm_eps"])


class ToyScore:
    def __init__(self, model, folder, fp32_weights):
        self.model, self.x = model, np.random.default_rng(3).standard_normal((8, IN))
        self.reference = toy_forward(model, fp32_weights, self.x)
        self.base = 1.0

    def __call__(self, weights):
        closeness = 1.0 - relative_error(toy_forward(self.model, weights, self.x), self.reference)
        return {"metric": "toy closeness", "value": closeness, "ratio": 100 * closeness}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy row registered (for this test only) and a model folder of its kind."""
    seen = []
    calibration_rows = np.random.default_rng(5).standard_normal((32, IN))

    def calibration_inputs(model, folder, texts):
        seen.append("calibration")
        return CalibrationInputs(calibration_rows, calibration_rows[:8])

    def verification_input(model, folder, manifest, images):
        x = np.asarray(manifest["demo"]["inputs"])
        return x.tolist(), x, lambda expected, got: ("rel. error", relative_error(got, expected))

    row = Architecture(
        name="toy", model_types=("ulpq-toy",), summary="ulpq-toy (a test's row)",
        describe=lambda source: seen.append("describe") or toy_describe(source), reference_forward=toy_forward,
        input_kind="rows", verification_input=verification_input,
        demo=lambda model: {"inputs": np.random.default_rng(9).standard_normal((3, IN)).round(4).tolist()},
        operator_kernels=lambda model: [("layernorm", "layernorm", None, {})],
        bundle_files=lambda model, source: ["toy-notes.txt"],
        calibration_inputs=calibration_inputs, accuracy=ToyScore,
        preset_overrides={"int2-gptq": {"format": "int2"}})
    monkeypatch.setitem(architectures.ARCHITECTURES, "toy", row)
    rng = np.random.default_rng(1)
    folder = write_model(tmp_path / "toy-model", {
        "proj.weight": rng.standard_normal((OUT, IN)).astype(np.float32) / 5,
        "proj.bias": rng.standard_normal(OUT).astype(np.float32) / 10,
        "norm.weight": (1 + rng.standard_normal(OUT) / 10).astype(np.float32),
        "norm.bias": rng.standard_normal(OUT).astype(np.float32) / 10,
    }, {"model_type": "ulpq-toy"})
    (folder / "toy-notes.txt").write_text("a file the toy row ships")
    return row, folder, seen


def test_a_registered_row_drives_describe_bundle_calibration_and_checks(toy, tmp_path):
    row, folder, seen = toy
    model = describe_model(open_model(folder))
    assert seen == ["describe"] and model["architecture"] == "toy"
    assert "ulpq-toy (a test's row)" in supported()

    out = tmp_path / "bundle"
    build_bundle(folder, out, {"format": "int8"}, method="gptq", log=lambda *a: None)
    assert seen.count("calibration") == 1  # GPTQ calibrated on the row's inputs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "toy"
    assert manifest["quantization"]["method"] == "gptq"
    assert all(set(kernels) == {"layernorm"} for kernels in manifest["model"]["op_kernels"].values())
    assert any(s["kernel"] == "layernorm" for s in manifest["shaders"])
    assert manifest["demo"] == row.demo(model)
    assert [f["file"] for f in manifest["files"] if f["file"] == "toy-notes.txt"] == ["toy-notes.txt"]
    assert (out / "toy-notes.txt").read_text() == "a file the toy row ships"
    assert (out / "architectures.js").is_file()  # the JS registry ships with the runtime

    bundle = load_bundle(out)  # bundle_reader accepts every registered name
    kind, payload, expected, compare = fixed_input(bundle)
    x = np.asarray(manifest["demo"]["inputs"])
    assert kind == "rows" and payload == x.tolist()
    np.testing.assert_allclose(expected, toy_forward(bundle.model, bundle.weights, x), rtol=0, atol=0)
    assert compare(expected) == ("rel. error", 0.0)

    calibration = calibration_for(bundle.model, folder)
    rows = np.random.default_rng(5).standard_normal((32, IN))
    # the calibration runs are float32 (calibration.Calibration says why): the row's forward in float32, exactly
    np.testing.assert_allclose(calibration.run(bundle.weights),
                               toy_forward(bundle.model, bundle.weights, rows, dtype=np.float32), rtol=0, atol=0)

    score = Evaluator(bundle.model, out, bundle.weights)
    assert score.base == 1.0 and score(bundle.weights)["ratio"] == 100.0
    assert Preset.parse("int2-gptq", "toy").options["overrides"] == {"format": "int2"}
    assert Preset.parse("int2-gptq", "bert").options["overrides"]["group_size"] == 32  # others keep the general rule

    # The JS side: the same toy row added to web_runtime/architectures.js's table runs the bundle
    # on the runtime's CPU path under Node, with no other change to the runtime.
    script = tmp_path / "toy.mjs"
    script.write_text(TOY_JS)
    result = node_json(script, out, request={"rows": x.tolist()}, tmp_path=tmp_path, timeout=300)
    assert result["path"] == "cpu"
    got = np.asarray(result["output"])
    assert relative_error(got, expected) < TOY_CPU_TOLERANCE


TOY_JS = """
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, requestPath] = process.argv.slice(2);
const load = (name) => import(pathToFileURL(path.join(path.resolve(dir), name)).href);
const { ARCHITECTURES } = await load('architectures.js');
const { loadBundle } = await load('node.js');
ARCHITECTURES.toy = {
  input: 'rows',
  manifest: { input_size: 'uint', norm: { weight: 'string', bias: 'string' }, layer_norm_eps: 'number' },
  tokenizer: null,
  encode: ARCHITECTURES.mlp.encode,  // rows of numbers, as the MLP takes them
  async run(backend, model, x) {
    backend.begin(`toy:${x.rows}`);
    const h = backend.linear(backend.input(x.data, x.rows, model.input_size), model.layers[0]);
    return backend.output(backend.layernorm(h, model.norm, model.layer_norm_eps));
  },
  output: () => {},
  demo: 'rows',
};
const model = await loadBundle(path.resolve(dir), { hardware: 'cpu' });
const { rows } = JSON.parse(readFileSync(requestPath, 'utf8'));
const result = await model.process(rows);
process.stdout.write(JSON.stringify({ output: result.output, path: result.path }));
"""


def test_an_unknown_model_type_still_names_what_is_supported(tmp_path):
    folder = write_model(tmp_path / "m", {"w.weight": np.ones((2, 2), np.float32)}, {"model_type": "gpt9"})
    with pytest.raises(UserError) as err:
        describe_model(open_model(folder))
    assert str(err.value).endswith("unsupported architecture 'gpt9' (config.json model_type); supported: bert (BertModel, "
                                   "sentence-transformers), vit (ViTModel, ViTForImageClassification), ulpq-mlp (a chain "
                                   "of Linear layers), llama, qwen2, mistral (LlamaForCausalLM-style decoders), gpt2 "
                                   "(GPT2LMHeadModel)")
    assert "\n" not in str(err.value)


def test_two_rows_may_not_claim_one_model_type():
    clash = Architecture(name="bert2", model_types=("bert",), summary="", describe=toy_describe,
                         reference_forward=toy_forward, input_kind="texts", verification_input=None, demo=dict)
    with pytest.raises(ValueError, match="already read by another row"):
        architectures.register(clash)
    assert "bert2" not in architectures.ARCHITECTURES


# --- no branches on a name outside the rows --------------------------------------------------------

ROWS_PY = ROOT / "ulpq_build" / "architectures"
ROWS_JS = {"architectures.js", "graphs.js"}  # the JS rows, and the graph each names


def _python_mentions(code: str, where: str, names: set[str]) -> list[str]:
    """Every string constant equal to an architecture's name: `arch == "bert"`, `{"vit": ...}`,
    `choices=("bert", ...)` alike."""
    return [f"{where}:{node.lineno}: {node.value!r}" for node in ast.walk(ast.parse(code, where))
            if isinstance(node, ast.Constant) and node.value in names]


def _js_mentions(code: str, where: str, names: set[str]) -> list[str]:
    """Quoted names (`=== 'vit'`), table keys (`bert: {...}`) and lookups (`GRAPHS.bert`); comments
    are left out."""
    alternatives = "|".join(sorted(names))
    pattern = re.compile(rf"""(['"`])({alternatives})\1|\b({alternatives})\s*:|\.({alternatives})\b""")
    code = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), code, flags=re.S)
    found = []
    for number, line in enumerate(code.splitlines(), 1):
        for match in pattern.finditer(re.sub(r"(^|\s)//.*", "", line)):
            found.append(f"{where}:{number}: {match.group()}")
    return found


def _mentions_outside_the_rows(names: set[str]) -> list[str]:
    found = []
    for path in sorted((ROOT / "ulpq_build").rglob("*.py")):
        if ROWS_PY not in path.parents:
            found += _python_mentions(path.read_text(), str(path.relative_to(ROOT)), names)
    for path in sorted((ROOT / "web_runtime").glob("*.js")):
        if path.name not in ROWS_JS:
            found += _js_mentions(path.read_text(), str(path.relative_to(ROOT)), names)
    return found


def test_no_module_outside_the_rows_branches_on_an_architecture_name():
    names = set(architectures.ARCHITECTURES)
    assert names >= {"bert", "vit", "mlp"}
    assert _mentions_outside_the_rows(names) == [], ("ask the registry (ulpq_build/architectures/, "
                                                     "web_runtime/architectures.js) instead")


def test_the_name_scans_see_a_branch():
    """The scans above can fail: each finds the kinds of branch the registry replaced."""
    names = {"bert", "vit", "mlp"}
    python = 'if arch == "vit":\n    x = {"bert": 1}\nname = "builtin:vit"  # "mlp" in a comment\n'
    assert [m.split(": ", 1)[1] for m in _python_mentions(python, "x.py", names)] == ["'vit'", "'bert'"]
    js = "// bert: a comment\nif (model.architecture === 'bert') f(GRAPHS.vit, { mlp: 1 }); /* 'vit' */\n"
    assert [m.split(": ", 1)[1] for m in _js_mentions(js, "x.js", names)] == ["'bert'", ".vit", "mlp:"]
