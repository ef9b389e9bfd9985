"""Vision transformers (ViTModel, ViTForImageClassification): images in, logits (or [CLS] features
where the checkpoint has no classifier) out."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures.reading import Tensors, activation, config_int, prefix, read_json
from ulpq_build.architectures.registry import Architecture, CalibrationInputs, Goal
from ulpq_build.errors import UserError
from ulpq_build.kernels import WeightStorage
from ulpq_build.model_source import ModelSource
from ulpq_build.reference import attention, layernorm, linear, relative_error

CALIBRATION_IMAGES = 512  # Fashion-MNIST training images GPTQ sees (the planner: the first 128)
PLANNER_IMAGES = 128
IMAGE_BATCH = 1000  # images per reference run when scoring


# --- reading the checkpoint -----------------------------------------------------------------------

def describe(source: ModelSource) -> dict:
    t = Tensors(source, "ViT", prefix(source, "embeddings.cls_token", ("", "vit.")))
    hidden = config_int(source, "hidden_size")
    layers = config_int(source, "num_hidden_layers")
    heads = config_int(source, "num_attention_heads")
    inter = config_int(source, "intermediate_size")
    image, patch, channels = (config_int(source, k, d) for k, d in (("image_size", 224), ("patch_size", 16), ("num_channels", 3)))
    grid = image // patch
    act = activation(source)
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
        classifier = Tensors(source, "ViT").linear("classifier")
    labels = source.config.get("id2label") or {}
    pre = read_json(source.folder / "preprocessor_config.json") if source.folder else {}
    return {
        "architecture": VIT.name,
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


def float_operands(model: dict) -> set[str]:
    """The [CLS] token and position embeddings: the token-assembly kernel adds them directly."""
    return {model[key] for key in ("cls_token", "position_embeddings") if isinstance(model.get(key), str)}


# --- the numpy reference ---------------------------------------------------------------------------

def vit_forward(model: dict, weights: dict, pixels: np.ndarray, hook=None, dtype=np.float64) -> np.ndarray:
    """Logits [batch, labels] (or [CLS] features) for preprocessed images [batch, channels, size, size];
    `hook`, `dtype`: see reference.linear, bert.bert_forward."""
    batch = pixels.shape[0]
    p, grid = model["patch_size"], model["image_size"] // model["patch_size"]
    c = model["num_channels"]
    patches = pixels[:, :, : grid * p, : grid * p].reshape(batch, c, grid, p, grid, p).transpose(0, 2, 4, 1, 3, 5)
    x = linear(patches.reshape(batch * grid * grid, c * p * p).astype(dtype), model["patch"], weights, hook=hook)
    hidden = model["hidden_size"]
    cls = np.asarray(weights[model["cls_token"]], dtype).reshape(1, 1, hidden)
    pos = np.asarray(weights[model["position_embeddings"]], dtype).reshape(1, grid * grid + 1, hidden)
    h = (np.concatenate([np.repeat(cls, batch, axis=0), x.reshape(batch, grid * grid, hidden)], axis=1) + pos)
    seq = grid * grid + 1
    h = h.reshape(batch * seq, hidden)
    keep = np.ones((batch, seq), dtype)
    eps = model["layer_norm_eps"]
    lin = lambda x, node, residual=None: linear(x, node, weights, residual, hook)  # noqa: E731
    for layer in model["layers"]:
        n = layernorm(h, layer["norm_before"], weights, eps)
        q, k, v = (lin(n, layer[role]) for role in ("query", "key", "value"))
        h = lin(attention(q, k, v, keep, batch, seq, model["num_heads"], model["head_dim"], layer["query"]["weight"]),
                layer["attn_out"], h)
        n = layernorm(h, layer["norm_after"], weights, eps)
        h = lin(lin(n, layer["intermediate"]), layer["output"], h)
    cls_out = layernorm(h.reshape(batch, seq, hidden)[:, 0], model["final_norm"], weights, eps)
    return lin(cls_out, model["classifier"]) if model["classifier"] else cls_out


def vit_preprocess(rgba: np.ndarray, spec: dict) -> np.ndarray:
    """RGBA uint8 images [batch, H, W, 4] already at image_size -> normalised [batch, channels, H, W]
    (grey-scale models take the luma of RGB), as the JS runtime does."""
    rgb = rgba[..., :3].astype(np.float64)
    if spec["channels"] == 1:
        rgb = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[..., None]
    x = rgb * spec["rescale"]
    x = (x - np.asarray(spec["mean"])) / np.asarray(spec["std"])
    return x.transpose(0, 3, 1, 2)


def classify(model: dict, weights: dict, pixels: np.ndarray) -> np.ndarray:
    """Logits of many images, IMAGE_BATCH at a time."""
    return np.concatenate([vit_forward(model, weights, pixels[s : s + IMAGE_BATCH]) for s in range(0, len(pixels), IMAGE_BATCH)])


# --- inputs: calibration, verification, demo --------------------------------------------------------

def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    idx = (np.arange(size) * images.shape[1] / size).astype(int)  # nearest neighbour: calibration only
    return images[:, idx][:, :, idx]


def calibration_inputs(model: dict, folder: Path | None, texts: list[str]) -> CalibrationInputs:
    """Fashion-MNIST training images (never the test images `bench` scores)."""
    images, _ = ev.fashion_mnist("train")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(images), CALIBRATION_IMAGES, replace=False)
    pixels = ev.grey_to_pixels(_resize(images[pick], model["image_size"]), model["preprocess"])
    return CalibrationInputs(pixels, pixels[:PLANNER_IMAGES])


def sample_rgba(folder: Path, model: dict, count: int) -> np.ndarray:
    """The bundle's sample images (samples.json), else seeded random ones, as RGBA [count, H, W, 4]."""
    size = model["image_size"]
    samples_file = folder / "samples.json"
    if samples_file.is_file():
        samples = json.loads(samples_file.read_text())[:count]
        grey = np.stack([np.frombuffer(base64.b64decode(s["grey_base64"]), np.uint8).reshape(s["height"], s["width"])
                         for s in samples])
        return np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (count, size, size, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    return rgba


def verification_input(model: dict, folder: Path, manifest: dict, images: int):
    rgba = sample_rgba(folder, model, images)
    payload = [{"width": int(im.shape[1]), "height": int(im.shape[0]), "data": im.reshape(-1).tolist()} for im in rgba]
    return (payload, vit_preprocess(rgba, model["preprocess"]),
            lambda expected, got: ("logits rel. error", relative_error(got, expected)))


def operator_kernels(model: dict) -> list:
    # "rows" gathers the [CLS] rows of an activation (an embed over float32 storage)
    return [("layernorm", "layernorm", None, {}), ("attention", "attention", None, {"mask": False}),
            ("im2col", "im2col", None, {}), ("vit_tokens", "vit_tokens", None, {}),
            ("rows", "embed", WeightStorage("float32"), {"accumulate": False})]


def bundle_files(model: dict, source: ModelSource) -> list[str]:
    """The demo's sample images, where the model folder has them."""
    return ["samples.json"] if source.folder and (source.folder / "samples.json").is_file() else []


# --- bench -----------------------------------------------------------------------------------------

class FashionMnistTop1:
    """Top-1 accuracy on the 10000 Fashion-MNIST test images."""

    def __init__(self, model: dict, folder: Path, fp32_weights: dict):
        self.model = model
        images, self.labels = ev.fashion_mnist("t10k")
        self.pixels = ev.grey_to_pixels(images, model["preprocess"])
        self.base = float((classify(model, fp32_weights, self.pixels).argmax(1) == self.labels).mean())

    def __call__(self, weights: dict) -> dict:
        top1 = float((classify(self.model, weights, self.pixels).argmax(1) == self.labels).mean())
        return {"metric": "Fashion-MNIST top-1", "value": round(top1, 4), "ratio": round(100 * top1 / self.base, 2),
                "float32": round(self.base, 4)}


VIT = Architecture(
    name="vit", model_types=("vit",), summary="vit (ViTModel, ViTForImageClassification)",
    describe=describe, reference_forward=vit_forward, input_kind="images",
    verification_input=verification_input, demo=lambda model: {"samples": "samples.json"},
    operator_kernels=operator_kernels, bundle_files=bundle_files, float_operands=float_operands,
    calibration_inputs=calibration_inputs, accuracy=FashionMnistTop1,
    bench_presets=("float32", "default", "int8", "int4", "int3", "int2", "int4-gptq", "int3-gptq", "int2-gptq",
                   "mixed-2.5", "mixed-3"),
    bench_goals=(Goal("int4 >= 99 %", 99.0, bits=4),
                 Goal("best 2-bit method, <= 2.5 bits/weight, >= 94 %", 94.0, bits=2, mixed=True, max_bpw=2.5)),
    preset_overrides={"int2-gptq": {"format": "int2-ternary"}},  # ternary per output channel, no groups
)
