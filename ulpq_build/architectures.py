"""Map a model's tensors to the roles an architecture gives them, producing the `model` section
of the manifest: the graph the JS runtime builds (and the numpy reference runs) and the tensors
it uses. Supported: BertModel (also sentence-transformers folders and BertFor* checkpoints whose
encoder sits under `bert.`), ViTModel / ViTForImageClassification, and the demo MLP.

Graph nodes:
    linear  {"weight", "bias", "in_features", "out_features", "activation", "residual"}: y = act(x W^T + b) (+ r)
    norm    {"weight", "bias"}: LayerNorm with the model's eps
    table   {"table"}: rows of an embedding table gathered by id
"""

from __future__ import annotations

import math
import re

from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource, read_side_file

SUPPORTED = ("bert (BertModel, sentence-transformers), vit (ViTModel, ViTForImageClassification), "
             "ulpq-mlp (a chain of Linear layers)")
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu", "gelu_python": "gelu", "none": "none", "identity": "none", "linear": "none"}


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def describe_model(source: ModelSource) -> dict:
    """The architecture description of `source`, or a UserError naming what is supported."""
    model_type = source.config.get("model_type")
    if model_type == "bert":
        return _describe_bert(source)
    if model_type == "vit":
        return _describe_vit(source)
    if model_type in (None, "ulpq-mlp"):
        return _describe_mlp(source)
    raise UserError(f"{source.path}: unsupported architecture {model_type!r} (config.json model_type); supported: {SUPPORTED}")


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
    return {model[key] for key in ("cls_token", "position_embeddings") if isinstance(model.get(key), str)}


# --- helpers ---------------------------------------------------------------------------------------

class _Tensors:
    """Name lookups with one-line errors that say what the architecture expected."""

    def __init__(self, source: ModelSource, arch: str, prefix: str = ""):
        self.source, self.weights, self.arch, self.prefix = source, source.weights, arch, prefix

    def name(self, suffix: str) -> str:
        full = self.prefix + suffix
        if full not in self.weights.entries:
            raise UserError(f"{self.source.path}: {self.arch} checkpoint lacks tensor {full!r}; is config.json's "
                            f"model_type right? supported: {SUPPORTED}")
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


def _config_int(source: ModelSource, key: str, default=None) -> int:
    value = source.config.get(key, default)
    if not isinstance(value, int) or value <= 0:
        raise UserError(f"{source.path}: config.json needs a positive integer {key!r} (got {value!r})")
    return value


def _activation(source: ModelSource) -> str:
    name = str(source.config.get("hidden_act", "gelu"))
    if name not in ACTIVATIONS:
        raise UserError(f"{source.path}: hidden_act {name!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _prefix(source: ModelSource, marker: str, candidates: tuple[str, ...]) -> str:
    for prefix in candidates:
        if prefix + marker in source.weights.entries:
            return prefix
    raise UserError(f"{source.path}: no tensor named like '{marker}' (with or without a '{candidates[-1]}' prefix); "
                    f"supported: {SUPPORTED}")


def _read_json(path, kind: str | None = None):
    return read_side_file(path, kind) if path else {}


# --- BERT ------------------------------------------------------------------------------------------

def _describe_bert(source: ModelSource) -> dict:
    t = _Tensors(source, "BERT", _prefix(source, "embeddings.word_embeddings.weight", ("", "bert.")))
    hidden = _config_int(source, "hidden_size")
    layers = _config_int(source, "num_hidden_layers")
    heads = _config_int(source, "num_attention_heads")
    inter = _config_int(source, "intermediate_size")
    if hidden % heads:
        raise UserError(f"{source.path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    if source.config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{source.path}: position_embedding_type {source.config['position_embedding_type']!r} is not "
                        f"supported (only 'absolute')")
    act = _activation(source)
    graph_layers = []
    for i in range(layers):
        p = f"encoder.layer.{i}."
        graph_layers.append({
            "query": t.linear(p + "attention.self.query", expect=(hidden, hidden)),
            "key": t.linear(p + "attention.self.key", expect=(hidden, hidden)),
            "value": t.linear(p + "attention.self.value", expect=(hidden, hidden)),
            "attn_out": t.linear(p + "attention.output.dense", residual=True, expect=(hidden, hidden)),
            "attn_norm": t.norm(p + "attention.output.LayerNorm"),
            "intermediate": t.linear(p + "intermediate.dense", act, expect=(inter, hidden)),
            "output": t.linear(p + "output.dense", residual=True, expect=(hidden, inter)),
            "out_norm": t.norm(p + "output.LayerNorm"),
        })
    pooling, normalize = _sentence_transformers_head(source)
    max_position = t.shape("embeddings.position_embeddings.weight")[0]
    return {
        "architecture": "bert",
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "head_dim": hidden // heads,
        "intermediate_size": inter, "layer_norm_eps": float(source.config.get("layer_norm_eps", 1e-12)),
        "max_position": max_position,
        "embeddings": {
            "word": {"table": t.name("embeddings.word_embeddings.weight")},
            "position": {"table": t.name("embeddings.position_embeddings.weight")},
            "token_type": {"table": t.name("embeddings.token_type_embeddings.weight")},
            "norm": t.norm("embeddings.LayerNorm"),
        },
        "layers": graph_layers,
        "pooling": pooling, "normalize": normalize,
        "output": "embeddings",
        "tokenizer": _tokenizer_facts(source, max_position),
    }


def _sentence_transformers_head(source: ModelSource) -> tuple[str, bool]:
    """(pooling, normalize) from a sentence-transformers folder's modules.json; plain BERT: mean pooling."""
    folder = source.folder
    modules = _read_json(folder / "modules.json") if folder else {}
    if not modules:
        return "mean", False
    kinds = [m["type"] for m in modules]
    pooling = "mean"
    for m in modules:
        if m["type"].endswith("Pooling"):
            sub = m.get("path", "")
            if ".." in sub.split("/") or sub.startswith("/"):
                raise UserError(f"{folder / 'modules.json'}: module path {sub!r:.60} leaves the model folder; fix the file")
            cfg = _read_json(folder / sub / "config.json", "pooling")
            if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode_max_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
                raise UserError(f"{folder}: only mean pooling is supported (pooling config {cfg})")
    return pooling, any(k.endswith("Normalize") for k in kinds)


def _tokenizer_facts(source: ModelSource, max_position: int) -> dict:
    folder = source.folder
    if folder is None or not ((folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()):
        raise UserError(f"{source.path}: a BERT bundle needs the tokenizer (tokenizer.json or vocab.txt) beside "
                        f"model.safetensors; pass the model folder")
    st = _read_json(folder / "sentence_bert_config.json")
    tk = _read_json(folder / "tokenizer_config.json")
    _read_json(folder / "tokenizer.json")  # the runtime parses it: refuse a broken one now
    max_length = int(min(st.get("max_seq_length") or tk.get("model_max_length") or max_position, max_position))
    return {"files": [n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()],
            "max_length": min(max_length, max_position),
            "lowercase": bool(tk.get("do_lower_case", True)), "strip_accents": tk.get("strip_accents")}


# --- ViT -------------------------------------------------------------------------------------------

def _describe_vit(source: ModelSource) -> dict:
    t = _Tensors(source, "ViT", _prefix(source, "embeddings.cls_token", ("", "vit.")))
    hidden = _config_int(source, "hidden_size")
    layers = _config_int(source, "num_hidden_layers")
    heads = _config_int(source, "num_attention_heads")
    inter = _config_int(source, "intermediate_size")
    image, patch, channels = (_config_int(source, k, d) for k, d in (("image_size", 224), ("patch_size", 16), ("num_channels", 3)))
    grid = image // patch
    act = _activation(source)
    graph_layers = []
    for i in range(layers):
        p = f"encoder.layer.{i}."
        graph_layers.append({
            "norm_before": t.norm(p + "layernorm_before"),
            "query": t.linear(p + "attention.attention.query", expect=(hidden, hidden)),
            "key": t.linear(p + "attention.attention.key", expect=(hidden, hidden)),
            "value": t.linear(p + "attention.attention.value", expect=(hidden, hidden)),
            "attn_out": t.linear(p + "attention.output.dense", residual=True, expect=(hidden, hidden)),
            "norm_after": t.norm(p + "layernorm_after"),
            "intermediate": t.linear(p + "intermediate.dense", act, expect=(inter, hidden)),
            "output": t.linear(p + "output.dense", residual=True, expect=(hidden, inter)),
        })
    if t.shape("embeddings.position_embeddings")[1] != grid * grid + 1:
        raise UserError(f"{source.path}: position embeddings for {t.shape('embeddings.position_embeddings')[1]} tokens, "
                        f"but image_size / patch_size gives {grid * grid} patches + [CLS]")
    classifier = None
    if "classifier.weight" in source.weights.entries:
        classifier = _Tensors(source, "ViT").linear("classifier")
    labels = source.config.get("id2label") or {}
    pre = _read_json(source.folder / "preprocessor_config.json") if source.folder else {}
    return {
        "architecture": "vit",
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "head_dim": hidden // heads,
        "intermediate_size": inter, "layer_norm_eps": float(source.config.get("layer_norm_eps", 1e-12)),
        "image_size": image, "patch_size": patch, "num_channels": channels, "num_patches": grid * grid,
        "patch": t.linear("embeddings.patch_embeddings.projection", expect=(hidden, channels * patch * patch)),
        "cls_token": t.name("embeddings.cls_token"), "position_embeddings": t.name("embeddings.position_embeddings"),
        "layers": graph_layers, "final_norm": t.norm("layernorm"),
        "classifier": classifier,
        "output": "logits" if classifier else "embeddings",
        "labels": [labels.get(str(i), labels.get(i, str(i))) for i in range(classifier["out_features"])] if classifier else [],
        "preprocess": {"image_size": image, "channels": channels,
                       "mean": _per_channel(source, pre, "image_mean", channels),
                       "std": _per_channel(source, pre, "image_std", channels),
                       "rescale": float(pre.get("rescale_factor", 1 / 255)), "resample": "bilinear"},
    }


def _per_channel(source: ModelSource, pre: dict, key: str, channels: int) -> list[float]:
    """A preprocessor value per image channel: one value is used for every channel."""
    values = list(pre.get(key, [0.5]))
    if len(values) == 1:
        values = values * channels
    if len(values) < channels:
        raise UserError(f"{source.folder / 'preprocessor_config.json'}: {key} has {len(values)} values for {channels} "
                        f"channels; give one per channel (or one for all)")
    return values[:channels]


# --- the demo MLP ----------------------------------------------------------------------------------

def _describe_mlp(source: ModelSource) -> dict:
    weights = source.weights
    act = _activation(source)
    matrices = sorted((n for n in weights.names if n.endswith(".weight") and len(weights.shape(n)) == 2), key=_natural_key)
    if not matrices:
        raise UserError(f"{source.path}: no 2-D '.weight' tensors found; supported: {SUPPORTED}")
    layers, used = [], set()
    t = _Tensors(source, "MLP")
    for i, name in enumerate(matrices):
        node = t.linear(name[: -len(".weight")], "none" if i == len(matrices) - 1 else act)
        if layers and node["in_features"] != layers[-1]["out_features"]:
            raise UserError(f"{source.path}: {name} takes {node['in_features']} inputs but the layer before gives "
                            f"{layers[-1]['out_features']}; supported: {SUPPORTED}")
        if node["bias"] and weights.shape(node["bias"]) != (node["out_features"],):
            raise UserError(f"{source.path}: {node['bias']} has shape {list(weights.shape(node['bias']))}, "
                            f"expected [{node['out_features']}]")
        used.update(n for n in (node["weight"], node["bias"]) if n)
        layers.append(node)
    extra = [n for n in weights.names if n not in used]
    if extra:
        raise UserError(f"{source.path}: tensor {extra[0]!r} is not part of a Linear chain; supported: {SUPPORTED}")
    return {"architecture": "mlp", "input_size": layers[0]["in_features"], "output_size": layers[-1]["out_features"],
            "layers": layers, "output": "output"}
