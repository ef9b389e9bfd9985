"""What the generative-decoder rows (llama.py, gpt2.py) share: refusing config fields they do not
implement, bos/eos ids, tokenizer files, calibration on the shipped text, and what a decoder bundle
carries for its check: a fixed prompt's ids and the numpy reference's greedy tokens over the bundle's
own weights (the JS runtime's generate() must give the same tokens)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ulpq_build import evaluation as ev
from ulpq_build.architectures import decoder_bench
from ulpq_build.architectures.reading import tokenizer_fits_table
from ulpq_build.architectures.registry import CalibrationInputs
from ulpq_build.decoder_reference import generate_greedy, reference_forward
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

CALIBRATION_TOKENS = 128  # calibration passages are cut to this many tokens
# the reference returns float64 logits [passages, tokens, vocab]: a large vocabulary (Llama 3's 128k)
# calibrates on fewer passages, so they stay within this many bytes (2 GiB: 16 passages of 128 tokens)
LOGITS_BUDGET = 2 << 30
DEMO_PROMPT = "Once upon a time"
VERIFY_STEPS = 32  # greedy tokens the bundle's check compares
NO_TOKENIZER = ("a decoder bundle needs the model's tokenizer.json beside model.safetensors (generate() takes text); "
                "add it to the model folder")
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
    return CalibrationInputs.of_tokens(batch, tokenizer, model["embeddings"]["word"]["table"])


def bundle_unsupported(model: dict) -> str | None:
    return None if model.get("tokenizer") else NO_TOKENIZER


def prompt_ids(folder: Path, prompt: str = DEMO_PROMPT) -> list[int]:
    """The prompt's ids as `tokenizers` encodes it (special tokens of the post-processor included, as
    the runtime's tokenizer_bpe.js encodes it)."""
    return [int(i) for i in ev.load_tokenizer(folder / "tokenizer.json").encode(prompt).ids]


def steps_for(model: dict, prompt_length: int, wanted: int = VERIFY_STEPS) -> int:
    """How many tokens a generation after `prompt_length` tokens may give: the prefill gives the
    first, each further one takes the next position, and positions end at max_position."""
    return max(0, min(wanted, model["max_position"] - prompt_length + 1))


def greedy_tokens(model: dict, weights: dict, ids, steps: int = VERIFY_STEPS) -> list[int]:
    """The reference's greedy tokens after prompt ids [1, n], ending at the first eos token (included),
    as generate() stops there; float64 over the given (the bundle's dequantized) weights."""
    ids = np.asarray(ids, np.int64).reshape(1, -1)
    n = steps_for(model, ids.shape[1], steps)
    tokens = [int(t) for t in generate_greedy(model, weights, ids, n)[0]] if n else []
    eos = set(model.get("eos_token_ids") or [])
    end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
    return tokens[:end]


def verification_case(model: dict, folder: Path, weights: dict) -> dict:
    """The manifest's `verification`: the demo prompt's ids and the reference's greedy tokens after it."""
    ids = prompt_ids(folder)
    if not ids:
        raise UserError(f"{folder / 'tokenizer.json'}: encodes {DEMO_PROMPT!r} to no tokens; is it the model's tokenizer?")
    return {"prompt": DEMO_PROMPT, "prompt_ids": ids, "max_new_tokens": VERIFY_STEPS,
            "greedy_tokens": greedy_tokens(model, weights, [ids])}


def verification_input(model: dict, folder: Path, manifest: dict, images: int):
    """The browser generates greedily from the manifest's prompt ids; the check counts the positions
    where its tokens differ from the reference's (a missing or extra token counts too)."""
    case = manifest.get("verification")
    if not isinstance(case, dict) or not isinstance(case.get("prompt_ids"), list):
        raise UserError(f"{folder / 'manifest.json'}: a decoder bundle needs its verification section; rebuild the bundle")
    payload = {"prompt_ids": case["prompt_ids"], "max_new_tokens": VERIFY_STEPS}
    return payload, np.asarray([case["prompt_ids"]], np.int64), tokens_differing


def tokens_differing(expected: list[int], got) -> tuple[str, float]:
    got = [int(t) for t in np.asarray(got).reshape(-1)]
    differing = sum(a != b for a, b in zip(expected, got)) + abs(len(expected) - len(got))
    return "tokens differing", float(differing)


def verification_forward(model: dict, weights: dict, inputs) -> list[int]:
    return greedy_tokens(model, weights, inputs)


def operator_kernels(model: dict) -> list:
    """The weightless operators of the WebGPU decoder graph (web_runtime/decoder_webgpu.js): the
    decoder kernels, and "rows", which picks each sequence's last row before the LM head (an embed
    over float32 storage, as ViT's [CLS] rows), so the prefill's head is one GEMV, not n rows of it."""
    from ulpq_build.kernels import WeightStorage, decoder_operator_kernels

    return [*decoder_operator_kernels(model), ("rows", "embed", WeightStorage("float32"), {"accumulate": False})]


def demo(model: dict) -> dict:
    return {"prompt": DEMO_PROMPT, "max_new_tokens": 32}


def decoder_fields() -> dict:
    """The Architecture fields every generative decoder row shares (llama.py, gpt2.py add their own
    name, config types, description and weight layout): a prompt in, the numpy reference forward, the
    shipped calibration text, held-out perplexity, greedy tokens as the verification, the decoder
    operators."""
    return dict(
        reference_forward=reference_forward, input_kind="prompt", verification_input=verification_input, demo=demo,
        bundle_files=lambda model, source: list((model["tokenizer"] or {}).get("files", [])),
        calibration_inputs=calibration_inputs, ships_calibration=tokenizer_fits_table,
        accuracy=decoder_bench.HeldOutPerplexity, bench_presets=decoder_bench.PRESETS, bench_goals=decoder_bench.GOALS,
        bundle_unsupported=bundle_unsupported, operator_kernels=operator_kernels,
        verification_forward=verification_forward, verification_case=verification_case,
    )
