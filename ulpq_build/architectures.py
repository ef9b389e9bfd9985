"""Map a model's tensors to the roles an architecture gives them, producing the `model` section
of the manifest (what the JS runtime builds its graph from) and the list of tensors it uses."""

from __future__ import annotations

import re

from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

SUPPORTED = "ulpq-mlp (a chain of Linear layers named <prefix>.<i>.weight / .bias)"
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu", "none": "none", "identity": "none", "linear": "none"}


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def describe_model(source: ModelSource) -> dict:
    """The architecture description of `source`, or a UserError naming what is supported."""
    model_type = source.config.get("model_type")
    if model_type not in (None, "ulpq-mlp"):
        raise UserError(f"{source.path}: unsupported architecture {model_type!r} (config.json model_type); "
                        f"supported: {SUPPORTED}")
    return _describe_mlp(source)


def _describe_mlp(source: ModelSource) -> dict:
    weights = source.weights
    act_name = str(source.config.get("hidden_act", "gelu"))
    if act_name not in ACTIVATIONS:
        raise UserError(f"{source.path}: hidden_act {act_name!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
    matrices = sorted((n for n in weights.names if n.endswith(".weight") and len(weights.shape(n)) == 2), key=_natural_key)
    if not matrices:
        raise UserError(f"{source.path}: no 2-D '.weight' tensors found; supported: {SUPPORTED}")
    layers, used = [], set()
    for i, name in enumerate(matrices):
        n_out, n_in = weights.shape(name)
        if layers and n_in != layers[-1]["out_features"]:
            raise UserError(f"{source.path}: {name} takes {n_in} inputs but the layer before gives "
                            f"{layers[-1]['out_features']}; supported: {SUPPORTED}")
        bias = name[: -len("weight")] + "bias"
        if bias in weights.entries:
            if weights.shape(bias) != (n_out,):
                raise UserError(f"{source.path}: {bias} has shape {list(weights.shape(bias))}, expected [{n_out}]")
            used.add(bias)
        else:
            bias = None
        used.add(name)
        last = i == len(matrices) - 1
        layers.append({"weight": name, "bias": bias, "in_features": n_in, "out_features": n_out,
                       "activation": "none" if last else ACTIVATIONS[act_name]})
    extra = [n for n in weights.names if n not in used]
    if extra:
        raise UserError(f"{source.path}: tensor {extra[0]!r} is not part of a Linear chain; supported: {SUPPORTED}")
    return {"architecture": "mlp", "input_size": layers[0]["in_features"],
            "output_size": layers[-1]["out_features"], "layers": layers}


def model_tensors(model: dict) -> list[str]:
    """Names of the tensors the architecture uses, in graph order."""
    names = []
    for layer in model["layers"]:
        names.append(layer["weight"])
        if layer["bias"]:
            names.append(layer["bias"])
    return names
