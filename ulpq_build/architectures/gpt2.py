"""GPT-2 (GPT2LMHeadModel, GPT2Model): learned positions, LayerNorm before attention and MLP, the
tanh GELU, a head tied to the word table. Its checkpoints keep every matrix as a Conv1D, stored
[in, out]; `stored_transposed` names them so open_model presents them [out, in] like every other
matrix (quantizer, reference and kernels see ordinary matrices). The fused c_attn stays one
[3 * hidden, hidden] matrix: q | k | v from one GEMM, split by the attention."""

from __future__ import annotations

from ulpq_build.architectures import decoder_common as dc
from ulpq_build.architectures.reading import Tensors, activation, config_int, prefix
from ulpq_build.architectures.registry import Architecture
from ulpq_build.errors import UserError
from ulpq_build.model_source import ModelSource

CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _prefix(weights) -> str | None:
    return next((p for p in ("", "transformer.") if p + "wte.weight" in weights.entries), None)


def stored_transposed(source: ModelSource) -> frozenset:
    """The Conv1D weights, when they are stored as transformers writes them ([in, out]: c_attn is
    [hidden, 3 * hidden]). A checkpoint already [out, in] (the dequantized output of `quantize`) is
    left alone: c_attn's shape tells the two apart, where the square c_proj could not."""
    weights, p = source.weights, _prefix(source.weights)
    if p is None:
        return frozenset()
    names = sorted(n for n in weights.entries if n.startswith(p + "h.") and n.endswith(".weight")
                   and any(n.endswith(f".{stem}.weight") for stem in CONV1D) and len(weights.shape(n)) == 2)
    first = next((n for n in names if n.endswith(".attn.c_attn.weight")), None)
    if first is None:
        return frozenset()
    rows, cols = weights.shape(first)
    return frozenset(names) if cols == 3 * rows else frozenset()


def describe(source: ModelSource) -> dict:
    cfg = source.config
    t = Tensors(source, "GPT-2", prefix(source, "wte.weight", ("", "transformer.")))
    hidden = config_int(source, "n_embd", cfg.get("hidden_size"))
    layers = config_int(source, "n_layer", cfg.get("num_hidden_layers"))
    heads = config_int(source, "n_head", cfg.get("num_attention_heads"))
    inter = config_int(source, "n_inner", 4 * hidden) if cfg.get("n_inner") is not None else 4 * hidden
    vocab = config_int(source, "vocab_size")
    max_position = config_int(source, "n_positions", cfg.get("max_position_embeddings", 1024))
    if hidden % heads:
        raise UserError(f"{source.path}: config.json n_embd {hidden} is not a multiple of n_head {heads}")
    dc.refuse_common(source)
    if cfg.get("scale_attn_by_inverse_layer_idx"):
        raise dc.refuse(source, "scale_attn_by_inverse_layer_idx", True, "per-layer attention scaling is not implemented")
    if cfg.get("scale_attn_weights", True) is not True:
        raise dc.refuse(source, "scale_attn_weights", cfg["scale_attn_weights"], "only 1/sqrt(head_dim) scaling is implemented")
    act = activation(source, "activation_function", "gelu_new", allowed=("gelu_tanh", "gelu"))
    ln = lambda stem: t.norm(stem)  # noqa: E731
    graph_layers = []
    for i in range(layers):
        p = f"h.{i}."
        graph_layers.append({
            "attn_norm": ln(p + "ln_1"),
            "qkv": t.linear(p + "attn.c_attn", expect=(3 * hidden, hidden)),
            "attn_out": t.linear(p + "attn.c_proj", residual=True, expect=(hidden, hidden)),
            "mlp_norm": ln(p + "ln_2"),
            "fc": t.linear(p + "mlp.c_fc", act, expect=(inter, hidden)),
            "proj": t.linear(p + "mlp.c_proj", residual=True, expect=(hidden, inter)),
        })
    table, positions = t.name("wte.weight"), t.name("wpe.weight")
    if t.shape("wte.weight") != (vocab, hidden) or t.shape("wpe.weight")[1:] != (hidden,):
        raise UserError(f"{source.path}: wte/wpe have shapes {list(t.shape('wte.weight'))} and "
                        f"{list(t.shape('wpe.weight'))}, the config implies [{vocab}, {hidden}] and [n, {hidden}]")
    max_position = min(max_position, t.shape("wpe.weight")[0])
    head = Tensors(source, "GPT-2")
    tied = bool(cfg.get("tie_word_embeddings", True)) or not head.has("lm_head.weight")
    lm_head = ({"weight": table, "bias": None, "in_features": hidden, "out_features": vocab, "activation": "none",
                "residual": False} if tied else head.linear("lm_head", expect=(vocab, hidden)))
    return {
        "architecture": GPT2.name, "model_type": cfg.get("model_type"),
        "hidden_size": hidden, "num_layers": layers, "num_heads": heads, "num_kv_heads": heads,
        "head_dim": hidden // heads, "intermediate_size": inter, "vocab_size": vocab, "max_position": max_position,
        "norm": "layer", "norm_eps": dc.config_float(source, "layer_norm_epsilon", 1e-5),
        "activation": act, "ffn": "plain", "positions": {"kind": "learned"},
        "embeddings": {"word": {"table": table}, "position": {"table": positions}},
        "layers": graph_layers, "final_norm": ln("ln_f"),
        "lm_head": lm_head, "tied_lm_head": tied,
        **dc.special_tokens(source, vocab),
        "output": "logits",
        "tokenizer": dc.tokenizer_facts(source),
    }


GPT2 = Architecture(
    name="gpt2", model_types=("gpt2",),
    summary="gpt2 (GPT2LMHeadModel)",
    describe=describe, stored_transposed=stored_transposed, **dc.decoder_fields(),
)
