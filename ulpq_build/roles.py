"""Tensor roles from names alone (embedding, first / last transformer or MLP layer, attention,
feed-forward), so mixed-precision options work on any Hugging Face-style checkpoint without an
architecture adapter. Naming conventions covered: BERT / ViT (`encoder.layer.N`), GPT-style
(`h.N`, `blocks.N`), and plain `layers.N` stacks."""

from __future__ import annotations

import re

ROLES = ("embedding", "first_layer", "last_layer", "attention", "feed_forward")
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|blocks|block)\.(\d+)(?:\.|$)")
# "embed" (BERT, ViT, Llama), and GPT-2's token and position tables, wte and wpe
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe)(?:\.|$)", re.IGNORECASE)
_ATTENTION = re.compile(r"attn|attention|(?:^|\.)(?:q|k|v|o|out)_proj(?:\.|$)|(?:^|\.)(?:query|key|value)(?:\.|$)", re.IGNORECASE)
_FEED_FORWARD = re.compile(r"intermediate|(?:^|\.)(?:mlp|ffn|fc\d|feed_forward)(?:\.|$)|(?<!attention)\.output\.dense|dense_h_to_4h|dense_4h_to_h", re.IGNORECASE)


def is_embedding(name: str) -> bool:
    """Is the tensor of this name an embedding table (rows gathered by id)?"""
    return bool(_EMBEDDING.search(name))


def layer_index(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def tensor_roles(names: list[str]) -> dict[str, set[str]]:
    """name -> the set of roles it plays (possibly empty)."""
    indices = {n: layer_index(n) for n in names}
    numbered = [i for i in indices.values() if i is not None]
    first, last = (min(numbered), max(numbered)) if numbered else (None, None)
    roles: dict[str, set[str]] = {}
    for name in names:
        found = set()
        if is_embedding(name):
            found.add("embedding")
        if indices[name] is not None:
            if indices[name] == first:
                found.add("first_layer")
            if indices[name] == last:
                found.add("last_layer")
        if _ATTENTION.search(name):
            found.add("attention")
        elif _FEED_FORWARD.search(name):
            found.add("feed_forward")
        roles[name] = found
    return roles
