"""Walking a model description (the graph a bundle's manifest carries): its nodes by the key that
marks their kind, e.g. "in_features" for linear layers, "table" for embedding tables."""

from __future__ import annotations

from collections.abc import Iterator


def graph_nodes(tree, has: str) -> Iterator[dict]:
    """Every dict in the model description holding key `has`, depth first (each node's `kernels`, the
    shaders planned for it, are not walked)."""
    if isinstance(tree, dict):
        if has in tree:
            yield tree
        for key, value in tree.items():
            if key != "kernels":
                yield from graph_nodes(value, has)
    elif isinstance(tree, list):
        for item in tree:
            yield from graph_nodes(item, has)
