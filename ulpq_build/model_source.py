"""Open what `--model` names: a .safetensors file, or a Hugging Face-style folder holding
`model.safetensors` (and usually `config.json` plus tokenizer files)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ulpq_build.errors import UserError
from ulpq_build.safetensors_io import SafetensorsFile

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class ModelSource:
    path: Path  # as given
    weights: SafetensorsFile
    config: dict = field(default_factory=dict)
    folder: Path | None = None  # the model folder, when one was given (tokenizer files live there)


def open_model(path: str | Path) -> ModelSource:
    path = Path(path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            if (path / f"{WEIGHTS_NAME}.index.json").is_file():
                raise UserError(f"{path}: sharded checkpoints (model.safetensors.index.json) are not supported yet; "
                                f"merge the shards into one model.safetensors")
            raise UserError(f"{path}: no {WEIGHTS_NAME} in this folder; pass a model folder or a .safetensors file")
        return ModelSource(path, SafetensorsFile(weights), _read_config(path / CONFIG_NAME), path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; pass a .safetensors file or a model folder")
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: unknown model format {path.suffix or '(no extension)'!r}; "
                        f"pass a .safetensors file or a folder holding {WEIGHTS_NAME}")
    config = _read_config(path.parent / CONFIG_NAME) if path.name == WEIGHTS_NAME else {}
    return ModelSource(path, SafetensorsFile(path), config, path.parent if path.name == WEIGHTS_NAME else None)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc.__class__.__name__}: {exc}); fix or remove the file") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    return config
