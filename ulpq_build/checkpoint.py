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
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ulpq_build.atomic import atomic_file
from ulpq_build.errors import UserError
from ulpq_build.plan import Plan, PlanEntry
from ulpq_build import row_blocks
from ulpq_build.quantize import F16_NORMAL_MIN, QuantizedTensor, check_finite, dequantize, quantize, scale_underflow
from ulpq_build.quantspec import QuantSpec, part_layout
from ulpq_build.safetensors_io import MAX_RANK, SafetensorsFile, to_bfloat16_bits, write_safetensors
from ulpq_build.schema import Anything, Int, List, Map, Obj, Str, parse_json, validate

METADATA_KEY = "ulpq"
CHECKPOINT_VERSION = 1
PART_SEPARATOR = ":"
ADVICE = "re-run `python -m ulpq_build quantize` on the float model"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
# The declared form of __metadata__["ulpq"]: per quantized tensor its original shape and dtype, its
# spec and its part names ("plan" is informative and not read back).
METADATA = Obj({"version": Int(min=0), "source": Str(), "method": Str(),
                "tensors": Map(Obj({"shape": List(Int(min=0, max=2**48), max_len=MAX_RANK),
                                    "dtype": Str(choices=FLOAT_DTYPES), "spec": Anything(),
                                    "parts": List(Str(max_len=16), max_len=8)}, extra="forbid")),
                "plan": Anything()}, optional={"source", "method", "plan"})


def part_name(tensor: str, part: str) -> str:
    return f"{tensor}{PART_SEPARATOR}{part}"


def iter_quantized(source: SafetensorsFile, plan: Plan, precomputed: dict[str, QuantizedTensor] | None = None,
                   warn=None) -> Iterator[tuple[PlanEntry, QuantizedTensor | None]]:
    """Yield (entry, quantized tensor) in plan order (None for tensors kept as stored, which are
    checked to be finite): from `precomputed` (GPTQ) where given, else rounded to nearest as we go;
    each tensor's input pages are released once the caller is done with it, so about one tensor is
    resident at a time. float16 scales that underflow are reported once, at the end, through `warn`
    (default: one line on stderr)."""
    underflow = []
    for entry in plan.entries:
        try:
            if precomputed and entry.name in precomputed:
                qt = precomputed[entry.name]
            elif entry.spec.fmt.quantized:
                qt = quantize(entry.name, row_blocks.tensor(source.tensor, entry.name), entry.spec)
            else:
                check_finite(entry.name, row_blocks.tensor(source.tensor, entry.name))
                qt = None
        except UserError as exc:  # name the file the tensor came from
            raise UserError(f"{source.path}: {exc}") from None
        if qt is not None:
            small, zero = scale_underflow(qt)
            if small:
                underflow.append((entry.name, small, zero))
        yield entry, qt
        source.release(row_blocks.table_of(entry.name))
    if underflow:
        name, small, zero = max(underflow, key=lambda u: u[1])
        message = (f"warning: {len(underflow)} tensor(s) have float16 scales below {F16_NORMAL_MIN:.3g} (e.g. {name!r}: "
                   f"{small} groups, {zero} of them 0), so their smallest weights lose precision or become 0; "
                   f"use --scale-dtype float32 for them")
        (warn or (lambda m: print(m, file=sys.stderr)))(message)


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
        quantized: dict = {}
        if raw is not None:
            where = f"{path}: ulpq metadata"
            self.info = validate(parse_json(raw, where, ADVICE), METADATA, where, ADVICE)
            if self.info["version"] != CHECKPOINT_VERSION:
                raise UserError(f"{path}: ulpq metadata of version {self.info['version']}, this tool reads "
                                f"{CHECKPOINT_VERSION}; {ADVICE}")
            quantized = self.info["tensors"]
        self.tensors: list[LogicalTensor] = []
        covered = set()
        for name in self.file.names:
            base = name.rsplit(PART_SEPARATOR, 1)[0] if PART_SEPARATOR in name else None
            if base in quantized:
                if base not in covered:
                    covered.add(base)
                    self.tensors.append(self._logical(base, quantized[base]))
            else:
                self.tensors.append(LogicalTensor(name, self.file.shape(name), self.file.dtype(name), None))
        for base in quantized:
            if base in self.file.entries:
                raise UserError(f"{path}: tensor {base!r:.80} is stored both plain and quantized; the file is damaged, "
                                f"{ADVICE}")
            if base not in covered:
                raise UserError(f"{path}: quantized tensor {base!r:.80} has none of its parts in the file; "
                                f"the file is damaged, {ADVICE}")

    def _logical(self, name: str, entry: dict) -> "LogicalTensor":
        """A quantized tensor's metadata checked against its stored parts: the spec must be valid and
        every part present with the dtype and shape that the spec and shape imply (an edited shape or
        format does not match its codes)."""
        at = f"{self.path}: tensor {name!r:.80}"
        spec = QuantSpec.from_json(entry["spec"], source=at)
        shape = tuple(entry["shape"])
        if not spec.fmt.quantized:
            raise UserError(f"{at}: format {spec.format} is not a quantized format; {ADVICE}")
        layout = part_layout(spec, shape)
        if sorted(entry["parts"]) != sorted(layout):
            raise UserError(f"{at}: lists parts {entry['parts']} but format {spec.format} stores {list(layout)}; "
                            f"the file is damaged, {ADVICE}")
        for part, (dtype, part_shape) in layout.items():
            stored = part_name(name, part)
            if stored not in self.file.entries:
                raise UserError(f"{at}: lacks its {part!r} part; the file is damaged, {ADVICE}")
            if (self.file.dtype(stored), tuple(self.file.shape(stored))) != (dtype, tuple(part_shape)):
                raise UserError(f"{at}: its {part!r} part is {self.file.dtype(stored)}{list(self.file.shape(stored))} "
                                f"but shape {list(shape)} in {spec.format} needs {dtype}{list(part_shape)}; "
                                f"the metadata or the file was edited, {ADVICE}")
        return LogicalTensor(name, shape, entry["dtype"], spec)

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
        return dequantize(self.quantized_tensor(t), source=f"{self.path}: tensor {t.name!r:.80}")


def narrowed(values: np.ndarray, t: LogicalTensor, path: Path) -> np.ndarray:
    """Dequantized float32 values in the tensor's original dtype. A damaged file whose stored parts
    decode to finite values past that dtype's range (float16's 65504) is refused, one line naming
    the tensor, instead of writing Inf (and printing numpy's overflow warning)."""
    with np.errstate(over="ignore"):
        cast = values.astype(t.dtype)
    if not np.isfinite(cast).all():  # (only float tensors are ever quantized)
        raise UserError(f"{path}: tensor {t.name!r:.80}: its values decode past {t.dtype}'s range, which the "
                        f"original tensor cannot have held; the file is damaged, re-run `python -m ulpq_build quantize`")
    return cast


def write_dequantized(checkpoint: Checkpoint, out: Path) -> None:
    """Restore every tensor with its original name, shape and dtype (quantized ones dequantized; a
    table stored in row blocks as the one table it was: row_blocks.py)."""
    by_name = {t.name: t for t in checkpoint.tensors}
    try:
        tables = [(base, [by_name[m] for m in members]) for base, members in row_blocks.groups(list(by_name))]
    except ValueError as err:
        raise UserError(f"{checkpoint.path}: {err}; the file is damaged, {ADVICE}") from None
    specs = [(base, parts[0].dtype, (sum(t.shape[0] for t in parts), *parts[0].shape[1:]) if len(parts) > 1 else parts[0].shape)
             for base, parts in tables]

    def restored(t: LogicalTensor) -> np.ndarray:
        if t.spec is None:
            return checkpoint.file.raw(t.name)
        values = checkpoint.float32(t)
        return to_bfloat16_bits(values) if t.dtype == "bfloat16" else narrowed(values, t, checkpoint.path)

    def produce() -> Iterator[np.ndarray]:
        for _, parts in tables:
            yield restored(parts[0]) if len(parts) == 1 else np.concatenate([restored(t) for t in parts])

    with atomic_file(out) as tmp:
        write_safetensors(tmp, specs, produce(), {"format": "pt"})
