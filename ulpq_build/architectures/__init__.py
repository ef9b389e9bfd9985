"""Model families as rows of one registry (registry.py): each module here describes one family
(bert.py, vit.py, mlp.py; the generative decoders llama.py and gpt2.py, whose numpy graph is
decoder_reference.py) as an `Architecture`, and this package maps a model's tensors to the roles
its architecture gives them, producing the `model` section of the manifest: the graph the JS runtime
builds (web_runtime/graphs.js, its row in web_runtime/architectures.js) and the numpy reference
runs, and the tensors it uses.

Graph nodes:
    linear  {"weight", "bias", "in_features", "out_features", "activation", "residual"}: y = act(x W^T + b) (+ r)
    norm    {"weight", "bias"}: LayerNorm with the model's eps
    table   {"table"}: rows of an embedding table gathered by id
    (decoders: norm nodes with "bias": None are RMSNorms; see ulpq_build/decoder_reference.py)

Adding a family: a module with its row, registered below, and its JS row and graph.
"""

from __future__ import annotations

from ulpq_build.architectures.bert import BERT
from ulpq_build.architectures.gpt2 import GPT2
from ulpq_build.architectures.llama import LLAMA
from ulpq_build.architectures.mlp import MLP
from ulpq_build.architectures.registry import (ARCHITECTURES, Architecture, CalibrationInputs, Goal, architecture_of,
                                               for_model_type, register, supported)
from ulpq_build.architectures.vit import VIT
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

__all__ = ["ARCHITECTURES", "Architecture", "CalibrationInputs", "Goal", "SUPPORTED", "architecture_of", "describe_if_known",
           "describe_model", "float_operands", "for_model_type", "model_tensors", "register", "supported"]

for _row in (BERT, VIT, MLP, LLAMA, GPT2):  # the order errors list them in
    register(_row)

SUPPORTED = supported()  # the built-in rows; errors call supported(), which also names rows registered later


def describe_model(source: ModelSource) -> dict:
    """The architecture description of `source`, or a UserError naming what is supported."""
    model_type = source.config.get("model_type")
    arch = for_model_type(model_type)
    if arch is None:
        raise UserError(f"{source.path}: unsupported architecture {model_type!r} (config.json model_type); "
                        f"supported: {supported()}")
    return arch.describe(source)


def describe_if_known(source: ModelSource) -> dict | None:
    """The description where `source` is a complete model of a supported architecture, else None
    (`quantize` works on any checkpoint; a bundle needs the description and reports why not)."""
    try:
        return describe_model(source)
    except UserError:
        return None


def model_tensors(model: dict) -> list[str]:
    """Names of the tensors the graph uses, in first-use order."""
    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("table", "weight", "bias", "tensor"):
                value = node.get(key)
                if isinstance(value, str) and value not in names:
                    names.append(value)
            for key, value in node.items():
                if key not in ("tokenizer", "preprocess", "labels", "kernels"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in model.items() if k not in ("tokenizer", "preprocess", "labels")})
    return names + sorted(float_operands(model) - set(names))


def float_operands(model: dict) -> set[str]:
    """Tensors the kernels read as plain float32 arrays (never packed): e.g. a ViT's [CLS] token and
    position embeddings, which the token-assembly kernel adds directly."""
    return architecture_of(model).float_operands(model)
