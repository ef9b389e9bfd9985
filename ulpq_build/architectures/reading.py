"""Reading a checkpoint for an architecture's description: tensor lookups and config fields, each
failure one UserError line that says what the architecture expected."""

from __future__ import annotations

import math
import re

from ulpq_build.architectures.registry import supported
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource, read_side_file

# config.json hidden_act -> the graph's activation
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu", "gelu_python": "gelu", "none": "none", "identity": "none", "linear": "none"}


def natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class Tensors:
    """Name lookups with one-line errors that say what the architecture expected."""

    def __init__(self, source: ModelSource, arch: str, prefix: str = ""):
        self.source, self.weights, self.arch, self.prefix = source, source.weights, arch, prefix

    def name(self, suffix: str) -> str:
        full = self.prefix + suffix
        if full not in self.weights.entries:
            raise UserError(f"{self.source.path}: {self.arch} checkpoint lacks tensor {full!r}; is config.json's "
                            f"model_type right? supported: {supported()}")
        return full

    def shape(self, suffix: str) -> tuple[int, ...]:
        return self.weights.shape(self.name(suffix))

    def has(self, suffix: str) -> bool:
        return self.prefix + suffix in self.weights.entries

    def linear(self, stem: str, activation: str = "none", residual: bool = False, expect: tuple[int, int] | None = None) -> dict:
        weight = self.name(f"{stem}.weight")
        shape = self.weights.shape(weight)
        out_features, in_features = shape[0], math.prod(shape[1:])
        if expect and (out_features, in_features) != expect:
            raise UserError(f"{self.source.path}: {weight} has shape {list(shape)}, the config implies "
                            f"[{expect[0]}, {expect[1]}]")
        bias = self.prefix + f"{stem}.bias"
        return {"weight": weight, "bias": bias if bias in self.weights.entries else None, "in_features": in_features,
                "out_features": out_features, "activation": activation, "residual": residual}

    def norm(self, stem: str) -> dict:
        return {"weight": self.name(f"{stem}.weight"), "bias": self.name(f"{stem}.bias")}


def config_int(source: ModelSource, key: str, default=None) -> int:
    value = source.config.get(key, default)
    if not isinstance(value, int) or value <= 0:
        raise UserError(f"{source.path}: config.json needs a positive integer {key!r} (got {value!r})")
    return value


def activation(source: ModelSource) -> str:
    name = str(source.config.get("hidden_act", "gelu"))
    if name not in ACTIVATIONS:
        raise UserError(f"{source.path}: hidden_act {name!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def prefix(source: ModelSource, marker: str, candidates: tuple[str, ...]) -> str:
    """The prefix (e.g. "" or "bert.") under which the checkpoint keeps the architecture's tensors."""
    for candidate in candidates:
        if candidate + marker in source.weights.entries:
            return candidate
    raise UserError(f"{source.path}: no tensor named like '{marker}' (with or without a '{candidates[-1]}' prefix); "
                    f"supported: {supported()}")


def read_json(path, kind: str | None = None):
    return read_side_file(path, kind) if path else {}
