#!/usr/bin/env python3
"""Train the small built-in Llama-style decoder (RMSNorm, rotary positions, SwiGLU, grouped-query
attention, a tied LM head) on CPython's own English documentation, and write it as a Hugging Face
LlamaForCausalLM folder: config.json, generation_config.json, model.safetensors (float16),
tokenizer.json + tokenizer_config.json (a byte-level BPE trained here), heldout.txt (the held-out
text) and training.json (settings, data hashes, losses, perplexities). Run once; the result is
committed under ulpq_build/models/llama-pydoc/.

    python scripts/train_decoder.py --out ulpq_build/models/llama-pydoc          # all three steps, CPU
    python scripts/train_decoder.py prepare --work W                             # text, tokenizer, ids
    python scripts/train_decoder.py train --work W --out DIR [--device cuda]     # the model
    python scripts/train_decoder.py evaluate --out DIR                           # perplexities (numpy)

The text. No pretrained language model or corpus ships in the registries these machines reach, but
the Python standard library does, under the PSF license (redistributable with its notice):
- `pydoc_data/topics.py`: the language reference and library topics that `help()` shows (79 topics,
  ~465 KB of English prose with code examples);
- the docstrings of the standard library's modules, classes and functions (~1.7 MB; test packages
  left out), read with `ast` (nothing is imported);
- ulpq_build/data/calibration_text.txt, the 347 sentences the project calibrated GPTQ and the planner
  on when the model was trained (written for this project, under its license): in the TRAINING text
  only, so quantization calibrates on text the model has seen, as GPTQ's usual calibration sets are
  drawn from training data. (The second calibration file, calibration_text_more.txt, came later: the
  model never saw it.)
The held-out text is whole `topics` entries, picked by the order of their names' sha256 until they
hold 10% of the topics' characters (validation, for choosing the checkpoint: the next 5%). The topics
nest (`compound` contains `while`; `specialnames` contains `customization`), so every paragraph of the
training text that also occurs (whitespace-normalised) in the held-out or validation text is dropped.
The text depends on the Python that runs `prepare` (3.11.7 for the committed model); training.json
records its sha256, and heldout.txt keeps the held-out text with the model so the figures can be
checked on any Python.

The tokenizer: byte-level BPE (GPT-2's pre-tokenizer, no prefix space), 4096 ids, `<|endoftext|>` (id 0)
between documents and as bos/eos. The model: 4 layers, hidden 256, 8 query heads and 2 key/value heads
of 32, SwiGLU 640, 256 positions, 3.67M parameters, trained on random 256-token windows of the training
stream (~0.59M tokens) by AdamW with a cosine schedule and dropout 0.2 (training only); the checkpoint
kept is the one with the lowest validation loss (checked every 100 steps). Seeded throughout; on a GPU
(bfloat16 autocast) it takes under a minute, on 2 CPU cores about 8 s a step (some hours), and the two
give different (equally valid) weights.

How the settings were chosen (one H200, by validation loss alone; the held-out text was not looked at):
without dropout the model memorises the training text within a few epochs (1000/2000/4000 steps kept
steps 500/300/300 at validation loss 4.52-4.55, training loss falling to 0.18); with dropout 0.1/0.2/0.3
over 3000 steps 4.56/4.57/4.51; dropout 0.2 over 1500 steps 4.48 (kept step 900): the committed one.

Perplexity (`evaluate`) is computed by the project's numpy reference (ulpq_build/decoder_reference.py,
float64) over non-overlapping 256-token windows of the held-out text (each window's first token is
context only), for the checkpoint as stored and for what `python -m ulpq_build quantize` makes of it
(int4 by GPTQ and by rounding; the planner at 2.5 bits per weight), each restored by `dequantize`.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's ulpq_build, not an installed copy
CALIBRATION = ROOT / "ulpq_build/data/calibration_text.txt"
EOT = "<|endoftext|>"
VOCAB = 4096
SEQ = 256
HELDOUT_SHARE, VALID_SHARE = 0.10, 0.05
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MIN_DOCSTRING = 40  # characters: shorter ones are mostly "Return self." and the like
CONFIG = {"vocab_size": VOCAB, "hidden_size": 256, "intermediate_size": 640, "num_hidden_layers": 4,
          "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": SEQ,
          "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
          "bos_token_id": 0, "eos_token_id": 0, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0}
TRAIN = {"batch": 32, "steps": 1500, "lr": 2e-3, "min_lr_ratio": 0.1, "warmup": 100, "weight_decay": 0.1,
         "betas": (0.9, 0.95), "clip": 1.0, "eval_every": 100, "seed": 0, "dropout": 0.2}
EVAL_BATCH = 8  # windows per numpy forward
SLICE_WINDOWS = 4  # the test's slice: the held-out text's first 4 windows
QUANTIZED = {  # name -> quantize options (the project's CLI)
    "int4_gptq": ["--format", "int4", "--method", "gptq"],
    "int4_rtn": ["--format", "int4", "--method", "rtn"],
    "int4_g32_rtn": ["--format", "int4", "--group-size", "32", "--method", "rtn"],
    "planned_2.5_rtn": ["--target-bpw", "2.5"],
    "planned_2.5_gptq": ["--target-bpw", "2.5", "--method", "gptq"],
}


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# --- text -------------------------------------------------------------------------------------------

def topics() -> dict[str, str]:
    from pydoc_data.topics import topics as table

    return dict(table)


def docstrings() -> list[str]:
    """Module, class and function docstrings of the standard library, in sorted file order, once each."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen, out = set(), []
    for path in sorted(root.rglob("*.py")):
        if SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # a few lib2to3 fixtures are Python 2 on purpose
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOCSTRING and doc not in seen:
                    seen.add(doc)
                    out.append(doc)
    return out


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def normalised(paragraph: str) -> str:
    return " ".join(paragraph.split())


def split_text() -> dict:
    """{"train": [docs], "valid": [docs], "heldout": [docs], "facts": {...}}: held-out and validation are
    whole topics in sha256 order of their names; training paragraphs found in either are dropped."""
    table = topics()
    order = sorted(table, key=sha256)
    total = sum(len(v) for v in table.values())
    heldout, valid, rest, chars = [], [], [], 0
    for name in order:
        if chars < HELDOUT_SHARE * total:
            heldout.append(name)
        elif chars < (HELDOUT_SHARE + VALID_SHARE) * total:
            valid.append(name)
        else:
            rest.append(name)
        chars += len(table[name])
    protected = {normalised(p) for name in heldout + valid for p in paragraphs(table[name])}
    calibration = CALIBRATION.read_text(encoding="utf-8")
    raw_train = [table[n] for n in sorted(rest)] + docstrings() + [calibration]
    train, dropped = [], 0
    for doc in raw_train:
        kept = [p for p in paragraphs(doc) if normalised(p) not in protected]
        dropped += len(paragraphs(doc)) - len(kept)
        if kept:
            train.append("\n\n".join(kept))
    # the validation topics must not repeat held-out paragraphs either (they choose the checkpoint)
    held = {normalised(p) for name in heldout for p in paragraphs(table[name])}
    valid_docs = ["\n\n".join(p for p in paragraphs(table[n]) if normalised(p) not in held) for n in valid]
    facts = {"python": platform.python_version(), "topics_sha256": sha256(json.dumps(table, sort_keys=True)),
             "heldout_topics": heldout, "valid_topics": valid, "train_topics": len(rest),
             "docstrings": len(raw_train) - len(rest) - 1, "calibration_text_sha256": sha256(calibration),
             "train_paragraphs_dropped_as_heldout_or_valid": dropped}
    return {"train": train, "valid": [d for d in valid_docs if d], "heldout": [table[n] for n in heldout], "facts": facts}


# --- tokenizer --------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str]):
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[AddedToken(EOT, special=True, normalized=False)],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert tok.token_to_id(EOT) == 0 and tok.get_vocab_size() == VOCAB
    return tok


def stream(tok, docs: list[str]) -> np.ndarray:
    """The documents' ids, each followed by <|endoftext|>, as one uint16 stream."""
    out = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        out += enc.ids + [0]
    return np.asarray(out, np.uint16)


def windows(ids: np.ndarray) -> np.ndarray:
    """Non-overlapping SEQ-token windows [n, SEQ] (the tail shorter than a window is left out)."""
    n = len(ids) // SEQ
    return np.asarray(ids[: n * SEQ], np.int64).reshape(n, SEQ)


def prepare(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    text = split_text()
    tok = train_tokenizer(text["train"])
    tok.save(str(work / "tokenizer.json"))
    heldout_text = EOT.join(text["heldout"])  # + EOT: the stream's ids (added tokens split before the BPE)
    (work / "heldout.txt").write_text(heldout_text, encoding="utf-8")
    facts = dict(text["facts"])
    for split in ("train", "valid", "heldout"):
        ids = stream(tok, text[split])
        np.save(work / f"{split}.npy", ids)
        facts[f"{split}_characters"] = sum(len(d) for d in text[split])
        facts[f"{split}_tokens"] = len(ids)
    facts["heldout_txt_sha256"] = sha256(heldout_text)
    assert np.array_equal(heldout_ids(work), np.load(work / "heldout.npy")), "heldout.txt does not give the held-out stream"
    facts["tokenizer_json_sha256"] = sha256((work / "tokenizer.json").read_bytes())
    (work / "data.json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"prepared {work}: {facts['train_tokens']} train / {facts['valid_tokens']} valid / "
          f"{facts['heldout_tokens']} held-out tokens")
    return facts


def heldout_ids(folder: Path) -> np.ndarray:
    """heldout.txt through the folder's tokenizer: the same stream `prepare` made (EOT between topics)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return np.asarray(tok.encode((folder / "heldout.txt").read_text(encoding="utf-8") + EOT,
                                 add_special_tokens=False).ids, np.int64)


# --- training ---------------------------------------------------------------------------------------

def build_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**CONFIG))


def add_dropout(model, p: float) -> None:
    """Dropout in training only, on the embeddings and on each attention and MLP output before the
    residual add (LlamaForCausalLM has no hidden dropout; ~0.6M tokens of text overfit a 3.7M-parameter
    model within a few epochs without it). Forward hooks: the saved model is a plain Llama."""
    import torch

    def drop(module, _inputs, output):
        return torch.nn.functional.dropout(output, p, module.training)

    model.model.embed_tokens.register_forward_hook(drop)
    for layer in model.model.layers:
        layer.self_attn.o_proj.register_forward_hook(drop)
        layer.mlp.down_proj.register_forward_hook(drop)


def train(work: Path, out: Path, device: str, steps: int | None = None, dropout: float | None = None) -> dict:
    import torch

    settings = dict(TRAIN, steps=steps or TRAIN["steps"], device=device)
    if dropout is not None:
        settings["dropout"] = dropout
    torch.manual_seed(settings["seed"])
    np.random.seed(settings["seed"])
    model = build_model().to(device)
    if settings["dropout"]:
        add_dropout(model, settings["dropout"])
    params = sum(p.numel() for p in model.parameters())
    train_ids = torch.from_numpy(np.load(work / "train.npy").astype(np.int64))
    valid = torch.from_numpy(windows(np.load(work / "valid.npy"))).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=settings["lr"], betas=settings["betas"])
    total = settings["steps"]

    def lr_at(step):  # linear warm-up, then cosine down to min_lr_ratio of the peak
        if step < settings["warmup"]:
            return (step + 1) / settings["warmup"]
        t = (step - settings["warmup"]) / max(1, total - settings["warmup"])
        return settings["min_lr_ratio"] + (1 - settings["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * t))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    generator = torch.Generator().manual_seed(settings["seed"])

    def loss_of(batch):
        with autocast:
            logits = model(input_ids=batch[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    def valid_loss():
        model.eval()
        with torch.no_grad():
            losses = [loss_of(valid[i:i + 16]).item() * len(valid[i:i + 16]) for i in range(0, len(valid), 16)]
        model.train()
        return sum(losses) / len(valid)

    best, best_state, log, start = float("inf"), None, [], time.time()
    model.train()
    for step in range(total):
        starts = torch.randint(0, len(train_ids) - SEQ - 1, (settings["batch"],), generator=generator)
        batch = torch.stack([train_ids[s:s + SEQ + 1] for s in starts.tolist()]).to(device)
        loss = loss_of(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["clip"])
        optimizer.step()
        schedule.step()
        if (step + 1) % settings["eval_every"] == 0 or step + 1 == total:
            v = valid_loss()
            log.append({"step": step + 1, "train_loss": round(loss.item(), 4), "valid_loss": round(v, 4)})
            print(f"step {step + 1}: train {loss.item():.3f} valid {v:.3f} ({time.time() - start:.0f} s)", flush=True)
            if v < best:
                best, best_step = v, step + 1
                best_state = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.to("cpu").to(torch.float16)
    record = {"parameters": params, "settings": settings, "seconds": round(time.time() - start, 1),
              "kept_step": best_step, "valid_loss_kept": round(best, 4),
              "final_train_loss": log[-1]["train_loss"], "final_valid_loss": log[-1]["valid_loss"], "log": log}
    write(model, out, work, record)
    return record


def write(model, out: Path, work: Path, record: dict) -> None:
    import shutil

    import tokenizers
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    model.generation_config.save_pretrained(out)
    shutil.copy(work / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(work / "heldout.txt", out / "heldout.txt")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT, "unk_token": None,
        "pad_token": None, "add_prefix_space": False, "model_max_length": SEQ, "clean_up_tokenization_spaces": False},
        indent=1) + "\n")
    data = json.loads((work / "data.json").read_text())
    training = {
        "model": "Llama-style decoder (LlamaForCausalLM), float16 storage", "script": "scripts/train_decoder.py",
        "command": "python3 " + " ".join(sys.argv),
        "text": "CPython standard library (PSF license): pydoc_data/topics.py and the stdlib's docstrings; "
                "plus ulpq_build/data/calibration_text.txt in training only",
        "license": "text: Python Software Foundation License (Python's documentation and docstrings); "
                   "heldout.txt is pydoc_data/topics.py text",
        "data": data, **record, "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__}
    (out / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    print(f"wrote {out}: {record['parameters']} parameters, kept step {record['kept_step']} "
          f"(validation loss {record['valid_loss_kept']})")


# --- perplexity with the numpy reference -------------------------------------------------------------

def load_reference(folder: Path, weights_file: Path | None = None):
    """(description, {tensor: float32 array}) through the project's readers; weights from
    `weights_file` (a dequantized checkpoint) when given, else the folder's model.safetensors."""
    from ulpq_build.architectures import describe_model, model_tensors
    from ulpq_build.model_source import open_model

    model = describe_model(open_model(folder))
    source = open_model(weights_file or folder)
    return model, {n: np.array(source.weights.tensor(n), np.float32) for n in model_tensors(model)}


def window_nll(model: dict, weights: dict, batch: np.ndarray) -> np.ndarray:
    """Summed negative log-likelihood (nats) of tokens 1.. of each window [n, SEQ] given the ones before."""
    from ulpq_build.decoder_reference import reference_forward

    logits = reference_forward(model, weights, batch)[:, :-1]
    top = logits.max(axis=-1, keepdims=True)
    logz = (top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1)))
    picked = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
    return (logz - picked).sum(axis=1)


def perplexity(model: dict, weights: dict, wins: np.ndarray) -> dict:
    nll = np.concatenate([window_nll(model, weights, wins[i:i + EVAL_BATCH]) for i in range(0, len(wins), EVAL_BATCH)])
    tokens = wins.shape[0] * (SEQ - 1)
    return {"perplexity": round(float(np.exp(nll.sum() / tokens)), 4), "tokens_scored": int(tokens),
            "slice_perplexity": round(float(np.exp(nll[:SLICE_WINDOWS].sum() / (SLICE_WINDOWS * (SEQ - 1)))), 6)}


def quantize_cli(folder: Path, options: list[str], scratch: Path) -> tuple[Path, dict, str]:
    """`python -m ulpq_build quantize` then `dequantize`: the restored float32 file, the checkpoint's
    bits per weight as `inspect --json` reports them, and quantize's printed plan."""
    q, r = scratch / "q.safetensors", scratch / "r.safetensors"
    run = lambda *a: subprocess.run([sys.executable, "-m", "ulpq_build", *map(str, a)], check=False, cwd=ROOT,
                                    capture_output=True, text=True)
    done = run("quantize", folder, "--out", q, *options)
    if done.returncode:
        raise SystemExit(f"quantize {' '.join(options)} failed: {done.stderr.strip() or done.stdout.strip()}")
    restored = run("dequantize", q, "--out", r)
    if restored.returncode:
        raise SystemExit(f"dequantize failed: {restored.stderr.strip()}")
    inspected = run("inspect", q, "--json")
    facts = json.loads(inspected.stdout) if inspected.returncode == 0 else {"error": inspected.stderr.strip()}
    return r, facts, done.stdout


def evaluate(out: Path, names: list[str]) -> dict:
    model, weights = load_reference(out)
    wins = windows(heldout_ids(out))
    results = {"float32": perplexity(model, weights, wins)}
    results["float32"]["bits_per_parameter"] = 16.0  # as stored (float16); the reference computes in float64
    print(f"float16 as stored: {results['float32']}", flush=True)
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            restored, facts, printed = quantize_cli(out, QUANTIZED[name], Path(tmp))
            _, qweights = load_reference(out, restored)
            results[name] = perplexity(model, qweights, wins)
        results[name]["options"] = " ".join(QUANTIZED[name])
        results[name].update(bits_per_weight(facts))
        results[name]["vs_float32"] = round(results[name]["perplexity"] / results["float32"]["perplexity"] - 1, 4)
        print(f"{name}: {results[name]['perplexity']} ({results[name]['vs_float32']:+.2%}), "
              f"{results[name].get('bits_per_parameter')} bits/parameter\n{printed.strip()}", flush=True)
    training = json.loads((out / "training.json").read_text())
    training["perplexity"] = {"text": "heldout.txt, non-overlapping 256-token windows, numpy reference (float64)",
                              "slice_windows": SLICE_WINDOWS, **results}
    (out / "training.json").write_text(json.dumps(training, indent=1) + "\n")
    return results


def bits_per_weight(facts: dict) -> dict:
    """What `inspect --json` says of a checkpoint: bits per parameter (everything stored, norms too),
    bits per quantized weight, and how many tensors got each format."""
    if "totals" not in facts:
        return {"error": facts.get("error")}
    formats: dict[str, int] = {}
    for row in facts["tensors"]:
        key = f"{row['format']}/{row['group']}" if row.get("group") not in (None, "-") else str(row["format"])
        formats[key] = formats.get(key, 0) + 1
    t = facts["totals"]
    return {"bits_per_parameter": t["bits_per_weight"], "bits_per_quantized_weight": t["quantized_bits_per_weight"],
            "formats": formats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", nargs="?", choices=("all", "prepare", "train", "evaluate"), default="all")
    parser.add_argument("--work", type=Path, default=None, help="prepared text, tokenizer and ids (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "ulpq_build/models/llama-pydoc")
    parser.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {TRAIN['steps']})")
    parser.add_argument("--dropout", type=float, default=None, help=f"training dropout (default {TRAIN['dropout']})")
    parser.add_argument("--quantized", default=",".join(QUANTIZED), help="which quantized forms to evaluate")
    args = parser.parse_args()
    names = [n for n in args.quantized.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp) / "work"
        if args.step in ("all", "prepare"):
            prepare(work)
        if args.step in ("all", "train"):
            train(work, args.out, args.device, args.steps, args.dropout)
        if args.step in ("all", "evaluate"):
            evaluate(args.out, names)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
