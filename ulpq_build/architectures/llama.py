"""Llama-style generative decoders (LlamaForCausalLM, and Qwen2 / Mistral checkpoints whose tensors
match): RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, q/k/v (and o) biases where
the checkpoint has them, a tied or untied LM head. Token ids in, logits out
(decoder_reference.py runs it, with a KV cache)."""

from __future__ import annotations

import math

import numpy as np

from ulpq_build.architectures import decoder_common as dc
from ulpq_build.architectures.reading import Tensors, activation, config_int, prefix
from ulpq_build.architectures.registry import Architecture
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

ROPE_TYPES = ("default", "linear", "llama3")


# --- rotary positions ------------------------------------------------------------------------------

def rope(source: ModelSource, head_dim: int) -> dict:
    """Rotary settings from config.json, old form (rope_theta, rope_scaling) or transformers 5's
    rope_parameters, with the per-pair frequencies computed once (the runtime reads `inv_freq`)."""
    cfg = source.config
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    scaling = cfg.get("rope_scaling")
    field, spec = ("rope_scaling", scaling) if scaling is not None else ("rope_parameters", params)
    if not isinstance(spec, dict):
        raise dc.refuse(source, field, spec, "expected an object with rope_type")
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise dc.refuse(source, f"{field}.rope_type", kind, f"rotary scaling types implemented: {', '.join(ROPE_TYPES)}")
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or theta <= 1:
        raise dc.refuse(source, "rope_theta", theta, "expected a number above 1")
    partial = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise dc.refuse(source, "partial_rotary_factor", partial, "rotary over part of each head is not implemented")
    if head_dim % 2:
        raise UserError(f"{source.path}: head_dim {head_dim} is odd; rotary positions need an even head size")
    # as transformers computes it: float32 exponents, so the runtime and the oracle rotate alike
    inv_freq = 1.0 / (float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))).astype(np.float64)
    scaling_out = None
    if kind != "default":
        factor = _number(source, field, spec, "factor")
        scaling_out = {"type": kind, "factor": factor}
        if kind == "linear":
            inv_freq = inv_freq / factor
        else:  # llama3: long wavelengths slowed by `factor`, short ones kept, a smooth blend between
            low, high = _number(source, field, spec, "low_freq_factor"), _number(source, field, spec, "high_freq_factor")
            old = _number(source, field, spec, "original_max_position_embeddings")
            if high <= low:
                raise dc.refuse(source, f"{field}.high_freq_factor", high, "must exceed low_freq_factor")
            wavelen = 2 * math.pi / inv_freq
            scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
            smooth = (old / wavelen - low) / (high - low)
            medium = (wavelen >= old / high) & (wavelen <= old / low)
            inv_freq = np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
            scaling_out.update(low_freq_factor=low, high_freq_factor=high, original_max_position_embeddings=old)
    return {"kind": "rotary", "theta": float(theta), "scaling": scaling_out, "inv_freq": [float(f) for f in inv_freq]}


def _number(source: ModelSource, field: str, spec: dict, key: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise dc.refuse(source, f"{field}.{key}", value, "expected a positive number")
    return float(value)


# --- reading the checkpoint -----------------------------------------------------------------------

def _refuse_unsupported(source: ModelSource, max_position: int) -> None:
    cfg = source.config
    dc.refuse_common(source)
    window = cfg.get("sliding_window")
    uses_window = cfg.get("use_sliding_window", cfg.get("model_type") != "qwen2")  # Qwen2 keeps it off unless asked
    if uses_window and window is not None and window < max_position:
        raise dc.refuse(source, "sliding_window", window, f"sliding-window attention below max_position_embeddings "
                                                          f"{max_position} is not implemented")
    kinds = cfg.get("layer_types")
    if isinstance(kinds, list) and any(k != "full_attention" for k in kinds) and uses_window:
        raise dc.refuse(source, "layer_types", sorted(set(kinds)), "only full_attention layers are implemented")
    for field in ("qk_norm", "use_qk_norm"):
        if cfg.get(field):
            raise dc.refuse(source, field, cfg[field], "query/key norms are not implemented")


def describe(source: ModelSource) -> dict:
    cfg = source.config
    t = Tensors(source, "Llama", prefix(source, "embed_tokens.weight", ("", "model.")))
    hidden = config_int(source, "hidden_size")
    layers = config_int(source, "num_hidden_layers")
    heads = config_int(source, "num_attention_heads")
    kv_heads = config_int(source, "num_key_value_heads", heads)
    inter = config_int(source, "intermediate_size")
    vocab = config_int(source, "vocab_size")
    max_position = config_int(source, "max_position_embeddings")
    if cfg.get("head_dim") is None and hidden % heads:
        raise UserError(f"{source.path}: config.json hidden_size {hidden} is not a multiple of num_attention_heads "
                        f"{heads}, and no head_dim is given")
    head_dim = config_int(source, "head_dim", hidden // heads)
    if heads % kv_heads:
        raise UserError(f"{source.path}: config.json num_key_value_heads {kv_heads} does not divide "
                        f"num_attention_heads {heads}")
    _refuse_unsupported(source, max_position)
    act = activation(source, "hidden_act", "silu", allowed=("silu",))
    positions = rope(source, head_dim)
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    rms = lambda stem: {"weight": t.name(f"{stem}.weight"), "bias": None}  # noqa: E731

    graph_layers = []
    for i in range(layers):
        p = f"layers.{i}."
        graph_layers.append({
            "attn_norm": rms(p + "input_layernorm"),
            "query": t.linear(p + "self_attn.q_proj", expect=(q_out, hidden)),
            "key": t.linear(p + "self_attn.k_proj", expect=(kv_out, hidden)),
            "value": t.linear(p + "self_attn.v_proj", expect=(kv_out, hidden)),
            "attn_out": t.linear(p + "self_attn.o_proj", residual=True, expect=(hidden, q_out)),
            "mlp_norm": rms(p + "post_attention_layernorm"),
            "gate": t.linear(p + "mlp.gate_proj", act, expect=(inter, hidden)),
            "up": t.linear(p + "mlp.up_proj", expect=(inter, hidden)),
            "down": t.linear(p + "mlp.down_proj", residual=True, expect=(hidden, inter)),
        })
    table = t.name("embed_tokens.weight")
    if t.shape("embed_tokens.weight") != (vocab, hidden):
        raise UserError(f"{source.path}: {table} has shape {list(t.shape('embed_tokens.weight'))}, the config implies "
                        f"[{vocab}, {hidden}]")
    head = Tensors(source, "Llama")
    tied = bool(cfg.get("tie_word_embeddings", False)) or not head.has("lm_head.weight")
    if tied:
        lm_head = {"weight": table, "bias": None, "in_features": hidden, "out_features": vocab, "activation": "none",
                   "residual": False}
    else:
        lm_head = head.linear("lm_head", expect=(vocab, hidden))
    return {
        "architecture": LLAMA.name, "model_type": cfg.get("model_type"),
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "num_kv_heads": kv_heads,
        "head_dim": head_dim, "intermediate_size": inter, "vocab_size": vocab, "max_position": max_position,
        "norm": "rms", "norm_eps": dc.config_float(source, "rms_norm_eps", 1e-6),
        "activation": act, "ffn": "gated", "positions": positions,
        "embeddings": {"word": {"table": table}},
        "layers": graph_layers, "final_norm": rms("norm"),
        "lm_head": lm_head, "tied_lm_head": tied,
        **dc.special_tokens(source, vocab),
        "output": "logits",
        "tokenizer": dc.tokenizer_facts(source),
    }


LLAMA = Architecture(
    name="llama", model_types=("llama", "qwen2", "mistral"),
    summary="llama, qwen2, mistral (LlamaForCausalLM-style decoders)",
    describe=describe, **dc.decoder_fields(),
)
