"""The quantized checkpoint: a safetensors file that any safetensors reader opens.

A quantized tensor `W` is stored as separate tensors `W:codes` (u32), `W:scales` (f32 or f16),
and where its format has them `W:zeros` (u8) and `W:codebook` (f32); every other tensor keeps
its name, dtype and bytes. The header's `__metadata__["ulpq"]` (JSON) holds, per quantized
tensor, its original shape and dtype, its spec (format, group size, zero points, scale dtype,
codebook scope) and its part names, plus the resolved plan. Writing streams tensor by tensor from
the memory-mapped input, so peak memory follows the largest tensor, not the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ulpq_build.atomic import atomic_file
from ulpq_build.errors import UserError
from ulpq_build.plan import Plan, PlanEntry
from ulpq_build.quantize import QuantizedTensor, dequantize, quantize
from ulpq_build.quantspec import QuantSpec, part_layout
from ulpq_build.safetensors_io import SafetensorsFile, to_bfloat16_bits, write_safetensors

METADATA_KEY = "ulpq"
CHECKPOINT_VERSION = 1
PART_SEPARATOR = ":"


def part_name(tensor: str, part: str) -> str:
    return f"{tensor}{PART_SEPARATOR}{part}"


def iter_quantized(source: SafetensorsFile, plan: Plan, precomputed: dict[str, QuantizedTensor] | None = None
                   ) -> Iterator[tuple[PlanEntry, QuantizedTensor | None]]:
    """Yield (entry, quantized tensor) in plan order (None for tensors kept as stored): from
    `precomputed` (GPTQ) where given, else rounded to nearest as we go; each tensor's input pages are
    released once the caller is done with it, so about one tensor is resident at a time."""
    for entry in plan.entries:
        if precomputed and entry.name in precomputed:
            yield entry, precomputed[entry.name]
        else:
            quantized = entry.spec.fmt.quantized
            yield entry, quantize(entry.name, source.tensor(entry.name), entry.spec) if quantized else None
        source.release(entry.name)


def write_quantized(source: SafetensorsFile, plan: Plan, out: Path, *, source_name: str,
                    precomputed: dict[str, QuantizedTensor] | None = None, method: str = "rtn") -> None:
    """Quantize `source` under `plan` into a checkpoint at `out` (all-or-nothing)."""
    specs, tensors = [], {}
    for entry in plan.entries:
        if entry.spec.fmt.quantized:
            layout = part_layout(entry.spec, entry.shape)
            specs.extend((part_name(entry.name, part), dtype, shape) for part, (dtype, shape) in layout.items())
            tensors[entry.name] = {"shape": list(entry.shape), "dtype": entry.dtype, "spec": entry.spec.to_json(),
                                   "parts": list(layout)}
        else:
            specs.append((entry.name, entry.dtype, entry.shape))
    metadata = {METADATA_KEY: json.dumps({"version": CHECKPOINT_VERSION, "source": source_name, "method": method,
                                          "tensors": tensors, "plan": plan.to_json()}, separators=(",", ":"))}

    def produce() -> Iterator[np.ndarray]:
        for entry, qt in iter_quantized(source, plan, precomputed):
            if qt is not None:
                yield from qt.parts.values()
            else:
                yield source.raw(entry.name)  # unchanged bytes (bfloat16 as its bits)

    with atomic_file(out) as tmp:
        write_safetensors(tmp, specs, produce(), metadata)


@dataclass
class LogicalTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    spec: QuantSpec | None  # None: stored as is


class Checkpoint:
    """A safetensors file read as logical tensors: quantized ones (from the ulpq metadata) and
    plain ones. A file without ulpq metadata is a checkpoint whose tensors are all plain."""

    def __init__(self, path: Path):
        self.file = SafetensorsFile(path)
        self.path = Path(path)
        raw = self.file.metadata.get(METADATA_KEY)
        self.info = {}
        if raw is not None:
            try:
                self.info = json.loads(raw)
                quantized = self.info["tensors"]
                assert self.info["version"] == CHECKPOINT_VERSION
            except (json.JSONDecodeError, KeyError, TypeError, AssertionError):
                raise UserError(f"{path}: its ulpq metadata is unreadable or of another version; re-run "
                                f"`python -m ulpq_build quantize`") from None
        else:
            quantized = {}
        self.tensors: list[LogicalTensor] = []
        stored = set(self.file.names)
        covered = set()
        for name in self.file.names:
            base = name.rsplit(PART_SEPARATOR, 1)[0] if PART_SEPARATOR in name else None
            if base in quantized:
                if base not in covered:
                    covered.add(base)
                    entry = quantized[base]
                    missing = [p for p in entry["parts"] if part_name(base, p) not in stored]
                    if missing:
                        raise UserError(f"{path}: tensor {base!r} lacks its {missing[0]!r} part; the file is damaged")
                    self.tensors.append(LogicalTensor(base, tuple(entry["shape"]), entry["dtype"],
                                                      QuantSpec.from_json(entry["spec"])))
            else:
                self.tensors.append(LogicalTensor(name, self.file.shape(name), self.file.dtype(name), None))

    @property
    def quantized(self) -> bool:
        return bool(self.info)

    def quantized_tensor(self, t: LogicalTensor) -> QuantizedTensor:
        parts = {p: np.asarray(self.file.raw(part_name(t.name, p))) for p in part_layout(t.spec, t.shape)}
        return QuantizedTensor(t.name, t.shape, t.dtype, t.spec, parts)

    def stored_bytes(self, t: LogicalTensor) -> int:
        if t.spec is None:
            return int(self.file.raw(t.name).nbytes)
        return sum(int(self.file.raw(part_name(t.name, p)).nbytes) for p in part_layout(t.spec, t.shape))

    def float32(self, t: LogicalTensor) -> np.ndarray:
        """The tensor's values as float32 (dequantized where quantized)."""
        if t.spec is None:
            return np.asarray(self.file.tensor(t.name), dtype=np.float32)
        return dequantize(self.quantized_tensor(t))


def write_dequantized(checkpoint: Checkpoint, out: Path) -> None:
    """Restore every tensor with its original name, shape and dtype (quantized ones dequantized)."""
    specs = [(t.name, t.dtype, t.shape) for t in checkpoint.tensors]

    def produce() -> Iterator[np.ndarray]:
        for t in checkpoint.tensors:
            if t.spec is None:
                yield checkpoint.file.raw(t.name)
                continue
            values = checkpoint.float32(t)
            yield to_bfloat16_bits(values) if t.dtype == "bfloat16" else values.astype(t.dtype)

    with atomic_file(out) as tmp:
        write_safetensors(tmp, specs, produce(), {"format": "pt"})
