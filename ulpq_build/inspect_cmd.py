"""`inspect`: one row per tensor (name, shape, format, group, bytes, bits per weight) and totals,
for a float model, a quantized checkpoint or a bundle folder; with a reference model, the
relative RMSE and max abs error of every tensor against it."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ulpq_build.bundle_reader import load_bundle
from ulpq_build.checkpoint import Checkpoint
from ulpq_build.errors import UserError
from ulpq_build.model_source import open_model
from ulpq_build.quantspec import QuantSpec


@dataclass
class Row:
    name: str
    shape: list[int]
    format: str
    group: str
    bytes: int
    bits_per_weight: float
    rel_rmse: float | None = None
    max_abs_error: float | None = None


def _group_text(spec: QuantSpec | None) -> str:
    if spec is None or not spec.fmt.quantized:
        return "-"
    return {-1: "tensor", 0: "channel"}.get(spec.group_size, str(spec.group_size))


def _row(name, shape, fmt, spec, nbytes) -> Row:
    return Row(name, list(shape), fmt, _group_text(spec), int(nbytes), round(8 * nbytes / max(1, math.prod(shape)), 4))


def _errors(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    if values.shape != reference.shape:
        raise UserError(f"reference tensor has shape {list(reference.shape)}, the inspected one {list(values.shape)}")
    energy = float(np.sum(reference**2))
    err = float(np.sum((values - reference) ** 2))
    return (math.sqrt(err / energy) if energy else math.sqrt(err)), float(np.abs(values - reference).max(initial=0.0))


def inspect_path(path: Path, reference: Path | None = None) -> dict:
    path = Path(path)
    ref = open_model(reference).weights if reference else None
    rows = []

    def compare(row: Row, values_fn) -> None:
        if ref is None:
            return
        if row.name not in ref.entries:
            raise UserError(f"{reference}: has no tensor {row.name!r}; is it the model {path} was made from?")
        row.rel_rmse, row.max_abs_error = (round(v, 7) for v in _errors(values_fn(), ref.tensor(row.name)))

    if path.is_dir() and (path / "manifest.json").is_file():
        bundle = load_bundle(path)
        for entry in bundle.manifest["tensors"]:
            spec = QuantSpec.from_json(entry["spec"])
            row = _row(entry["name"], entry["shape"], entry["format"], spec, entry["bytes"])
            compare(row, lambda name=entry["name"]: bundle.weights[name])
            rows.append(row)
        kind = "bundle"
    else:
        source = open_model(path)  # a model folder or a .safetensors file, with the usual errors
        checkpoint = Checkpoint(source.weights.path)
        for t in checkpoint.tensors:
            fmt = t.spec.format if t.spec else t.dtype
            row = _row(t.name, t.shape, fmt, t.spec, checkpoint.stored_bytes(t))
            if t.spec is not None or ref is not None:
                compare(row, lambda t=t: checkpoint.float32(t))
            rows.append(row)
        kind = "quantized checkpoint" if checkpoint.quantized else "model"
    params = sum(math.prod(r.shape) for r in rows)
    total = sum(r.bytes for r in rows)
    quantized = [r for r in rows if r.group != "-"]
    q_params = sum(math.prod(r.shape) for r in quantized)
    totals = {
        "tensors": len(rows), "parameters": params, "bytes": total,
        "bits_per_weight": round(8 * total / params, 4) if params else 0.0,
        "quantized_bits_per_weight": round(8 * sum(r.bytes for r in quantized) / q_params, 4) if q_params else None,
        "float32_bytes": 4 * params, "reduction_vs_float32": round(4 * params / total, 3) if total else None,
    }
    return {"path": str(path), "kind": kind, "tensors": [asdict(r) for r in rows], "totals": totals}


def format_report(report: dict) -> str:
    rows = report["tensors"]
    with_errors = any(r["rel_rmse"] is not None for r in rows)
    width = max([len(r["name"]) for r in rows] + [6])
    head = f"{'tensor':<{width}}  {'shape':<14} {'format':<13} {'group':>7} {'bytes':>12} {'bits/w':>7}"
    if with_errors:
        head += f" {'rel.rmse':>9} {'max.abs':>9}"
    lines = [f"{report['path']} ({report['kind']})", head]
    for r in rows:
        line = (f"{r['name']:<{width}}  {'x'.join(map(str, r['shape'])):<14} {r['format']:<13} {r['group']:>7} "
                f"{r['bytes']:>12,} {r['bits_per_weight']:>7.3f}")
        if with_errors:
            line += "" if r["rel_rmse"] is None else f" {r['rel_rmse']:>9.5f} {r['max_abs_error']:>9.5f}"
        lines.append(line)
    t = report["totals"]
    qbits = f", {t['quantized_bits_per_weight']:.3f} bits per quantized weight" if t["quantized_bits_per_weight"] else ""
    lines.append(f"total: {t['tensors']} tensors, {t['parameters']:,} parameters, {t['bytes']:,} bytes, "
                 f"{t['bits_per_weight']:.3f} bits per parameter{qbits}, {t['reduction_vs_float32']}x smaller than float32")
    return "\n".join(lines)


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1)
