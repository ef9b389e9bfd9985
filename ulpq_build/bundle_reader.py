"""Read a written bundle back in Python: verify its shards against the manifest and restore the
dequantized weights. The numpy reference of a bundle is computed from these weights, which is
what every browser check compares against."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.quantize import dequantize_parts
from ulpq_build.quantspec import QuantSpec


@dataclass
class LoadedBundle:
    folder: Path
    manifest: dict
    weights: dict[str, np.ndarray]  # dequantized float32, original shapes

    @property
    def model(self) -> dict:
        return self.manifest["model"]


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder}: no manifest.json; pass a folder written by `python -m ulpq_build bundle`") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); rebuild the bundle") from None


def load_bundle(folder: Path) -> LoadedBundle:
    folder = Path(folder)
    manifest = read_manifest(folder)
    shards = {}
    for shard in manifest["shards"]:
        data = (folder / shard["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise UserError(f"{folder / shard['file']}: sha256 does not match the manifest (tampered or corrupt); rebuild the bundle")
        shards[shard["file"]] = data
    weights = {}
    for entry in manifest["tensors"]:
        parts = {}
        for name, ref in entry["parts"].items():
            raw = shards[ref["file"]][ref["offset"] : ref["offset"] + ref["length"]]
            parts[name] = np.frombuffer(raw, dtype=np.dtype(ref["dtype"]).newbyteorder("<")).reshape(ref["shape"])
        weights[entry["name"]] = dequantize_parts(parts, QuantSpec.from_json(entry["spec"]), tuple(entry["shape"]))
    return LoadedBundle(folder, manifest, weights)
