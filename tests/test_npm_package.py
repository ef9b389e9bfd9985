"""web_runtime/ as the npm package `ulpq-runtime`: its package.json, what `npm pack` ships, the
types (tsc over the JS and its hand-written .d.ts; an app's right and wrong usages), and the
package imported by name from an installed tarball under Node. The browser half (an app bundled
by esbuild, run in Chromium) is e2e/test_npm_app_in_browser.py."""

import json
import re
import shutil
import tomllib

import numpy as np
import pytest

from npm_tools import PACKAGE, ROOT, RUNTIME, copy_app_sources, install_app, pack, run, tool
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.reference import mlp_forward, relative_error

MAX_MLP_ERROR = 1e-4  # relative error of the MLP outputs, Node vs numpy
ENTRIES = ("ulpq.js", "node.js")
TYPES = ("types/ulpq.d.ts", "types/node.d.ts")
# module references: static and dynamic imports, re-exports, and files a module loads by URL (workers)
REFERENCE = re.compile(r"""(?:from\s+|import\(\s*|new URL\(\s*)'(\./[^']+\.js)'""")
NODE_BUILTIN = re.compile(r"""(?:from\s+|import\(\s*)'(node:[^']+)'""")
COMMENTS = re.compile(r"/\*.*?\*/|^[ \t]*//[^\n]*", re.S | re.M)  # JSDoc names types/*.d.ts in import() types


def code(name: str) -> str:
    return COMMENTS.sub("", (RUNTIME / name).read_text())


def reachable(entries) -> set[str]:
    """Every runtime module the entry modules reach, themselves included."""
    seen, todo = set(), list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(m[2:] for m in REFERENCE.findall(code(name)))
    return seen


def declared(types_file: str) -> set[str]:
    """The values (classes, functions, constants) a .d.ts declares."""
    return set(re.findall(r"^export (?:declare )?(?:class|function|const) (\w+)", (RUNTIME / types_file).read_text(), re.M))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return pack(tmp_path_factory.mktemp("pack"))


@pytest.fixture(scope="module")
def app(packed, tmp_path_factory):
    return install_app(packed[0], tmp_path_factory.mktemp("app"))


def test_package_json_is_a_real_package_with_the_python_version():
    python_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert PACKAGE["name"] == "ulpq-runtime" and not PACKAGE.get("private")
    assert PACKAGE["version"] == python_version
    assert PACKAGE["type"] == "module" and PACKAGE["license"] == "Apache-2.0" and PACKAGE["engines"] == {"node": ">=20"}
    exports = PACKAGE["exports"]
    assert exports["."] == {"types": "./types/ulpq.d.ts", "default": "./ulpq.js"} and PACKAGE["types"] == "./types/ulpq.d.ts"
    assert exports["./node"] == {"types": "./types/node.d.ts", "default": "./node.js"}
    assert exports["./package.json"] == "./package.json"
    assert not PACKAGE.get("dependencies") and not PACKAGE.get("scripts")  # no build step, nothing to install with it
    # bundlers drop modules that are not listed here; node.js patches fetch and navigator on import
    assert set(PACKAGE["sideEffects"]) == {"./node.js", "./wasm_worker.js"}


def test_browser_field_stubs_every_node_builtin_the_browser_entry_reaches():
    # backend_wasm.js imports node: modules only under Node; a browser bundler must not try to bundle them
    builtins = {b for name in reachable(["ulpq.js"]) for b in NODE_BUILTIN.findall(code(name))}
    assert builtins and PACKAGE["browser"] == dict.fromkeys(sorted(builtins), False)


def test_pack_ships_every_module_the_entries_reach_and_the_types_and_nothing_else(packed):
    tarball, report = packed
    files = {f["path"] for f in report["files"]}
    modules = reachable(ENTRIES)
    assert {"ulpq.js", "node.js", "bundle_loader.js", "wasm_worker.js"} <= modules  # the graph walk works
    assert files == modules | set(TYPES) | {"package.json"}, files ^ (modules | set(TYPES) | {"package.json"})
    for target in [e for entry in PACKAGE["exports"].values() for e in ([entry] if isinstance(entry, str) else entry.values())]:
        assert target[2:] in files, target
    assert report["name"] == "ulpq-runtime" and tarball.stat().st_size == report["size"] < 200_000


def test_tsc_checks_the_runtime_js_against_its_types():
    proc = run(tool("tsc"), "-p", RUNTIME, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tsc_fails_when_the_js_stops_matching_its_types(tmp_path):
    copy = tmp_path / "web_runtime"
    shutil.copytree(RUNTIME, copy, ignore=shutil.ignore_patterns("node_modules"))
    source = (copy / "ulpq.js").read_text()
    mutated = re.sub(r"^export async function loadBundle\(", "async function loadBundle(", source, count=1, flags=re.M)
    mutated = re.sub(r"^  dispose\(\) \{", "  disposeLater() {", mutated, count=1, flags=re.M)
    assert mutated.count("disposeLater") == 1 and "export async function loadBundle(" not in mutated
    (copy / "ulpq.js").write_text(mutated)
    types = ROOT / ".node" / "node_modules"
    proc = run(tool("tsc"), "-p", copy, "--typeRoots", f"{types / '@types'},{types / '@webgpu'}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "types/conformance.ts" in out, out
    assert "loadBundle" in out and "dispose" in out, out


def test_an_apps_typescript_gets_real_types_from_the_installed_package(app):
    copy_app_sources(app, "consumer.ts", "tsconfig.json")
    tsc = tool("tsc")
    proc = run(tsc, "-p", app, check=False)  # right usages pass; each @ts-expect-error line is an error
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (app / "consumer.ts").read_text()
    marked = [i + 2 for i, line in enumerate(text.splitlines()) if line.strip().startswith("// @ts-expect-error")]
    assert len(marked) >= 7
    (app / "consumer.ts").write_text(re.sub(r"// @ts-expect-error.*", "", text))
    proc = run(tsc, "-p", app, check=False)
    errors = sorted({int(m) for m in re.findall(r"consumer\.ts\((\d+),\d+\): error", proc.stdout)})
    assert proc.returncode != 0 and errors == marked, proc.stdout


def test_node_imports_the_installed_package_by_name_and_runs_a_bundle(app, tmp_path):
    bundle = tmp_path / "mlp"
    assert cli_main(["bundle", "--model", "builtin:mlp", "--format", "int4", "--out", str(bundle)]) == 0
    script = app / "run.mjs"
    script.write_text(
        "import * as browser from 'ulpq-runtime';\n"
        "import * as node from 'ulpq-runtime/node';\n"
        "const { loadBundle } = node;\n"
        "const version = (await import('ulpq-runtime/package.json', { with: { type: 'json' } })).default.version;\n"
        "const model = await loadBundle(process.argv[2], { hardware: 'cpu' });\n"
        "const r = await model.process(model.manifest.demo.inputs);\n"
        "console.log(JSON.stringify({ output: r.output, path: r.path, version, exports: Object.keys(browser),\n"
        "  nodeExports: Object.keys(node) }));\n")
    env = {"PATH": "/usr/bin:/bin", "ULPQ_NODE_WEBGPU": "0", "HOME": str(tmp_path)}
    out = json.loads(run(tool("node"), script, bundle, cwd=app, env=env).stdout)
    assert out["version"] == PACKAGE["version"] and out["path"] == "cpu"
    # every value the JS exports is declared (the other direction is types/conformance.ts's job)
    assert set(out["exports"]) == declared("types/ulpq.d.ts")
    assert set(out["nodeExports"]) == declared("types/node.d.ts") | declared("types/ulpq.d.ts")
    model = load_bundle(bundle)
    expected = mlp_forward(model.model, model.weights, np.asarray(model.manifest["demo"]["inputs"]))
    assert relative_error(out["output"], expected) < MAX_MLP_ERROR
