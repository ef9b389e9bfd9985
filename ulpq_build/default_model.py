"""The built-in default model: a small MLP (Linear, GELU, Linear, GELU, Linear) generated from a
fixed seed, so `bundle` with no `--model` works on a fresh machine with nothing downloaded.

Sizes are deliberately not multiples of any workgroup or tile size, so every kernel meets
ragged edges; they are multiples of 32 where a row length needs to admit --group-size 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ulpq_build.safetensors_io import write_safetensors

LAYER_SIZES = (64, 288, 160, 10)
SEED = 20261128


def default_mlp_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    tensors = {}
    for i, (n_in, n_out) in enumerate(zip(LAYER_SIZES, LAYER_SIZES[1:])):
        # Kaiming-uniform-like weights, as torch.nn.Linear initialises them, plus small biases
        bound = 1.0 / np.sqrt(n_in)
        tensors[f"layers.{i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        tensors[f"layers.{i}.bias"] = rng.uniform(-bound, bound, (n_out,)).astype(np.float32)
    return tensors


def write_default_model(folder: Path) -> Path:
    """Write config.json + model.safetensors of the default MLP into `folder`; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = default_mlp_tensors()
    config = {"architectures": ["UlpqMLP"], "model_type": "ulpq-mlp", "layer_sizes": list(LAYER_SIZES),
              "hidden_act": "gelu", "seed": SEED}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    names = list(tensors)
    write_safetensors(folder / "model.safetensors", [(n, "float32", tensors[n].shape) for n in names],
                      (tensors[n] for n in names), {"format": "pt"})
    return folder
