"""Word tables stored in row blocks, each block in its own format.

A text model's word table is the largest matrix it has (MiniLM: 52 % of its weights) and the one the
model reads least evenly: a sentence gathers a few dozen of its 30,522 rows, and tokenizers number
their vocabularies roughly by frequency (BERT's WordPiece ids from 1996 on, BPE merges in order). On
the package's calibration text 88 % of MiniLM's tokens have ids below 8,000 and 2 % ids above 20,000.
Bits spent on rows that text rarely gathers buy little, so the planner may give each block of rows its
own format: the frequent rows more bits, the rare ones fewer (docs/two_bit_study.md, "The word table
in row blocks").

A block is a tensor of its own, named `<table>[<first>:<end>]` (rows first..end-1 of the table), in
plans, checkpoints and bundles alike; `assemble` puts a table back together wherever the whole one is
read (the numpy reference, `dequantize`, `verify`). In a bundle's graph the table's node lists its
blocks as `parts` ({"table": block, "first": first row}); the runtime gathers each block with the ids
shifted by its first row (web_runtime/graphs.js embedTable), so the gather kernels need no change: an
id below the block wraps past its rows as an unsigned integer and reads as zeros, like one above it.

Only tables the runtime gathers through that path are split (an architecture row's
`row_block_tables`: BERT's word table, not a decoder's, which its LM head may share), and only where
the planner chooses formats: adjacent blocks it gives the same format are merged again, so a plan that
treats the table alike stores it whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

# Block edges as fractions of the table's rows. Finer at the front, where the frequent rows are:
# with ids in frequency order the planner can then follow the frequencies down in about one-bit steps.
# On MiniLM at 2.5 bits (the plan's other matrices fixed), four hand-picked blocks at the same bytes as
# the whole table in E8P moved the Lee cosine from 0.9415 to 0.9481 (docs/two_bit_study.md).
BLOCK_EDGES = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4)
MIN_TABLE_ROWS = 4096  # smaller tables (positions, token types, toy vocabularies) stay whole

_BLOCK = re.compile(r"^(?P<base>.+)\[(?P<first>\d+):(?P<end>\d+)\]$")


def block_name(table: str, first: int, end: int) -> str:
    return f"{table}[{first}:{end}]"


def parse(name: str) -> tuple[str, int, int] | None:
    """(table, first, end) for a block's name, None for any other tensor."""
    m = _BLOCK.match(name)
    return (m["base"], int(m["first"]), int(m["end"])) if m else None


def table_of(name: str) -> str:
    """The tensor a name's values come from: a block's table, else the name itself."""
    block = parse(name)
    return block[0] if block else name


def row_ranges(rows: int) -> list[tuple[int, int]]:
    """The blocks of a table of `rows` rows (one block, the whole table, below MIN_TABLE_ROWS)."""
    if rows < MIN_TABLE_ROWS:
        return [(0, rows)]
    edges = [0, *(round(rows * f) for f in BLOCK_EDGES), rows]
    return list(zip(edges[:-1], edges[1:]))


def expand(tensors: list[tuple[str, tuple[int, ...], str]], tables: set[str]) -> list[tuple[str, tuple[int, ...], str]]:
    """The (name, shape, dtype) list with each of `tables` replaced by its blocks, in row order."""
    out = []
    for name, shape, dtype in tensors:
        ranges = row_ranges(shape[0]) if name in tables and len(shape) == 2 else [(0, shape[0])]
        if len(ranges) == 1:
            out.append((name, shape, dtype))
        else:
            out += [(block_name(name, a, b), (b - a, *shape[1:]), dtype) for a, b in ranges]
    return out


def tensor(get: Callable[[str], np.ndarray], name: str) -> np.ndarray:
    """The values of tensor `name` through `get` (a reader by name: a dict's __getitem__, a
    safetensors file's tensor): a block's rows are a slice of its table's."""
    block = parse(name)
    if block is None:
        return get(name)
    table, first, end = block
    return np.asarray(get(table))[first:end]


def put(weights: dict[str, np.ndarray], name: str, values: np.ndarray) -> None:
    """weights[name] = values, where a block's values replace its rows in a copy of its table (the
    arrays in `weights` may be shared with the caller's float32 model: never written in place)."""
    block = parse(name)
    if block is None:
        weights[name] = values
        return
    table, first, end = block
    whole = np.array(weights[table], dtype=np.float32, copy=True)
    whole[first:end] = values
    weights[table] = whole


def groups(names: list[str]) -> list[tuple[str, list[str]]]:
    """Names grouped by table, in order: (table, [its blocks in row order]) for tables stored in
    blocks, (name, [name]) for every other tensor."""
    out: list[tuple[str, list[str]]] = []
    for name in names:
        block = parse(name)
        base = block[0] if block else name
        if block and out and out[-1][0] == base:
            out[-1][1].append(name)
        else:
            out.append((base, [name]))
    for base, members in out:
        if len(members) > 1 or parse(members[0]):
            ranges = [parse(m)[1:] for m in members]
            if ranges[0][0] != 0 or any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
                raise ValueError(f"tensor {base!r}: its row blocks {ranges} do not cover its rows in order")
    return out


def assemble(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights with each table stored in blocks put back together under its own name."""
    out = {}
    for base, members in groups(list(weights)):
        out[base] = weights[members[0]] if members == [base] else np.concatenate([weights[m] for m in members])
    return out


def merge(entries: list, make: Callable) -> list:
    """Plan entries (plan.PlanEntry) with runs of adjacent blocks of one table that have the same spec
    merged into one block, and a table whose blocks all have the same spec back under its own name.
    `make(name, shape, first entry)` builds the merged entry."""
    by_name = {e.name: e for e in entries}
    out = []
    for base, members in groups(list(by_name)):
        run = [by_name[m] for m in members]
        if members == [base]:
            out.append(run[0])
            continue
        merged: list[list] = []
        for e in run:
            if merged and merged[-1][-1].spec == e.spec:
                merged[-1].append(e)
            else:
                merged.append([e])
        whole = len(merged) == 1
        for same in merged:
            first, end = parse(same[0].name)[1], parse(same[-1].name)[2]
            rows = end - first
            shape = (rows, *same[0].shape[1:])
            out.append(make(base if whole else block_name(base, first, end), shape, same[0]))
    return out


def attach_parts(model: dict, names: list[str], nodes) -> None:
    """Give each table node (of `nodes`) whose table is stored in blocks its `parts`, in row order,
    and its `rows` (the whole table's, which the blocks must add up to)."""
    stored = {base: members for base, members in groups(names) if members != [base]}
    for node in nodes:
        members = stored.get(node.get("table"))
        if members:
            node["parts"] = [{"table": m, "first": parse(m)[1]} for m in members]
            node["rows"] = parse(members[-1])[2]


def check_parts(nodes, weights: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the table nodes' `parts` against the assembled `weights` (a bundle's), or
    None: each node's parts name its blocks in row order, and they add up to its `rows`."""
    for node in nodes:
        if "parts" not in node:
            continue
        table, parts = node.get("table"), node["parts"]
        names = [p.get("table") if isinstance(p, dict) else None for p in parts]
        blocks = [parse(n) if isinstance(n, str) else None for n in names]
        if not parts or any(b is None or b[0] != table for b in blocks):
            return f"table {table!r}: its parts {names} are not row blocks of it"
        if any(p.get("first") != b[1] for p, b in zip(parts, blocks)):
            return f"table {table!r}: a part's first row disagrees with its name"
        rows = weights[table].shape[0] if table in weights else None
        if rows != node.get("rows") or blocks[-1][2] != rows:
            return f"table {table!r}: its blocks hold {rows} rows, its graph node says {node.get('rows')}"
    return None
