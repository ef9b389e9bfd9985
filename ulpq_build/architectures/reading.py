"""Reading a checkpoint for an architecture's description: tensor lookups and config fields, each
failure one UserError line that says what the architecture expected."""

from __future__ import annotations

import math
import re

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures.registry import supported
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource, read_side_file
from ulpq_build.safetensors_io import SafetensorsFile

# config.json hidden_act -> the graph's activation. The tanh approximations of GELU are a function of
# their own ("gelu_tanh"), never the erf form: mapping gelu_new to "gelu" gave a silently different model.
ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu",
               "none": "none", "identity": "none", "linear": "none"}
# the activations the runtime's kernels implement (kernels.EPILOGUE); other rows pass their own set
KERNEL_ACTIVATIONS = ("gelu", "none")


class TransposedWeights(SafetensorsFile):
    """A safetensors file whose matrices `names` read transposed: [out, in] for a checkpoint that
    stores them [in, out]. Shapes, values and raw bytes all agree, so a tensor written from it (a
    quantized checkpoint, a bundle) is the [out, in] matrix."""

    def __init__(self, base: SafetensorsFile, names: frozenset[str]):  # not super().__init__: that re-reads the file
        self.__dict__.update(base.__dict__)
        self.transposed = frozenset(names)

    def shape(self, name: str) -> tuple[int, ...]:
        shape = super().shape(name)
        return shape[::-1] if name in self.transposed else shape

    def raw(self, name: str) -> np.ndarray:
        values = super().raw(name)
        return np.ascontiguousarray(values.T) if name in self.transposed else values


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


def activation(source: ModelSource, key: str = "hidden_act", default: str = "gelu",
               allowed: tuple[str, ...] = KERNEL_ACTIVATIONS) -> str:
    """The graph's activation for config.json's `key`, one of `allowed` (what this architecture's
    runtime computes), else a UserError naming the field."""
    name = str(source.config.get(key, default))
    if name not in ACTIVATIONS:
        raise UserError(f"{source.path}: config.json {key} {name!r} is not supported; use one of "
                        f"{', '.join(n for n in ACTIVATIONS if ACTIVATIONS[n] in allowed)}")
    if ACTIVATIONS[name] not in allowed:
        raise UserError(f"{source.path}: config.json {key} {name!r} ({ACTIVATIONS[name]}) is not implemented by this "
                        f"architecture's runtime kernels; supported: "
                        f"{', '.join(n for n in ACTIVATIONS if ACTIVATIONS[n] in allowed)}")
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


def tokenizer_fits_table(model: dict, source: ModelSource) -> bool:
    """A text model's shipped calibration text is usable: its folder has a tokenizer.json the tokenizers
    package reads, whose ids fit the model's word table (BERT's and the decoders' ships_calibration)."""
    if source.folder is None or not (source.folder / "tokenizer.json").is_file():
        return False
    try:
        tokenizer = ev.load_tokenizer(source.folder / "tokenizer.json")
    except UserError:
        return False
    return tokenizer.get_vocab_size() <= source.weights.shape(model["embeddings"]["word"]["table"])[0]
