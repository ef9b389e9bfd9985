"""The quantization plan: which format, group size and options each tensor of a model gets.

Rules are ordered glob patterns on tensor names; the first match wins. Tensors no rule matches
get the default spec if they are floating-point matrices, and stay float32 otherwise (LayerNorm
weights, biases, 1-D tensors), so a plain `--format int4` quantizes exactly the weight matrices.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.formats import CODEBOOK_TABLE_BYTES
from ulpq_build.quantspec import QuantSpec, stored_bytes
from ulpq_build.safetensors_io import storage_dtype

FLOAT32 = QuantSpec("float32")


@dataclass(frozen=True)
class Rule:
    """Tensors matching `pattern` (a glob on the name) get `spec`. A role rule (from the config's
    mixedPrecision section) names its tensors explicitly in `names` instead."""

    pattern: str
    spec: QuantSpec
    source: str = "rule"  # where the rule came from, for messages ("config rules[2]", "mixedPrecision.embeddingBits")
    names: frozenset[str] | None = None

    def matches(self, name: str) -> bool:
        return name in self.names if self.names is not None else fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class PlanEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str
    spec: QuantSpec
    reason: str  # which rule or default decided

    @property
    def bytes(self) -> int:
        if not self.spec.fmt.quantized:  # kept as stored (a bundle widens float tensors to float32)
            return math.prod(self.shape) * storage_dtype(self.dtype).itemsize
        return stored_bytes(self.spec, self.shape)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes / max(1, math.prod(self.shape))

    @property
    def stored_format(self) -> str:
        """What the table calls this tensor's storage: the format, or for a tensor kept as stored its
        dtype (a float16 norm weight is 16 bits, not the float32 its spec names)."""
        return self.spec.format if self.spec.fmt.quantized else str(self.dtype)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, **self.spec.to_json(),
                "bytes": self.bytes, "bits_per_weight": round(self.bits_per_weight, 4), "reason": self.reason}


@dataclass
class Plan:
    entries: list[PlanEntry] = field(default_factory=list)

    @property
    def shared_bytes(self) -> int:
        """Bytes a bundle stores once for its tensors: the codebook formats' decode tables, if any uses them."""
        return CODEBOOK_TABLE_BYTES if any(e.spec.fmt.levels == "codebook" for e in self.entries) else 0

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.entries) + self.shared_bytes

    @property
    def float32_bytes(self) -> int:
        return sum(4 * math.prod(e.shape) for e in self.entries)

    @property
    def quantized_bits_per_weight(self) -> float:
        """Average bits per weight over the quantized tensors (scales, fitted levels and the codebook
        formats' shared decode tables included)."""
        q = [e for e in self.entries if e.spec.fmt.quantized]
        n = sum(math.prod(e.shape) for e in q)
        return 8 * (sum(e.bytes for e in q) + self.shared_bytes) / n if n else 32.0

    @property
    def bits_per_weight(self) -> float:
        """Average bits per parameter over every tensor, float32 ones included."""
        n = sum(math.prod(e.shape) for e in self.entries)
        return 8 * self.bytes / n if n else 0.0

    def summary(self) -> dict:
        return {"bytes": self.bytes, "float32_bytes": self.float32_bytes,
                "bits_per_weight": round(self.bits_per_weight, 4),
                "quantized_bits_per_weight": round(self.quantized_bits_per_weight, 4),
                "reduction_vs_float32": round(self.float32_bytes / self.bytes, 3) if self.bytes else None}

    def to_json(self) -> dict:
        return {"tensors": [e.to_json() for e in self.entries], "totals": self.summary()}

    def table(self) -> str:
        """The plan as the text table the CLI prints."""
        shared = "codebook decode tables (shared)"
        width = max([len(e.name) for e in self.entries] + [6] + ([len(shared)] if self.shared_bytes else []))
        lines = [f"{'tensor':<{width}}  {'shape':<14} {'format':<13} {'group':>6} {'bytes':>11} {'bits/w':>7}"]
        for e in self.entries:
            group = {-1: "tensor", 0: "chan"}.get(e.spec.group_size, str(e.spec.group_size)) if e.spec.fmt.quantized else "-"
            lines.append(f"{e.name:<{width}}  {'x'.join(map(str, e.shape)):<14} {e.stored_format:<13} {group:>6} "
                         f"{e.bytes:>11,} {e.bits_per_weight:>7.3f}")
        if self.shared_bytes:
            lines.append(f"{shared:<{width}}  {'':<14} {'':<13} {'':>6} {self.shared_bytes:>11,}")
        s = self.summary()
        lines.append(f"total: {s['bytes']:,} bytes ({s['reduction_vs_float32']}x smaller than float32), "
                     f"{s['quantized_bits_per_weight']:.3f} bits per quantized weight, "
                     f"{s['bits_per_weight']:.3f} bits per parameter overall")
        return "\n".join(lines)


def is_matrix(shape: tuple[int, ...], dtype: str) -> bool:
    return len(shape) >= 2 and dtype in ("float32", "float16", "bfloat16", "float64") and math.prod(shape) > 0


def resolve_plan(tensors: list[tuple[str, tuple[int, ...], str]], default: QuantSpec,
                 rules: list[Rule] = (), *, where: str = "model", default_source: str = "") -> Plan:
    """Assign a spec to every (name, shape, dtype); raise if a rule matches no tensor.
    `default_source` names where the default came from (a config file, the command line) for errors."""
    used = [False] * len(rules)
    plan = Plan()
    for name, shape, dtype in tensors:
        for i, rule in enumerate(rules):
            if rule.matches(name):
                used[i] = True
                spec, reason = rule.spec, rule.source
                if spec.fmt.quantized and not np.issubdtype(np.dtype(dtype if dtype != "bfloat16" else "float32"), np.floating):
                    raise UserError(f"{rule.source}: tensor {name!r} has dtype {dtype} and cannot be quantized; "
                                    f"narrow the pattern {rule.pattern!r}")
                break
        else:
            spec, reason = (default, "default") if is_matrix(shape, dtype) else (FLOAT32, "not a matrix")
        if spec.fmt.quantized and spec.group_size > 0:
            k = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            if k % spec.group_size:
                origin = f"{default_source}: " if reason == "default" and default_source else ""
                raise UserError(f"{origin}tensor {name!r} ({reason}): group size {spec.group_size} does not divide its row "
                                f"length {k}; choose a group size that divides {k} or add a rule for this tensor")
        plan.entries.append(PlanEntry(name, tuple(shape), dtype, spec, reason))
    for rule, hit in zip(rules, used):
        if not hit:
            what = f"pattern {rule.pattern!r} matches" if rule.names is None else "applies to"
            raise UserError(f"{rule.source}: {what} no tensor of the {where} (or earlier rules take them all); "
                            f"check the names with `python -m ulpq_build inspect`")
    return plan
