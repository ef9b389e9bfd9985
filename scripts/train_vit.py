#!/usr/bin/env python3
"""Train the small built-in ViT on Fashion-MNIST (Debian's dataset-fashion-mnist) with torch on the
CPU, and write it as a Hugging Face ViTForImageClassification folder: config.json,
preprocessor_config.json, model.safetensors (float32), samples.json (a few test images for the demo
page) and training.json (the recorded test accuracy). Run once; the result is committed under
ulpq_build/models/vit-fashion-mnist/.

    pip install torch==2.13.0   # the local CPU wheel
    python scripts/train_vit.py --epochs 6 --out ulpq_build/models/vit-fashion-mnist

The model is plain torch with the tensor names transformers uses, so the checkpoint loads in
transformers' ViTForImageClassification too; it is pre-LayerNorm, GELU, [CLS] classification.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CONFIG = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128,
          "image_size": 28, "patch_size": 7, "num_channels": 1, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def load_idx(name: str) -> np.ndarray:
    raw = gzip.open(DATA / name).read()
    if name.endswith("labels-idx1-ubyte.gz"):
        return np.frombuffer(raw, np.uint8, offset=8)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class AttentionBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention = Attention(d)
        self.output = nn.Module()
        self.output.dense = nn.Linear(d, d)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg["hidden_size"], cfg["intermediate_size"]
        self.heads = cfg["num_attention_heads"]
        self.layernorm_before = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.attention = AttentionBlock(d)
        self.layernorm_after = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, h)
        self.output = nn.Module()
        self.output.dense = nn.Linear(h, d)

    def forward(self, x):
        b, s, d = x.shape
        n = self.layernorm_before(x)
        a = self.attention.attention
        split = lambda t: t.view(b, s, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        ctx = nn.functional.scaled_dot_product_attention(split(a.query(n)), split(a.key(n)), split(a.value(n)))
        x = x + self.attention.output.dense(ctx.transpose(1, 2).reshape(b, s, d))
        n = self.layernorm_after(x)
        return x + self.output.dense(nn.functional.gelu(self.intermediate.dense(n)))


class ViT(nn.Module):
    def __init__(self, cfg, n_labels):
        super().__init__()
        d, p = cfg["hidden_size"], cfg["patch_size"]
        grid = cfg["image_size"] // p
        self.vit = nn.Module()
        self.vit.embeddings = nn.Module()
        self.vit.embeddings.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.vit.embeddings.position_embeddings = nn.Parameter(torch.randn(1, grid * grid + 1, d) * 0.02)
        self.vit.embeddings.patch_embeddings = nn.Module()
        self.vit.embeddings.patch_embeddings.projection = nn.Conv2d(cfg["num_channels"], d, p, p)
        self.vit.encoder = nn.Module()
        self.vit.encoder.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.vit.layernorm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.classifier = nn.Linear(d, n_labels)

    def forward(self, pixels):
        e = self.vit.embeddings
        x = e.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([e.cls_token.expand(len(x), -1, -1), x], dim=1) + e.position_embeddings
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x[:, 0]))


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] with mean 0.5, std 0.5 (preprocessor_config.json)."""
    return torch.from_numpy((images.astype(np.float32) / 255.0 - 0.5) / 0.5).unsqueeze(1)


def evaluate(model, images, labels) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), 1000):
            correct += int((model(preprocess(images[i:i + 1000])).argmax(1).numpy() == labels[i:i + 1000]).sum())
    return correct / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("ulpq_build/models/vit-fashion-mnist"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train_x, train_y = load_idx("train-images-idx3-ubyte.gz"), load_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = load_idx("t10k-images-idx3-ubyte.gz"), load_idx("t10k-labels-idx1-ubyte.gz")
    model = ViT(CONFIG, len(LABELS))
    params = sum(p.numel() for p in model.parameters())
    batch, steps = 128, args.epochs * math.ceil(len(train_x) / 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_x))
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = train_x[idx]
            flip = rng.random(len(idx)) < 0.5  # horizontal flips: Fashion-MNIST classes are mirror-symmetric
            x = np.where(flip[:, None, None], x[:, :, ::-1], x)
            loss = nn.functional.cross_entropy(model(preprocess(x)), torch.from_numpy(train_y[idx].astype(np.int64)),
                                               label_smoothing=0.05)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {evaluate(model, test_x, test_y):.4f}, "
              f"{time.time() - start:.0f} s", flush=True)
    accuracy = evaluate(model, test_x, test_y)
    write(model, args.out, accuracy, params, args.epochs, test_x, test_y)
    print(f"wrote {args.out}: {params} parameters, test accuracy {accuracy:.4f}")
    return 0


def write(model, out: Path, accuracy: float, params: int, epochs: int, test_x, test_y) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit", **CONFIG, "qkv_bias": True,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
              "id2label": {str(i): name for i, name in enumerate(LABELS)},
              "label2id": {name: i for i, name in enumerate(LABELS)}}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 28, "width": 28},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5], "image_std": [0.5]},
        indent=1) + "\n")
    samples = []
    for label in range(len(LABELS)):  # the first test image of every class
        i = int(np.flatnonzero(test_y == label)[0])
        samples.append({"index": i, "label": LABELS[label], "width": 28, "height": 28,
                        "grey_base64": base64.b64encode(test_x[i].tobytes()).decode()})
    (out / "samples.json").write_text(json.dumps(samples) + "\n")
    (out / "training.json").write_text(json.dumps({
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test",
        "parameters": params, "epochs": epochs, "test_accuracy": round(accuracy, 4),
        "torch": torch.__version__, "script": "scripts/train_vit.py"}, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
