"""BERT encoders (BertModel, sentence-transformers folders, BertFor* checkpoints whose encoder sits
under `bert.`): text in, mean-pooled (optionally L2-normalised) sentence embeddings out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures.reading import Tensors, activation, config_int, prefix, read_json, tokenizer_fits_table
from ulpq_build.architectures.registry import Architecture, CalibrationInputs, Goal
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource
from ulpq_build.reference import attention, cosine, layernorm, linear

TEXT_TOKENS = 128  # calibration passages are cut to this many tokens
TEXT_BATCH = 10  # documents per reference run when scoring
DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The new movie is awesome.",
    "A cheetah is running behind its prey.",
]
VERIFY_SENTENCES = [  # `verify`'s fixed input: accents, punctuation, a question
    "A man is playing a guitar on the stage.",
    "Café owners in Zürich said the crème brûlée sold out by noon!",
    "Is this the right way to the railway station?",
    "The weather forecast predicts heavy rain tomorrow afternoon.",
]


# --- reading the checkpoint -----------------------------------------------------------------------

def describe(source: ModelSource) -> dict:
    t = Tensors(source, "BERT", prefix(source, "embeddings.word_embeddings.weight", ("", "bert.")))
    hidden = config_int(source, "hidden_size")
    layers = config_int(source, "num_hidden_layers")
    heads = config_int(source, "num_attention_heads")
    inter = config_int(source, "intermediate_size")
    if hidden % heads:
        raise UserError(f"{source.path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    if source.config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{source.path}: position_embedding_type {source.config['position_embedding_type']!r} is not "
                        f"supported (only 'absolute')")
    act = activation(source)
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
        "architecture": BERT.name,
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
    modules = read_json(folder / "modules.json") if folder else {}
    if not modules:
        return "mean", False
    kinds = [m["type"] for m in modules]
    pooling = "mean"
    for m in modules:
        if m["type"].endswith("Pooling"):
            sub = m.get("path", "")
            if ".." in sub.split("/") or sub.startswith("/"):
                raise UserError(f"{folder / 'modules.json'}: module path {sub!r:.60} leaves the model folder; fix the file")
            cfg = read_json(folder / sub / "config.json", "pooling")
            if cfg.get("pooling_mode_cls_token") or cfg.get("pooling_mode_max_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
                raise UserError(f"{folder}: only mean pooling is supported (pooling config {cfg})")
    return pooling, any(k.endswith("Normalize") for k in kinds)


def _tokenizer_facts(source: ModelSource, max_position: int) -> dict:
    folder = source.folder
    if folder is None or not ((folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()):
        raise UserError(f"{source.path}: a BERT bundle needs the tokenizer (tokenizer.json or vocab.txt) beside "
                        f"model.safetensors; pass the model folder")
    st = read_json(folder / "sentence_bert_config.json")
    tk = read_json(folder / "tokenizer_config.json")
    read_json(folder / "tokenizer.json")  # the runtime parses it: refuse a broken one now
    max_length = int(min(st.get("max_seq_length") or tk.get("model_max_length") or max_position, max_position))
    return {"files": [n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()],
            "max_length": min(max_length, max_position),
            "lowercase": bool(tk.get("do_lower_case", True)), "strip_accents": tk.get("strip_accents")}


# --- the numpy reference ---------------------------------------------------------------------------

def bert_forward(model: dict, weights: dict, ids: np.ndarray, mask: np.ndarray, hook=None, dtype=np.float64) -> np.ndarray:
    """Sentence embeddings [batch, hidden] for padded token ids [batch, seq] and mask (1 token, 0 pad);
    `hook`: see reference.linear. `dtype`: float64 for the oracle; float32 where only differences
    between runs matter and speed does (the planner's many runs)."""
    batch, seq = ids.shape
    emb = model["embeddings"]
    table = lambda name: np.asarray(weights[emb[name]["table"]])  # noqa: E731
    h = (table("word")[ids].astype(dtype) + table("position")[np.arange(seq)][None].astype(dtype)
         + table("token_type")[0][None, None].astype(dtype))
    h = layernorm(h.reshape(batch * seq, -1), emb["norm"], weights, model["layer_norm_eps"])
    keep = mask.astype(dtype)
    rows = keep.reshape(-1) > 0.5
    lin = lambda x, node, residual=None: linear(x, node, weights, residual, hook, rows)  # noqa: E731
    for layer in model["layers"]:
        q, k, v = (lin(h, layer[role]) for role in ("query", "key", "value"))
        ctx = attention(q, k, v, keep, batch, seq, model["num_heads"], model["head_dim"], layer["query"]["weight"])
        a = layernorm(lin(ctx, layer["attn_out"], h), layer["attn_norm"], weights, model["layer_norm_eps"])
        h = layernorm(lin(lin(a, layer["intermediate"]), layer["output"], a), layer["out_norm"], weights, model["layer_norm_eps"])
    h = h.reshape(batch, seq, -1)
    pooled = (h * keep[..., None]).sum(axis=1) / np.maximum(keep.sum(axis=1, keepdims=True), 1e-9)
    if model["normalize"]:
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


def _forward(model: dict, weights: dict, batch: ev.TextBatch, hook=None, dtype=np.float64) -> np.ndarray:
    return bert_forward(model, weights, batch.ids, batch.mask, hook=hook, dtype=dtype)


def embed(model: dict, weights: dict, batch: ev.TextBatch) -> np.ndarray:
    """Embeddings of many documents, TEXT_BATCH at a time."""
    parts = []
    for start in range(0, len(batch.ids), TEXT_BATCH):
        sl = slice(start, start + TEXT_BATCH)
        width = int(batch.mask[sl].sum(axis=1).max())  # drop columns that are padding for the whole slice
        parts.append(bert_forward(model, weights, batch.ids[sl, :width], batch.mask[sl, :width]))
    return np.concatenate(parts)


# --- inputs: calibration, verification, demo --------------------------------------------------------

def calibration_inputs(model: dict, folder: Path | None, texts: list[str]) -> CalibrationInputs:
    tokenizer = folder / "tokenizer.json" if folder else None
    if tokenizer is None or not tokenizer.is_file():
        raise UserError("calibration for a BERT model needs its tokenizer.json in the model folder")
    batch = ev.tokenize(tokenizer, texts, TEXT_TOKENS)
    return CalibrationInputs.of_tokens(batch.trimmed(), tokenizer, model["embeddings"]["word"]["table"])


def verification_input(model: dict, folder: Path, manifest: dict, images: int):
    batch = ev.tokenize(folder / "tokenizer.json", VERIFY_SENTENCES, model["tokenizer"]["max_length"])
    return VERIFY_SENTENCES, batch, lambda expected, got: ("min cosine", float(cosine(got, expected).min()))


def operator_kernels(model: dict) -> list:
    return [("layernorm", "layernorm", None, {}), ("attention", "attention", None, {"mask": True}),
            ("meanpool", "meanpool", None, {"normalize": model["normalize"]})]


# --- bench -----------------------------------------------------------------------------------------

class LeeSimilarity:
    """Pearson correlation of embedding cosines with the Lee corpus's human similarity scores."""

    def __init__(self, model: dict, folder: Path, fp32_weights: dict):
        self.model = model
        self.docs, self.human = ev.lee_corpus()
        self.batch = ev.tokenize(folder / "tokenizer.json", self.docs, model["tokenizer"]["max_length"])
        self.reference = embed(model, fp32_weights, self.batch)
        self.base = ev.pearson_with_scores(self.reference, self.human)

    def __call__(self, weights: dict) -> dict:
        e = embed(self.model, weights, self.batch)
        p = ev.pearson_with_scores(e, self.human)
        return {"metric": "Lee Pearson", "value": round(p, 4), "ratio": round(100 * p / self.base, 2),
                "mean_cosine_to_float32": round(ev.mean_cosine(e, self.reference), 4), "float32": round(self.base, 4)}


BERT = Architecture(
    name="bert", model_types=("bert",), summary="bert (BertModel, sentence-transformers)",
    describe=describe, reference_forward=_forward, input_kind="texts",
    verification_input=verification_input, demo=lambda model: {"sentences": DEMO_SENTENCES},
    operator_kernels=operator_kernels, bundle_files=lambda model, source: list(model["tokenizer"]["files"]),
    # the word table: gathered only (no LM head shares it), through graphs.js embedTable
    row_block_tables=lambda model: [model["embeddings"]["word"]["table"]],
    calibration_inputs=calibration_inputs, ships_calibration=tokenizer_fits_table, accuracy=LeeSimilarity,
    bench_presets=("float32", "default", "int8", "int4", "int3", "int2", "int4-gptq", "int3-gptq", "int2-gptq",
                   "mixed-2.5", "mixed-3", "mixed-3.32"),
    # the goals for MiniLM; the report says met or missed by how much
    bench_goals=(Goal("int4 >= 99.5 %", 99.5, bits=4), Goal("int3 >= 98 %", 98.0, bits=3),
                 Goal("best 2-bit method, <= 2.5 bits/weight, >= 92 %", 92.0, bits=2, mixed=True, max_bpw=2.5),
                 Goal("mixed precision, <= 3 bits/weight, >= 99 %", 99.0, mixed=True, max_bpw=3.0)),
)
