"""`bench`'s accuracy for generative decoders: perplexity on held-out text with the numpy reference,
over each bundle's own (dequantized) weights.

The text is the trained model's held-out text (ulpq_build/models/llama-pydoc/heldout.txt: CPython
documentation never trained on, PSF-licensed, shipped in the package), read through the bundle's own
tokenizer, so any decoder can be scored on it; for the trained model these are the windows
scripts/train_decoder.py scored (training.json's perplexity). Topics are separated by the
end-of-text string; each separator becomes the model's end-of-sequence id. The ids are cut into
non-overlapping windows of min(WINDOW, max_position) tokens, at most MAX_WINDOWS of them (a 1B
model's float64 reference over every window would take hours); each window's tokens 1.. are scored
given the ones before it.

The ratio (bench's "% of float32") is float32's perplexity over the preset's, in per cent: 100 at
float32, 98.04 where the perplexity is 2 % higher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures.registry import Goal
from ulpq_build.errors import UserError
from ulpq_build.resources import models_dir

HELD_OUT = models_dir() / "llama-pydoc" / "heldout.txt"
SEPARATOR = "<|endoftext|>"
WINDOW = 256
MAX_WINDOWS = 64
BATCH = 8  # windows per reference forward


def held_out_windows(model: dict, tokenizer_file: Path, text_file: Path = HELD_OUT, window: int = WINDOW,
                     max_windows: int | None = None) -> np.ndarray:
    """[windows, length] token ids of the held-out text through `tokenizer_file` (at most
    `max_windows`, default MAX_WINDOWS)."""
    tokenizer = ev.load_tokenizer(tokenizer_file)
    eos = (model.get("eos_token_ids") or [None])[0]
    ids: list[int] = []
    for piece in text_file.read_text(encoding="utf-8").split(SEPARATOR):  # each topic, then end-of-text
        ids += tokenizer.encode(piece, add_special_tokens=False).ids
        if eos is not None:
            ids.append(int(eos))
    length = min(window, model["max_position"])
    count = min(max_windows or MAX_WINDOWS, len(ids) // length)
    if count < 1:
        raise UserError(f"{text_file}: {len(ids)} tokens through {tokenizer_file.name}, fewer than one window of {length}")
    return np.asarray(ids[: count * length], np.int64).reshape(count, length)


def window_nll(model: dict, weights: dict, windows: np.ndarray) -> np.ndarray:
    """Summed negative log-likelihood (nats) of tokens 1.. of each window given the ones before."""
    from ulpq_build.decoder_reference import reference_forward

    out = []
    for i in range(0, len(windows), BATCH):
        batch = windows[i:i + BATCH]
        logits = np.asarray(reference_forward(model, weights, batch), np.float64)[:, :-1]
        top = logits.max(axis=-1, keepdims=True)
        logz = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
        picked = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
        out.append((logz - picked).sum(axis=1))
    return np.concatenate(out)


def perplexity(model: dict, weights: dict, windows: np.ndarray) -> float:
    nll = window_nll(model, weights, windows)
    return float(np.exp(nll.sum() / (windows.shape[0] * (windows.shape[1] - 1))))


class HeldOutPerplexity:
    """The architecture rows' `accuracy` for decoders: perplexity on the held-out text."""

    def __init__(self, model: dict, folder: Path, fp32_weights: dict):
        self.model = model
        files = (model.get("tokenizer") or {}).get("files", [])
        tokenizer = next((folder / f for f in files if f.endswith("tokenizer.json")), None)
        if tokenizer is None or not tokenizer.is_file():
            raise UserError(f"{folder}: bench scores a decoder on held-out text through its tokenizer.json, "
                            "which this bundle lacks; rebuild it from a folder with tokenizer.json")
        self.windows = held_out_windows(model, tokenizer)
        self.base = perplexity(model, fp32_weights, self.windows)

    def __call__(self, weights: dict) -> dict:
        ppl = perplexity(self.model, weights, self.windows)
        return {"metric": "held-out perplexity", "value": round(ppl, 4), "ratio": round(100 * self.base / ppl, 2),
                "float32": round(self.base, 4), "vs_float32_percent": round(100 * (ppl / self.base - 1), 2),
                "tokens_scored": int(self.windows.shape[0] * (self.windows.shape[1] - 1))}


# bench's default presets and the issue's goals for decoders (issue 14: int4 within 2 % of float32's
# perplexity, a planned 2.5 bits per weight within 10 %), as ratios float32 / preset
PRESETS = ("float32", "default", "int8", "int4", "int4-gptq", "int3", "int3-gptq", "int2-gptq", "mixed-2.5", "mixed-3")
GOALS = (Goal("int4 perplexity within 2 % of float32's", round(100 / 1.02, 2), bits=4),
         Goal("planned <= 2.5 bits/weight, perplexity within 10 % of float32's", round(100 / 1.10, 2), mixed=True,
              max_bpw=2.5))
