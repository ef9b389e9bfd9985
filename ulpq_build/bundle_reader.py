"""Read a written bundle back in Python: check its manifest against the declared schema, every file
the manifest lists against its sha256, every tensor part against its shard and spec, and restore
the dequantized weights. The numpy reference of a bundle is computed from these weights, which is
what every browser check compares against; `inspect` and `verify` both read bundles through here.

Also decides whether a folder is provably a bundle this tool wrote (`foreign_content`): only such a
folder may be replaced by a new `bundle --out`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build.architectures import ARCHITECTURES
from ulpq_build.errors import UserError
from ulpq_build import row_blocks
from ulpq_build.graph import graph_nodes
from ulpq_build.quantize import dequantize_parts
from ulpq_build.quantspec import QuantSpec, part_layout
from ulpq_build.schema import (REL_PATH, SHA256, Anything, Float, Int, List, Map, Obj, Str, parse_json,
                               validate)

# 2: shaders[] maps each kernel variant to a file of shader_files[], which holds each distinct WGSL once
MANIFEST_SCHEMA_VERSION = 2
GENERATOR = "ulpq_build"
MARKER = ".ulpq-bundle"  # written into every bundle folder, with the manifest's generator field: ours to replace
MAX_MANIFEST_BYTES = 64 << 20
MANIFEST_DEPTH = 32
ADVICE = "rebuild the bundle with `python -m ulpq_build bundle`"
PART_DTYPES = ("uint32", "float32", "float16", "uint8")

_FILE = Obj({"file": REL_PATH, "bytes": Int(min=0, max=1 << 40), "sha256": SHA256})
_PART = Obj({"shard": Int(min=0), "file": REL_PATH, "offset": Int(min=0, max=1 << 40), "length": Int(min=0, max=1 << 40),
             "sha256": SHA256, "dtype": Str(choices=PART_DTYPES), "shape": List(Int(min=0, max=1 << 40), max_len=4)})
_TENSOR = Obj({"name": Str(max_len=1024), "shape": List(Int(min=0, max=1 << 40), max_len=16), "dtype": Str(max_len=32),
               "format": Str(max_len=64), "spec": Anything(), "matrix": Map(Int(min=0, max=1 << 40)),
               "bits_per_weight": Float(min=0), "bytes": Int(min=0, max=1 << 40), "parts": Map(_PART, max_len=8)})
MANIFEST = Obj({
    "schema_version": Int(min=MANIFEST_SCHEMA_VERSION, max=MANIFEST_SCHEMA_VERSION),
    "generator": Obj({"name": Str(choices=(GENERATOR,)), "version": Str(max_len=64)}),
    "model": Obj({"name": Str(max_len=1024), "architecture": Str(choices=ARCHITECTURES.keys())}),  # a live view: later rows count
    "quantization": Obj({"default": Anything(), "method": Str(max_len=16)}),
    "tensors": List(_TENSOR, max_len=1 << 16),
    "shards": List(_FILE, max_len=1 << 12),
    "shaders": List(Obj({"key": Str(max_len=1024), "profile": Str(max_len=64), "file": REL_PATH}), max_len=1 << 12),
    "shader_files": List(_FILE, max_len=1 << 12),
    "files": List(_FILE, max_len=1 << 10),
    "runtime": Obj({"module": REL_PATH, "page": REL_PATH, "files": List(REL_PATH, max_len=1 << 10),
                    "sha256": Map(SHA256)}, optional={"sha256"}),
})


@dataclass
class LoadedBundle:
    folder: Path
    manifest: dict
    weights: dict[str, np.ndarray]  # dequantized float32, original shapes

    @property
    def model(self) -> dict:
        return self.manifest["model"]


def read_manifest(folder: Path) -> dict:
    """The folder's manifest.json, parsed and checked against MANIFEST."""
    path = Path(folder) / "manifest.json"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise UserError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a bundle manifest; {ADVICE}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{folder}: no manifest.json; pass a folder written by `python -m ulpq_build bundle`") from None
    except NotADirectoryError:
        raise UserError(f"{folder}: not a folder; pass a folder written by `python -m ulpq_build bundle`") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc}); {ADVICE}") from None
    data = parse_json(raw, path, ADVICE, max_depth=MANIFEST_DEPTH)
    if isinstance(data, dict) and isinstance(data.get("schema_version"), int) and data["schema_version"] > MANIFEST_SCHEMA_VERSION:
        raise UserError(f"{path}: manifest schema version {data['schema_version']} is newer than this tool reads "
                        f"({MANIFEST_SCHEMA_VERSION}); update ulpq_build or {ADVICE}")
    versioned = isinstance(data, dict) and type(data.get("schema_version")) is int
    if versioned and data["schema_version"] < MANIFEST_SCHEMA_VERSION:
        raise UserError(f"{path}: manifest schema version {data['schema_version']} is older than this tool reads "
                        f"({MANIFEST_SCHEMA_VERSION}): an earlier ulpq_build wrote it; {ADVICE}")
    validate(data, MANIFEST, path, ADVICE)
    check_shader_map(data, path)
    return data


def _graph_keys(model: dict, where) -> set[str]:
    """Every kernel key the model graph names (op_kernels, and the kernels of its linear nodes and
    tables: what backend_webgpu.js compiles, over every profile)."""
    keys: set[str] = set()

    def add(kernels, at: str) -> None:
        if not isinstance(kernels, dict) or not all(
                isinstance(roles, dict) and all(isinstance(k, str) for k in roles.values()) for roles in kernels.values()):
            raise UserError(f"{where}: {at} is not a map of profile -> role -> shader key; {ADVICE}")
        for roles in kernels.values():
            keys.update(roles.values())

    def walk(tree, at: str) -> None:
        if isinstance(tree, dict):
            if ("in_features" in tree or "table" in tree) and "parts" not in tree:  # a table in row blocks: its parts have them
                add(tree.get("kernels"), f"{at}.kernels")
            for name, value in tree.items():
                if name != "kernels":
                    walk(value, f"{at}.{name}")
        elif isinstance(tree, list):
            for i, item in enumerate(tree):
                walk(item, f"{at}[{i}]")

    if "op_kernels" in model:
        add(model["op_kernels"], "model.op_kernels")
    walk({k: v for k, v in model.items() if k != "op_kernels"}, "model")
    return keys


def check_shader_map(manifest: dict, where) -> None:
    """The shader map is closed: each key listed once, every key the graph names listed, every
    listed key used by the graph, every file a key names listed in shader_files (once), and every
    listed file named by some key."""
    keys = [entry["key"] for entry in manifest["shaders"]]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"{where}: shader {twice!r:.80} is listed twice; {ADVICE}")
    graph = _graph_keys(manifest["model"], where)
    # a feature variant (subgroups, shader-f16: kernels.feature_variants) serves the uses of its base key
    used = {entry["key"] for entry in manifest["shaders"]
            if entry["key"] in graph or (entry.get("features") and isinstance(entry.get("base_key"), str)
                                         and entry["base_key"] != entry["key"] and entry["base_key"] in graph)}
    missing, unused = sorted(graph - set(keys)), sorted(set(keys) - used)
    if missing:
        raise UserError(f"{where}: the model uses shader {missing[0]!r:.80}, which manifest.shaders lacks; {ADVICE}")
    if unused:
        raise UserError(f"{where}: shader {unused[0]!r:.80} is listed but the model never uses it; {ADVICE}")
    files = [entry["file"] for entry in manifest["shader_files"]]
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise UserError(f"{where}: shader file {twice!r:.80} is listed twice; {ADVICE}")
    named = {entry["file"] for entry in manifest["shaders"]}
    if named - set(files):
        raise UserError(f"{where}: a shader names {sorted(named - set(files))[0]!r:.80}, which manifest.shader_files "
                        f"lacks; {ADVICE}")
    if set(files) - named:
        raise UserError(f"{where}: shader file {sorted(set(files) - named)[0]!r:.80} is listed but no shader uses it; "
                        f"{ADVICE}")


def listed_files(manifest: dict) -> dict[str, str | None]:
    """Every file the manifest lists -> its sha256 (None where the manifest gives none)."""
    files: dict[str, str | None] = {}
    for group in ("shards", "shader_files", "files"):
        for entry in manifest[group]:
            files[entry["file"]] = entry["sha256"]
    runtime = manifest["runtime"]
    hashes = runtime.get("sha256", {})
    for name in runtime["files"]:
        files.setdefault(name, hashes.get(name))
    return files


def _read_listed(folder: Path, name: str) -> bytes:
    path = folder / name
    root = folder.resolve()
    try:
        if root not in path.resolve().parents:
            raise UserError(f"{path}: points outside the bundle folder; {ADVICE}")
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: listed in the manifest but missing (an incomplete copy?); {ADVICE}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc}); {ADVICE}") from None


def verify_files(folder: Path, manifest: dict) -> dict[str, bytes]:
    """Every listed file checked against its sha256 (shaders, tokenizer, runtime and shards alike);
    returns the shards' bytes."""
    shards = {entry["file"] for entry in manifest["shards"]}
    sizes = {entry["file"]: entry["bytes"] for group in ("shards", "shader_files", "files") for entry in manifest[group]}
    data_of = {}
    for name, digest in listed_files(manifest).items():
        data = _read_listed(folder, name)
        if name in sizes and len(data) != sizes[name]:
            raise UserError(f"{folder / name}: {len(data)} bytes, the manifest says {sizes[name]} (truncated or "
                            f"edited); {ADVICE}")
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{folder / name}: sha256 does not match the manifest (tampered or corrupt); {ADVICE}")
        if name in shards:
            data_of[name] = data
    return data_of


def _tensor_parts(entry: dict, shards: dict[str, bytes], where: str) -> tuple[QuantSpec, dict[str, np.ndarray]]:
    """A tensor's spec and parts, each part checked against its shard and against the layout that
    the spec and shape imply (an edited shape, format or offset is caught here)."""
    spec = QuantSpec.from_json(entry["spec"], source=where)
    if entry["format"] != spec.format:
        raise UserError(f"{where}: format {entry['format']!r:.40} but spec format {spec.format!r}; {ADVICE}")
    shape = tuple(entry["shape"])
    layout = part_layout(spec, shape)
    if set(entry["parts"]) != set(layout):
        raise UserError(f"{where}: parts {sorted(entry['parts'])} but {spec.format} stores {sorted(layout)}; {ADVICE}")
    parts = {}
    for name, ref in entry["parts"].items():
        dtype, part_shape = layout[name]
        if ref["dtype"] != dtype or tuple(ref["shape"]) != tuple(part_shape):
            raise UserError(f"{where}: part {name!r} is {ref['dtype']}{ref['shape']} but shape {list(shape)} in "
                            f"{spec.format} needs {dtype}{list(part_shape)}; {ADVICE}")
        if ref["file"] not in shards:
            raise UserError(f"{where}: part {name!r} names {ref['file']!r:.60}, not a shard of the manifest; {ADVICE}")
        shard = shards[ref["file"]]
        if ref["length"] != math.prod(part_shape) * np.dtype(dtype).itemsize or ref["offset"] + ref["length"] > len(shard):
            raise UserError(f"{where}: part {name!r} at [{ref['offset']}, +{ref['length']}) does not fit "
                            f"{ref['file']} ({len(shard)} bytes) or its shape; {ADVICE}")
        raw = shard[ref["offset"] : ref["offset"] + ref["length"]]
        if hashlib.sha256(raw).hexdigest() != ref["sha256"]:
            raise UserError(f"{where}: part {name!r} does not match its sha256; {ADVICE}")
        parts[name] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(part_shape)
    return spec, parts


def load_bundle(folder: Path) -> LoadedBundle:
    folder = Path(folder)
    manifest = read_manifest(folder)
    shards = verify_files(folder, manifest)
    weights = {}
    for i, entry in enumerate(manifest["tensors"]):
        where = f"{folder / 'manifest.json'}: tensors[{i}] ({entry['name'][:80]!r})"
        if entry["name"] in weights:
            raise UserError(f"{where}: a second tensor of that name; {ADVICE}")
        spec, parts = _tensor_parts(entry, shards, where)
        weights[entry["name"]] = dequantize_parts(parts, spec, tuple(entry["shape"]), source=where)
    try:  # a table stored in row blocks, whole again (row_blocks.py)
        weights = row_blocks.assemble(weights)
    except ValueError as err:
        raise UserError(f"{folder / 'manifest.json'}: {err}; {ADVICE}") from None
    wrong = row_blocks.check_parts(graph_nodes(manifest["model"], "table"), weights)
    if wrong:
        raise UserError(f"{folder / 'manifest.json'}: {wrong}; {ADVICE}")
    return LoadedBundle(folder, manifest, weights)


def foreign_content(folder: Path) -> str | None:
    """Why `folder` is not provably a bundle this tool wrote (None when it is): it must hold our
    marker file and a manifest whose generator is ulpq_build, and nothing the manifest does not list
    (a file someone added is never deleted by a rebuild)."""
    folder = Path(folder)
    if not (folder / MARKER).is_file():
        return f"is not a ulpq bundle (no {MARKER} marker)"
    try:
        ours = set(listed_files(read_manifest(folder)))
    except UserError:
        ours = _older_listing(folder)  # a bundle an earlier version wrote is replaced like a current one
        if ours is None:
            return "is not a ulpq bundle (its manifest.json is not one `ulpq_build bundle` writes)"
    ours |= {"manifest.json", MARKER}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink() or (not path.is_dir() and rel not in ours):
            return f"holds {rel!r:.80}, which the bundle did not write"
        if path.is_dir() and not any(name.startswith(rel + "/") for name in ours):
            return f"holds the folder {rel!r:.80}, which the bundle did not write"
    return None


# What any earlier manifest schema this tool wrote lists (schema 1: shaders held {file, sha256}, one
# file per variant): only the names, to know which files a rebuild may replace.
_NAMED = List(Obj({"file": REL_PATH}), max_len=1 << 16)
_OLDER_MANIFEST = Obj({
    "schema_version": Int(min=1, max=MANIFEST_SCHEMA_VERSION - 1),
    "generator": Obj({"name": Str(choices=(GENERATOR,))}),
    "shards": _NAMED, "shaders": _NAMED, "files": _NAMED,
    "runtime": Obj({"files": List(REL_PATH, max_len=1 << 10)}),
})


def _older_listing(folder: Path) -> set[str] | None:
    """The files an older-schema manifest of this tool lists, or None when it is not one."""
    path = folder / "manifest.json"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        data = validate(parse_json(path.read_bytes(), path, ADVICE, max_depth=MANIFEST_DEPTH), _OLDER_MANIFEST, path,
                        ADVICE)
    except (OSError, UserError):
        return None
    return {e["file"] for group in ("shards", "shaders", "files") for e in data[group]} | set(data["runtime"]["files"])
