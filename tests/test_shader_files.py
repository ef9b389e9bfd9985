"""One file per distinct shader (issue 13): WGSL comment stripping, the MiniLM and ViT bundles'
shader files (no two hold the same program, every profile's kernel keys resolve to listed files
holding exactly that variant's program, and they compile in naga and Tint), the reader's checks of
the shader map, and the runtime's choice of files for a profile (under Node)."""

import hashlib
import json
import shutil

import pytest

from support import ROOT, node_json
from ulpq_build.bundle import build_bundle
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.errors import UserError
from ulpq_build.kernels import KernelVariant, WeightStorage, render
from ulpq_build.native_webgpu import COMPILERS, validate
from ulpq_build.profiles import PROFILES
from ulpq_build.shader_store import code_of, strip_comments

BUNDLES = {"minilm": ("builtin:minilm", {"format": "int4"}), "vit": ("builtin:vit", {"format": "int4"}),
           "mlp": ("builtin:mlp", {"format": "int2"})}


@pytest.mark.parametrize("text, expected", [
    ("a // c\nb", "a \nb"),
    ("a /* c */b", "a  b"),  # a block comment still separates tokens
    ("a/**/b", "a b"),
    ("a /* x /* nested */ still comment */ b", "a   b"),
    ("a /* one\ntwo\r\nthree */ b", "a \n\r\n b"),  # its line breaks stay
    ("a // /* not a block\nb */", "a \nb */"),  # inside a line comment, /* is nothing
    ("a /* // */ b", "a   b"),  # inside a block comment, // is nothing
    ("a /* ** / */ b", "a   b"),
    ("x / y * z", "x / y * z"),  # division and multiplication are not comments
    ("a // c\rb // d\u2028c // e\x85d", "a \rb \u2028c \x85d"),  # every WGSL line break ends a // comment
    ("a /*/ b */ c", "a   c"),  # /*/ opens once
    ("// only", ""),
])
def test_strip_comments(text, expected):
    assert strip_comments(text) == expected


@pytest.mark.parametrize("text", ["a /* open", "a /* x /* y */ z", "/*/"])
def test_unterminated_block_comment_is_refused(text):
    with pytest.raises(ValueError, match="unterminated"):
        strip_comments(text)


def test_code_of_ignores_only_comments_and_blank_lines():
    a = "// header: chrome\n\nfn f() {  // the body\n  let x = 1;   \n}\n"
    b = "// header: edge\nfn f() {\n  /* other words */ let x = 1;\n\n}"
    assert code_of(a) == "fn f() {\n  let x = 1;\n}\n"
    assert code_of(b) == "fn f() {\n    let x = 1;\n}\n"  # the block comment's space stays: not equal to a
    assert code_of(a) != code_of(a.replace("1", "2"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("shader-files")
    for name, (model, options) in BUNDLES.items():
        build_bundle(model, root / name, options, log=lambda *_: None)
    return root


def variant_of(entry: dict) -> KernelVariant:
    """The kernel variant a manifest shader entry describes, rebuilt from its fields."""
    w = entry["weight"]
    weight = WeightStorage(w["format"], w["scale_dtype"], w["asymmetric"]) if w else None
    variant = KernelVariant.make(entry["kernel"], entry["profile"], weight, features=entry.get("features", ()), **entry["options"])
    assert variant.key == entry["key"]
    return variant


def page_keys(model: dict, profile: str) -> set[str]:
    """What backend_webgpu.js compiles for `profile` (variants.js: profileShaders), walked independently."""
    keys = set(model.get("op_kernels", {}).get(profile, {}).values())

    def walk(tree):
        if isinstance(tree, dict):
            if "in_features" in tree or "table" in tree:
                keys.update(tree["kernels"][profile].values())
            for k, v in tree.items():
                if k != "kernels":
                    walk(v)
        elif isinstance(tree, list):
            for v in tree:
                walk(v)

    walk(model)
    return keys


@pytest.mark.parametrize("name", ["minilm", "vit"])
def test_each_program_is_stored_once_and_every_profile_resolves(bundles, name):
    folder = bundles / name
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {f["file"]: f for f in manifest["shader_files"]}
    assert sorted(listed) == sorted(f"shaders/{p.name}" for p in (folder / "shaders").iterdir())
    codes = {}
    for file, entry in listed.items():
        data = (folder / file).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
        header, body = data.decode().split("\n", 1)
        assert header.startswith("// ulpq_build shader") and code_of(body) == body  # stored without comments
        assert not any(p in header for p in PROFILES)
        codes.setdefault(code_of(data.decode()), []).append(file)
    assert all(len(files) == 1 for files in codes.values()), [f for f in codes.values() if len(f) > 1]

    by_key = {s["key"]: s for s in manifest["shaders"]}
    for shader in manifest["shaders"]:  # each key's file holds that variant's program, as rendered
        assert code_of((folder / shader["file"]).read_text()) == code_of(render(variant_of(shader)))
    pages = {}
    for profile in PROFILES:
        keys = page_keys(manifest["model"], profile)
        assert keys and all(by_key[k]["profile"] == profile for k in keys)
        pages[profile] = {by_key[k]["file"] for k in keys}
        assert pages[profile] <= set(listed)
    assert pages["chrome"] == pages["edge"]  # chrome and edge render the same programs: one set of files
    assert not pages["chrome"] & (pages["firefox"] | pages["safari"])  # other workgroup sizes, other programs
    # every file is used by some page (feature variants: where the device has their features)
    featured = {s["file"] for s in manifest["shaders"] if s.get("features")}
    assert set().union(*pages.values(), featured) == set(listed)
    assert len(listed) < len(manifest["shaders"])
    # an encoder's products share one program per kernel, storage and tile: the runtime epilogue's
    # uniforms pick each dispatch's activation and residual (kernels.RUNTIME), so no two programs a
    # page compiles differ in their epilogue alone
    chrome = [by_key[k] for k in page_keys(manifest["model"], "chrome")]
    products = [s for s in chrome if s["kernel"] in ("gemv", "gemm", "splitk")]
    assert all(s["options"]["activation"] == "runtime" and s["options"]["residual"] == "runtime"
               for s in products if not s["options"].get("split")), [s["key"] for s in products]
    beside_epilogue = {(s["kernel"], json.dumps(s["weight"], sort_keys=True),
                        json.dumps({k: v for k, v in s["options"].items() if k not in ("activation", "bias", "residual")},
                                   sort_keys=True)) for s in products}
    assert len(beside_epilogue) == len(products), sorted(s["key"] for s in products)
    load_bundle(folder)  # and the reader accepts it


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", COMPILERS)
def test_stored_shaders_compile(bundles, compiler):
    """The stored text, not only the render, is valid WGSL in both compilers browsers use."""
    manifest = json.loads((bundles / "vit" / "manifest.json").read_text())
    size = {s["file"]: (s["workgroup_size"], tuple(s.get("features", ()))) for s in manifest["shaders"]}
    for file, (workgroup_size, features) in sorted(size.items()):  # a feature variant on a device with its features
        validate((bundles / "vit" / file).read_text(), workgroup_size, compiler, features)


def edited(bundles, tmp_path, edit):
    folder = tmp_path / "b"
    shutil.copytree(bundles / "mlp", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest, folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _drop_edge_key(m, _):
    key = next(s["key"] for s in m["shaders"] if s["profile"] == "edge")
    m["shaders"] = [s for s in m["shaders"] if s["key"] != key]


def _extra_file(m, folder):
    (folder / "shaders" / "extra.wgsl").write_text("// extra\n")
    m["shader_files"].append({"file": "shaders/extra.wgsl", "bytes": 9, "sha256": hashlib.sha256(b"// extra\n").hexdigest()})


def _unlisted_file(m, _):
    m["shaders"][0]["file"] = "shaders/elsewhere.wgsl"


def _file_twice(m, _):
    m["shader_files"].append(dict(m["shader_files"][0]))


def _key_twice(m, _):
    m["shaders"].append(dict(m["shaders"][0]))


def _unused_key(m, _):
    m["shaders"].append({**m["shaders"][0], "key": "gemv.unused.chrome-256"})


def _tampered(m, folder):
    path = folder / m["shader_files"][0]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _deleted(m, folder):
    (folder / m["shader_files"][-1]["file"]).unlink()


def _old_format(m, _):
    m["schema_version"] = 1


BROKEN_MAPS = [
    (_drop_edge_key, "which manifest.shaders lacks"),
    (_extra_file, "is listed but no shader uses it"),
    (_unlisted_file, "which manifest.shader_files lacks"),
    (_file_twice, "is listed twice"),
    (_key_twice, "is listed twice"),
    (_unused_key, "the model never uses it"),
    (_tampered, "sha256 does not match"),
    (_deleted, "listed in the manifest but missing"),
    (_old_format, "schema version 1 is older than this tool reads"),
]


@pytest.mark.parametrize("edit, message", BROKEN_MAPS, ids=[edit.__name__[1:] for edit, _ in BROKEN_MAPS])
def test_reader_refuses_a_broken_shader_map(bundles, tmp_path, edit, message):
    folder = edited(bundles, tmp_path, edit)
    with pytest.raises(UserError, match=message) as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


def test_runtime_fetches_each_file_of_its_profile_once(bundles, tmp_path):
    """variants.js's profileShaders (what backend_webgpu.js fetches) against the manifest, and
    bundle_loader.js's checkManifest refusing a map that names an unlisted or leaves an unused file."""
    folder = bundles / "vit"
    path = json.dumps(str(folder / "manifest.json"))
    m = f"JSON.parse(readText({path}))"
    calls = [{"module": "variants.js", "run": f"(v) => {{ const r = v.profileShaders({m}, '{p}'); "
              "return { keys: r.shaders.map((s) => s.key), files: r.files.map((f) => f.file) }; }"} for p in PROFILES]
    calls += [{"module": "bundle_loader.js", "run": f"(b) => b.checkManifest({edit}, 'manifest.json')"} for edit in (
        f"{{...{m}, shaders: [{{...{m}.shaders[0], file: 'shaders/x.wgsl'}}, ...{m}.shaders.slice(1)]}}",
        f"{{...{m}, shader_files: [...{m}.shader_files, {{file: 'shaders/x.wgsl', bytes: 1, sha256: '{'0' * 64}'}}]}}",
    )]
    results = node_json(ROOT / "tests/js/call_runtime.mjs", ROOT / "web_runtime", request=calls, tmp_path=tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    file_of = {s["key"]: s["file"] for s in manifest["shaders"]}
    for profile, got in zip(PROFILES, results):
        keys = page_keys(manifest["model"], profile)
        assert sorted(got["value"]["keys"]) == sorted(keys)
        files = got["value"]["files"]
        assert len(files) == len(set(files)) and set(files) == {file_of[k] for k in keys}
    by_profile = dict(zip(PROFILES, results))
    assert by_profile["chrome"]["value"]["files"] == by_profile["edge"]["value"]["files"]
    unlisted, unused = results[len(PROFILES):]
    assert unlisted["error"]["name"] == "BundleError" and "which manifest.shader_files lacks" in unlisted["error"]["message"]
    assert unused["error"]["name"] == "BundleError" and "which no entry of manifest.shaders uses" in unused["error"]["message"]


def as_schema_1(folder):
    """Rewrite a bundle as ulpq_build wrote it before schema 2: one file per variant key, each
    listed in shaders with its sha256, no shader_files."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for shader in manifest["shaders"]:
        data = (folder / shader["file"]).read_bytes()
        shader["file"] = f"shaders/{shader['key']}.wgsl"
        (folder / shader["file"]).write_bytes(data)
        shader["sha256"] = hashlib.sha256(data).hexdigest()
    for entry in manifest.pop("shader_files"):
        (folder / entry["file"]).unlink()
    manifest["schema_version"] = 1
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_bundle_an_earlier_version_wrote_is_replaced_by_a_rebuild(bundles, tmp_path):
    """Upgrading must not turn the user's old bundle folder into a folder `bundle --out` refuses."""
    folder = tmp_path / "old"
    shutil.copytree(bundles / "mlp", folder)
    as_schema_1(folder)
    with pytest.raises(UserError, match="older than this tool reads"):
        load_bundle(folder)
    (folder / "notes.txt").write_text("mine")  # a file the old bundle did not list still protects the folder
    with pytest.raises(UserError, match="notes.txt"):
        build_bundle("builtin:mlp", folder, {"format": "int2"}, log=lambda *_: None)
    (folder / "notes.txt").unlink()
    build_bundle("builtin:mlp", folder, {"format": "int2"}, log=lambda *_: None)
    assert load_bundle(folder).manifest["schema_version"] == 2
    names = lambda f: sorted(p.name for p in (f / "shaders").iterdir())
    assert names(folder) == names(bundles / "mlp")
