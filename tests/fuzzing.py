"""Mutation fuzzing of every input reader (issue 12), shared by tests/test_fuzz_inputs.py (hypothesis,
a bounded number of examples in CI) and scripts/fuzz_readers.py (>= 10,000 inputs per reader).

A mutation is a list of operations (kind, a, b: integers), applied in order to a VALID seed file:
byte flips, inserts, deletions, truncation, and, where the file is JSON (or holds JSON: a safetensors
header, a checkpoint's metadata, TOML re-emitted), structural edits: type swaps, deleted and added
keys, deep nesting, huge numbers, NaN / Infinity / 1e400 literals. Integers as the description keep
the mutations shrinkable by hypothesis and reproducible by the script.

The property every reader must hold: it returns, or raises UserError whose message is one line
naming the input; anything else (RecursionError, KeyError, ValueError, a numpy error...) is a bug.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "data" / "fuzz_seeds"


class Raw(str):
    """A literal spliced into JSON text as is (NaN, 1e400, a 400-digit integer)."""


POOL = [None, True, False, "false", "true", "abc", "", 0, 1, -1, 2, 3, 7, 32, 33, 2**31, 2**63, -(2**63), 0.5, -0.0,
        1e308, 1e-320, [], {}, [1, 2], {"a": 1}, "int4", "int5", "float16", "F32", "BOOL", "../x", "/etc/passwd",
        "a" * 300, "\u00e9\u4e2d", Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e400"),
        Raw("9" * 400), Raw("1" * 5000)]
N_KINDS = 12


def _placeholder(i: int) -> str:
    return f"\u0001RAW{i}\u0001"


def dump_json(value) -> bytes:
    """JSON text of `value` with Raw literals spliced in."""
    raws: list[str] = []

    def swap(v):
        if isinstance(v, Raw):
            raws.append(str(v))
            return _placeholder(len(raws) - 1)
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value), allow_nan=True)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(_placeholder(i)), raw)
    return text.encode("utf-8")


def _paths(value) -> list[tuple]:
    """(container, key) of every node, iteratively (values may be deep)."""
    out, stack = [], [value]
    while stack and len(out) < 5000:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            out.append((node, key))
            stack.append(child)
    return out


def _nest(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def edit_structure(value, a: int, b: int):
    """One structural edit of parsed JSON, chosen by a (which node) and b (what to do)."""
    paths = _paths(value)
    if not paths:
        return POOL[b % len(POOL)] if b % 3 else _nest(value, 10 + b % 3000)
    container, key = paths[a % len(paths)]
    action = b % 7
    pick = POOL[(b // 7) % len(POOL)]
    if action in (0, 1):
        container[key] = pick
    elif action == 2:
        if isinstance(container, dict):
            del container[key]
        else:
            container.pop(key)
    elif action == 3:
        container[key] = _nest(container[key], 5 + (b // 7) % 4000)
    elif action == 4:
        if isinstance(container, dict):
            container[f"extra{b % 5}"] = pick
        else:
            container.append(pick)
    elif action == 5:
        old = container[key]
        if isinstance(old, bool):
            container[key] = "false" if old is False else 1
        elif isinstance(old, (int, float)):
            container[key] = [old, str(old), -old, old * 10**6 + 1, Raw("1e400"), Raw("NaN")][(b // 7) % 6]
        elif isinstance(old, str):
            container[key] = [old + "x", old[:-1], old.upper(), 12, [old], None][(b // 7) % 6]
        elif isinstance(old, list):
            container[key] = [old * 2, old[:-1], old[::-1], {}, len(old)][(b // 7) % 5]
        else:
            container[key] = [list(old.values()), {}, None, str(old)][(b // 7) % 4] if isinstance(old, dict) else pick
    else:
        container[key] = {"nested": container[key]} if (b // 7) % 2 else [container[key]]
    return value


def mutate_bytes(data: bytes, kind: int, a: int, b: int) -> bytes:
    if not data:
        return bytes([a % 256]) * (b % 16)
    pos = a % len(data)
    if kind == 0:
        return data[:pos] + bytes([data[pos] ^ (1 << (b % 8))]) + data[pos + 1 :]
    if kind == 1:
        return data[:pos] + bytes([b % 256]) + data[pos + 1 :]
    if kind == 2:
        return data[:pos]
    if kind == 3:
        return data[:pos] + data[pos + 1 + b % 64 :]
    if kind == 4:
        return data[:pos] + bytes([b % 256]) * (1 + b % 8) + data[pos:]
    insert = [b"[", b"{", b'"', b"\\", b"\xff", b"\x00", b"NaN", b"1e400", b"-", b",", b"}", b"]"][b % 12]
    return data[:pos] + insert + data[pos:]


# --- the shapes of files: how structure is read out of and put back into each kind -----------------

@dataclass
class Codec:
    """How a file kind exposes structure for structural edits: decode -> value, encode value -> bytes."""

    decode: Callable[[bytes], object]
    encode: Callable[[object, bytes], bytes]  # (value, original bytes) -> bytes


def _json_decode(data: bytes):
    return json.loads(data)


def _safetensors_decode(data: bytes):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def _safetensors_encode(value, original: bytes) -> bytes:
    (n,) = struct.unpack("<Q", original[:8])
    raw = dump_json(value)
    return struct.pack("<Q", len(raw)) + raw + original[8 + n :]


def _metadata_decode(data: bytes):
    return json.loads(_safetensors_decode(data)["__metadata__"]["ulpq"])


def _metadata_encode(value, original: bytes) -> bytes:
    header = _safetensors_decode(original)
    header["__metadata__"]["ulpq"] = dump_json(value).decode("utf-8")
    return _safetensors_encode(header, original)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Raw):
        return {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(str(v), str(v))
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'


def dump_toml(value) -> bytes:
    if not isinstance(value, dict):
        return f"value = {_toml_value(value)}\n".encode()
    lines, tables = [], []
    for key, v in value.items():
        if v is None:
            continue
        if isinstance(v, dict) and v and all(not isinstance(x, dict) for x in v.values()):
            tables.append(f"[{json.dumps(str(key))}]\n" + "".join(f"{json.dumps(str(k))} = {_toml_value(x)}\n"
                                                               for k, x in v.items() if x is not None))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tables.append(f"[[{json.dumps(str(key))}]]\n" + "".join(f"{json.dumps(str(k))} = {_toml_value(x)}\n"
                                                                   for k, x in item.items() if x is not None))
        else:
            lines.append(f"{json.dumps(str(key))} = {_toml_value(v)}\n")
    return ("".join(lines) + "\n".join(tables)).encode("utf-8")


CODECS = {
    "json": Codec(_json_decode, lambda v, _: dump_json(v)),
    "toml": Codec(lambda d: tomllib.loads(d.decode("utf-8")), lambda v, _: dump_toml(v)),
    "safetensors": Codec(_safetensors_decode, _safetensors_encode),
    "metadata": Codec(_metadata_decode, _metadata_encode),
}


def mutate(data: bytes, ops: list[tuple[int, int, int]], codec: str) -> bytes:
    """Apply `ops` to `data`: kinds 0-5 edit bytes, 6-11 edit the structure `codec` exposes."""
    for kind, a, b in ops:
        kind %= N_KINDS
        if kind < 6:
            data = mutate_bytes(data, kind, a, b)
            continue
        try:
            value = CODECS[codec].decode(data)
        except Exception:  # no longer parses (an earlier byte edit): keep editing bytes
            data = mutate_bytes(data, kind - 6, a, b)
            continue
        try:
            data = CODECS[codec].encode(edit_structure(value, a, b), data)
        except (RecursionError, ValueError):  # too deep for the encoder itself: use a flat form
            data = mutate_bytes(data, kind - 6, a, b)
    return data


# --- the readers under test ------------------------------------------------------------------------

class Workspace:
    """Valid inputs built once (a tiny BERT folder, an MLP bundle, a quantized checkpoint), into which
    each mutated file is written before its reader runs."""

    def __init__(self, root: Path):
        import safetensors.numpy

        from support import tiny_bert
        from ulpq_build.bundle import build_bundle
        from ulpq_build.checkpoint import write_quantized
        from ulpq_build.model_source import open_model
        from ulpq_build.strategy import plan_and_quantize

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.bert = tiny_bert(self.root / "bert")
        vit = self.root / "vit"
        shutil.copytree(ROOT / "ulpq_build" / "models" / "vit-fashion-mnist", vit)
        self.vit = vit
        self.bundle = self.root / "bundle"
        build_bundle("builtin:mlp", self.bundle, {"format": "int4"}, log=lambda m: None)
        self.bundle_manifest = (self.bundle / "manifest.json").read_bytes()
        self.model = SEEDS / "safetensors" / "small.safetensors"
        source = open_model(self.model)
        tensors = [(n, source.weights.shape(n), source.weights.dtype(n)) for n in source.weights.names]
        self.quant_tensors = tensors
        for name, overrides in (("int4", {"format": "int4", "group_size": 32}),
                                ("int8-asym", {"format": "int8", "asymmetric": True, "scale_dtype": "float16"})):
            plan, _ = plan_and_quantize(source, tensors, overrides, None)
            write_quantized(source.weights, plan, self.root / f"q-{name}.safetensors", source_name="small.safetensors")
        del safetensors

    def seeds(self, reader: str) -> list[tuple[str, bytes]]:
        """(name, bytes) of the valid files a reader's mutations start from."""
        folder = SEEDS / SEED_FOLDERS[reader]
        seeds = [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
        if reader == "manifest":
            seeds.insert(0, ("fresh-manifest.json", self.bundle_manifest))
        if reader == "checkpoint":
            seeds += [(p.name, p.read_bytes()) for p in sorted(self.root.glob("q-*.safetensors"))]
        return seeds


SEED_FOLDERS = {"safetensors": "safetensors", "checkpoint": "checkpoint", "hf_config": "hf", "quant_config": "quant_config",
                "manifest": "manifest"}
CODEC_OF = {"safetensors": "safetensors", "checkpoint": "metadata", "hf_config": "json", "manifest": "json"}


def _read_safetensors(ws: Workspace, name: str, data: bytes) -> Path:
    from ulpq_build.checkpoint import Checkpoint

    path = ws.root / "input.safetensors"
    path.write_bytes(data)
    checkpoint = Checkpoint(path)  # reads the header, and the ulpq metadata where there is some
    for t in checkpoint.tensors:
        checkpoint.float32(t)
    return path


def _read_hf(ws: Workspace, name: str, data: bytes) -> Path:
    """A side file of the tiny BERT (or the ViT's preprocessor config) replaced, then the model described."""
    from ulpq_build.architectures import describe_model
    from ulpq_build.model_source import open_model

    stem = name.split("--")[-1]  # seeds are named "<model>--<file name>"
    folder = ws.vit if name.startswith("vit--") else ws.bert
    target = folder / ("1_Pooling/config.json" if stem == "pooling.json" else stem)
    original = target.read_bytes() if target.exists() else None
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(data)
    try:
        describe_model(open_model(folder))
    finally:
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)
    return folder


def _read_quant_config(ws: Workspace, name: str, data: bytes) -> Path:
    from ulpq_build.config import resolve_options
    from ulpq_build.plan import resolve_plan

    path = ws.root / ("config" + Path(name).suffix)
    path.write_bytes(data)
    default, rules = resolve_options(path, {}, ws.quant_tensors)
    resolve_plan(ws.quant_tensors, default, rules, default_source=str(path))
    return path


def _read_manifest(ws: Workspace, name: str, data: bytes) -> Path:
    from ulpq_build.bundle_reader import load_bundle

    (ws.bundle / "manifest.json").write_bytes(data)
    try:
        load_bundle(ws.bundle)
    finally:
        (ws.bundle / "manifest.json").write_bytes(ws.bundle_manifest)
    return ws.bundle


READERS = {"safetensors": _read_safetensors, "checkpoint": _read_safetensors, "hf_config": _read_hf,
           "quant_config": _read_quant_config, "manifest": _read_manifest}


def codec_for(reader: str, seed_name: str) -> str:
    if reader == "quant_config":
        return "toml" if seed_name.endswith(".toml") else "json"
    return CODEC_OF[reader]


def check_one(ws: Workspace, reader: str, seed_name: str, data: bytes) -> str:
    """Run one input through its reader: 'ok', 'user_error', or raise AssertionError describing a bug
    (another exception, or a UserError message that is not one line naming the input)."""
    from ulpq_build.errors import UserError

    inputs = {"safetensors": "input.safetensors", "checkpoint": "input.safetensors", "hf_config": str(ws.root),
              "quant_config": "config", "manifest": str(ws.bundle)}
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            READERS[reader](ws, seed_name, data)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, f"{reader}: multi-line message {message!r:.300}"
        assert inputs[reader] in message, f"{reader}: message does not name the input: {message!r:.300}"
        return "user_error"
    except Exception as exc:  # noqa: BLE001 - that is the bug being hunted
        raise AssertionError(f"{reader} ({seed_name}): {type(exc).__name__}: {str(exc)[:300]}") from exc
    return "ok"
