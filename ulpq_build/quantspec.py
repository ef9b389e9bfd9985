"""How one tensor is quantized (format, scale granularity, zero points, scale dtype, codebook scope)
and what that costs in bytes: the parts a quantized tensor is stored as, derived from its shape
alone, so that a plan can state sizes before any weight is read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.formats import Format, get_format
from ulpq_build.schema import Bool, Int, Obj, Str, validate

SCALE_DTYPES = {"float32": np.float32, "float16": np.float16}
GROUP_SIZES = (32, 64, 128, 256)
PER_CHANNEL = 0  # group_size value: one scale per output channel (a whole row)
PER_TENSOR = -1  # group_size value: one scale for the whole tensor
# The declared JSON form of a QuantSpec (as to_json writes it into manifests and checkpoints).
SPEC_SCHEMA = Obj({"format": Str(max_len=64), "group_size": Int(min=-1, max=1 << 20), "asymmetric": Bool(),
                   "scale_dtype": Str(choices=tuple(SCALE_DTYPES)), "codebook": Str(choices=("tensor", "channel"))},
                  extra="forbid")


@dataclass(frozen=True)
class QuantSpec:
    format: str = "int4"
    group_size: int = PER_CHANNEL
    asymmetric: bool = False
    scale_dtype: str = "float32"
    codebook: str = "tensor"  # fitted formats: one codebook per "tensor" or per output "channel"

    @property
    def fmt(self) -> Format:
        return get_format(self.format)

    @property
    def granularity(self) -> str:
        if self.group_size == PER_TENSOR:
            return "tensor"
        return "channel" if self.group_size == PER_CHANNEL else "group"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str | None = None) -> "QuantSpec":
        """A spec from its JSON form (to_json). With `source` (the file it was read from) the fields are
        checked against SPEC_SCHEMA and each other, so a spec edited inside a file is reported as that
        file's error, not as a bad --format."""
        if source is None:
            return cls(**{k: data[k] for k in ("format", "group_size", "asymmetric", "scale_dtype", "codebook") if k in data})
        fields = validate(data, SPEC_SCHEMA, f"{source}: spec", "rebuild it with ulpq_build")
        return cls(**fields).validate(f"{source}: spec")

    def validate(self, source: str) -> "QuantSpec":
        """Check the options against each other; `source` names where they came from, for the error."""
        fmt = get_format(self.format, source=source)
        if self.scale_dtype not in SCALE_DTYPES:
            raise UserError(f"{source}: scale dtype {self.scale_dtype!r} is not one of {', '.join(SCALE_DTYPES)}")
        if self.group_size not in (PER_CHANNEL, PER_TENSOR, *GROUP_SIZES):
            raise UserError(f"{source}: group size {self.group_size} is not supported; use one of "
                            f"{', '.join(map(str, GROUP_SIZES))}, 0 (per output channel) or -1 (per tensor)")
        if self.asymmetric and not fmt.supports_asymmetric:
            raise UserError(f"{source}: format {fmt.name} has a fixed or fitted value set; zero points "
                            f"(--asymmetric) apply to the uniform formats only")
        if self.codebook not in ("tensor", "channel"):
            raise UserError(f"{source}: codebook scope {self.codebook!r} must be 'tensor' or 'channel'")
        if self.codebook == "channel" and self.group_size == PER_TENSOR:
            raise UserError(f"{source}: per-channel codebooks need per-channel or per-group scales, not one scale per tensor")
        return self


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The [rows, inputs] view a tensor is quantized as: rows are the first axis (output channels)."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, shape[0])
    return (shape[0], math.prod(shape[1:]))


def n_groups(spec: QuantSpec, rows: int, k: int) -> tuple[int, int]:
    """Shape of the scale array for a [rows, k] matrix."""
    if spec.group_size == PER_TENSOR:
        return (1, 1)
    if spec.group_size == PER_CHANNEL:
        return (rows, 1)
    return (rows, k // spec.group_size)


def part_layout(spec: QuantSpec, shape: tuple[int, ...]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The stored parts of a tensor of `shape` under `spec`: name -> (dtype, shape)."""
    fmt = spec.fmt
    rows, k = matrix_shape(shape)
    if not fmt.quantized:
        return {"codes": ("float32", (rows, k))}
    if fmt.levels == "codebook":  # one float16 scale per row and the rotation seed, whatever the spec says
        return {"codes": ("uint32", (rows, fmt.words_per_row(k))), "scales": ("float16", (rows, 1)),
                **({"seeds": ("uint32", (1,))} if fmt.rotate else {})}
    parts = {"codes": ("uint32", (rows, fmt.words_per_row(k))), "scales": (spec.scale_dtype, n_groups(spec, rows, k))}
    if spec.asymmetric:
        parts["zeros"] = ("uint8", n_groups(spec, rows, k))
    if fmt.levels == "fitted":
        parts["codebook"] = ("float32", (rows if spec.codebook == "channel" else 1, fmt.n_levels))
    return parts


def stored_bytes(spec: QuantSpec, shape: tuple[int, ...]) -> int:
    return sum(np.dtype(dt).itemsize * math.prod(shp) for dt, shp in part_layout(spec, shape).values())


def bits_per_weight(spec: QuantSpec, shape: tuple[int, ...]) -> float:
    """Effective bits per weight, scales, zero points, codebooks and word padding included."""
    return 8 * stored_bytes(spec, shape) / max(1, math.prod(shape))

