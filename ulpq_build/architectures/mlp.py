"""The demo MLP (model_type ulpq-mlp, or a config without one): a chain of Linear layers over rows
of numbers, which `bundle` builds when given no model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ulpq_build.architectures.reading import Tensors, activation, natural_key
from ulpq_build.architectures.registry import Architecture, supported
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource
from ulpq_build.reference import linear, relative_error

DEMO_ROWS = 2
DEMO_SEED = 7


def describe(source: ModelSource) -> dict:
    weights = source.weights
    act = activation(source)
    matrices = sorted((n for n in weights.names if n.endswith(".weight") and len(weights.shape(n)) == 2), key=natural_key)
    if not matrices:
        raise UserError(f"{source.path}: no 2-D '.weight' tensors found; supported: {supported()}")
    layers, used = [], set()
    t = Tensors(source, "MLP")
    for i, name in enumerate(matrices):
        node = t.linear(name[: -len(".weight")], "none" if i == len(matrices) - 1 else act)
        if layers and node["in_features"] != layers[-1]["out_features"]:
            raise UserError(f"{source.path}: {name} takes {node['in_features']} inputs but the layer before gives "
                            f"{layers[-1]['out_features']}; supported: {supported()}")
        if node["bias"] and weights.shape(node["bias"]) != (node["out_features"],):
            raise UserError(f"{source.path}: {node['bias']} has shape {list(weights.shape(node['bias']))}, "
                            f"expected [{node['out_features']}]")
        used.update(n for n in (node["weight"], node["bias"]) if n)
        layers.append(node)
    extra = [n for n in weights.names if n not in used]
    if extra:
        raise UserError(f"{source.path}: tensor {extra[0]!r} is not part of a Linear chain; supported: {supported()}")
    return {"architecture": MLP.name, "input_size": layers[0]["in_features"], "output_size": layers[-1]["out_features"],
            "layers": layers, "output": "output"}


def mlp_forward(model: dict, weights: dict, x: np.ndarray, hook=None, dtype=np.float64) -> np.ndarray:
    """Outputs [batch, output_size] for input rows [batch, input_size]; `hook`, `dtype`: see reference.linear."""
    h = np.asarray(x, dtype=dtype)
    for layer in model["layers"]:
        h = linear(h, layer, weights, hook=hook)
    return h


def demo_inputs(model: dict) -> list[list[float]]:
    """A fixed input the demo page runs on load (seeded, so the page shows the same numbers every time)."""
    rng = np.random.default_rng(DEMO_SEED)
    return np.round(rng.standard_normal((DEMO_ROWS, model["input_size"])), 4).tolist()


def verification_input(model: dict, folder: Path, manifest: dict, images: int):
    x = np.asarray(manifest["demo"]["inputs"])
    return x.tolist(), x, lambda expected, got: ("rel. error", relative_error(got, expected))


MLP = Architecture(
    name="mlp", model_types=(None, "ulpq-mlp"), summary="ulpq-mlp (a chain of Linear layers)",
    describe=describe, reference_forward=mlp_forward, input_kind="rows",
    verification_input=verification_input, demo=lambda model: {"inputs": demo_inputs(model)},
)
