"""What the generative-decoder rows (llama.py, gpt2.py) share: refusing config fields they do not
implement, bos/eos ids, tokenizer files, calibration on the shipped text, and the parts of a row a
decoder has no runtime for yet (issue 14: the JS/WGSL decoder runtime)."""

from __future__ import annotations

import json
from pathlib import Path

from ulpq_build import evaluation as ev
from ulpq_build.architectures.registry import CalibrationInputs
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

CALIBRATION_TOKENS = 128  # calibration passages are cut to this many tokens
PLANNER_TEXT_STRIDE = 4  # the planner's many runs see every 4th passage
# the reference returns float64 logits [passages, tokens, vocab]: a large vocabulary (Llama 3's 128k)
# calibrates on fewer passages, so they stay within this many bytes (2 GiB: 16 passages of 128 tokens)
LOGITS_BUDGET = 2 << 30
DEMO_PROMPT = "Once upon a time"
BUNDLE_UNSUPPORTED = "decoder bundles need the decoder runtime (issue 14): use quantize for now"
MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def refuse(source: ModelSource, field: str, value, why: str) -> UserError:
    return UserError(f"{source.path}: config.json {field} = {json.dumps(value)[:80]} is not supported ({why})")


def refuse_common(source: ModelSource) -> None:
    """Fields no decoder row implements: mixture of experts, cross-attention, encoder-decoder."""
    cfg = source.config
    for field in MOE_FIELDS:
        if cfg.get(field):
            raise refuse(source, field, cfg[field], "mixture-of-experts layers are not implemented")
    for field in ("add_cross_attention", "is_encoder_decoder"):
        if cfg.get(field):
            raise refuse(source, field, cfg[field], "only decoder-only models without cross-attention are")


def config_float(source: ModelSource, key: str, default: float) -> float:
    value = source.config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{source.path}: config.json needs a positive number {key!r} (got {value!r})")
    return float(value)


def _ids(value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


def special_tokens(source: ModelSource, vocab: int) -> dict:
    """bos/eos/pad ids from generation_config.json (what generate() uses), else config.json; ids past
    the word table (a random test model's default ids) are left out."""
    generation = {}
    path = source.folder / "generation_config.json" if source.folder else None
    if path is not None and path.is_file():
        try:
            generation = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot be read as JSON ({exc}); fix or remove the file") from None
        if not isinstance(generation, dict):
            raise UserError(f"{path}: is not a JSON object; fix or remove the file")

    def pick(key):
        value = generation.get(key, source.config.get(key))
        return [i for i in _ids(value) if i < vocab]

    bos, pad = pick("bos_token_id"), pick("pad_token_id")
    return {"bos_token_id": bos[0] if bos else None, "eos_token_ids": pick("eos_token_id"),
            "pad_token_id": pad[0] if pad else None}


def tokenizer_facts(source: ModelSource) -> dict | None:
    folder = source.folder
    files = [n for n in TOKENIZER_FILES if folder is not None and (folder / n).is_file()]
    return {"files": files} if "tokenizer.json" in files else None


def calibration_inputs(model: dict, folder: Path | None, texts: list[str]) -> CalibrationInputs:
    """The shipped calibration passages through the model's own tokenizer.json, right-padded (causal
    attention keeps padding out of every real token's output; the hook sees real tokens only)."""
    tokenizer = folder / "tokenizer.json" if folder else None
    if tokenizer is None or not tokenizer.is_file():
        raise UserError("calibration for a decoder needs its tokenizer.json in the model folder; quantize with "
                        "--method rtn, or add the tokenizer")
    batch = ev.tokenize(tokenizer, texts, min(CALIBRATION_TOKENS, model["max_position"]))
    keep = max(1, LOGITS_BUDGET // (8 * model["vocab_size"] * batch.ids.shape[1]))
    batch = ev.TextBatch(batch.ids[:keep], batch.mask[:keep]).trimmed()
    small = ev.TextBatch(batch.ids[::PLANNER_TEXT_STRIDE], batch.mask[::PLANNER_TEXT_STRIDE]).trimmed()
    return CalibrationInputs.of_tokens(batch, small, tokenizer, model["embeddings"]["word"]["table"])


def ships_calibration(model: dict, source: ModelSource) -> bool:
    if source.folder is None or not (source.folder / "tokenizer.json").is_file():
        return False
    try:
        tokenizer = ev.load_tokenizer(source.folder / "tokenizer.json")
    except UserError:
        return False
    return tokenizer.get_vocab_size() <= source.weights.shape(model["embeddings"]["word"]["table"])[0]


def verification_input(model: dict, folder: Path, manifest: dict, images: int):
    raise UserError(BUNDLE_UNSUPPORTED)


def demo(model: dict) -> dict:
    return {"prompt": DEMO_PROMPT, "max_new_tokens": 32}

