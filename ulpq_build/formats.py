"""The format registry: the single table that the quantizer, the packer, the WGSL templates, the
manifest and the JS loader all read. A new format is a new row here, not edits in five places.

Every quantized matrix W[N, K] (N output channels, K inputs) is stored row by row as

    codes   u32[N, words_per_row(K)]   `bits`-bit codes u, packed LSB first (layout below)
    scales  f32|f16[N, K / G]          one scale s per group of G consecutive inputs of a row
                                        (G = K: per output channel; one scale for the whole
                                        tensor is the [1, 1] case)
    zeros   u8[N, K / G]               only for asymmetric uniform formats
    codebook f32[C, 2**bits]           only for fitted formats (C = 1 per tensor, or N per channel)

and decodes as  w = s * level(u)  with

    uniform, symmetric:   level(u) = u - 2**(bits-1)            (zero point fixed mid-range; the
                                                                 scale is signed, as in ggml's
                                                                 q4_0, so the largest-magnitude
                                                                 value of a group lands on the
                                                                 extreme level -2**(bits-1))
    uniform, asymmetric:  level(u) = u - z                      (z from `zeros`)
    table:                level(u) = table[u]                   (a fixed value set)
    fitted:               level(u) = codebook[c][u]             (levels fitted to the data)
    codebook:             vector quantization (layout "vq", below): 8 weights decoded jointly

Vector-quantized rows (levels "codebook", layout "vq"; ulpq_build/vq/): every row of W is cut into
groups of `group_dim` = 8 consecutive inputs, each coded by `stages` (CODEBOOK_STAGES: the first
codes the group, each further one the residual left, magnified by resid_scale), one float16 scale
per row, and the inputs rotated first when `rotate` (a random Hadamard rotation stored as a u32 seed;
the runtime rotates the activations to match):

    w'[r, 8g:8g+8] = scale[r] * sum_s stage_s(code_s[r, g]) / resid_scale^s     (w' = W R_in^T)

    codes   u32[N, words_per_row(K)]: stage s's codes of a row after those of stages < s, each stage
            starting on a word; code g of a stage at bits [b*g, b*g + b) (b = 8 or 16 divides 32)
    scales  f16[N, 1]
    seeds   u32[1]  (only when rotate) the input rotation's seed
The stages' decode tables (CODEBOOK_STAGES, 256 u32 each) travel once per bundle in the manifest.

Layouts of one row of codes:
    words   `values_per_word` = 32 // bits codes per u32; code j of word i holds value
            i * values_per_word + j at bits [bits*j, bits*j + bits). int3 puts 10 codes in a
            word and leaves bits 30-31 unused (3.2 bits per value).
    stream  a continuous bit stream: value i occupies bits [bits*i, bits*i + bits) of the
            little-endian u32 array, so a value may straddle two words (its high bits spill into
            the next word). 3.0 bits per value for int3-dense.
    raw     float32 weights, one per u32 (the unquantized baseline).

Both packed layouts are "blocks": `block_values` values fill `block_words` words exactly
(words: values_per_word values in 1 word; stream: 32 values in `bits` words), and value j of a
block starts at bit bits*j of the block. The packer and the shaders use that one rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ulpq_build.errors import UserError

LAYOUTS = ("words", "stream", "raw", "vq")
LEVEL_KINDS = ("uniform", "table", "fitted", "float", "codebook")

# The codebooks a vector-quantized row's stages name: bits per code of 8 weights, how a kernel
# decodes one (its 256-entry u32 table comes from ulpq_build/vq/e8.py), and where the table sits in
# the bundle's one codebook buffer (all tables back to back, in this order).
#   e8p   QuIP#'s E8P: table[code >> 8] = 8 2-bit magnitudes m (|w| = m + 1/2) and a parity bit (16);
#         bits 1-7 of the code are the signs of coordinates 0-6, the 8th sign makes the count of
#         negatives match the parity, bit 0 picks the shift +1/4 or -1/4 on every coordinate
#   lut8  a whole codeword per entry: table[code] = 8 nibbles u, coordinate = u / 2 - 2 (QuIP#'s E81B)
CODEBOOK_STAGES = {"e8p": {"bits": 16, "decode": "e8p", "offset": 0},
                   "e81b": {"bits": 8, "decode": "lut8", "offset": 256}}
CODEBOOK_TABLE_WORDS = 512
CODEBOOK_TABLE_BYTES = 4 * CODEBOOK_TABLE_WORDS  # stored once in a bundle that uses any codebook format
GROUP_DIM = 8
SCALE_RULES = ("mse", "mean-abs", "none")


@dataclass(frozen=True)
class Format:
    """One row of the registry. Derived constants are computed once, in __post_init__."""

    name: str
    bits: int
    layout: str
    levels: str
    summary: str
    table: tuple[float, ...] = ()
    # How a group's scale is chosen: "mse" searches the clipping ratio that minimises squared
    # error; "mean-abs" is the closed-form optimum for a +-1 value set (sign quantization).
    scale_rule: str = "mse"
    # vector-quantized rows only (levels "codebook"): stages, the RMS the codebook is tuned for, the
    # residual magnification, and whether the inputs are rotated (module docstring)
    stages: tuple[str, ...] = ()
    opt_scale: float = 0.0
    resid_scale: float = 1.0
    rotate: bool = False
    values_per_word: int = field(init=False)
    block_values: int = field(init=False)
    block_words: int = field(init=False)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS or self.levels not in LEVEL_KINDS or self.scale_rule not in SCALE_RULES:
            raise ValueError(f"format {self.name}: unknown layout, level kind or scale rule")
        if self.levels == "float":
            if self.layout != "raw" or self.bits != 32:
                raise ValueError(f"format {self.name}: float weights are stored raw, 32 bits")
            vpw, block_values, block_words = 1, 1, 1
        elif self.levels == "codebook":
            if self.layout != "vq" or not self.stages or any(s not in CODEBOOK_STAGES for s in self.stages):
                raise ValueError(f"format {self.name}: codebook rows use layout vq and stages of CODEBOOK_STAGES")
            if self.bits * GROUP_DIM != sum(CODEBOOK_STAGES[s]["bits"] for s in self.stages) or self.opt_scale <= 0:
                raise ValueError(f"format {self.name}: bits must be the stages' bits per weight, opt_scale positive")
            vpw, block_values, block_words = 0, GROUP_DIM, 0
        elif self.layout == "vq" or self.stages:
            raise ValueError(f"format {self.name}: only codebook rows use layout vq and stages")
        else:
            if not 1 <= self.bits <= 8:
                raise ValueError(f"format {self.name}: bits must be 1..8")
            if self.layout == "words":
                vpw, block_values, block_words = 32 // self.bits, 32 // self.bits, 1
            elif self.layout == "stream":
                vpw, block_values, block_words = 0, 32, self.bits
            else:
                raise ValueError(f"format {self.name}: quantized formats are packed as words or stream")
        if self.levels == "table":
            if len(self.table) != 2**self.bits or list(self.table) != sorted(self.table):
                raise ValueError(f"format {self.name}: a table holds 2**bits ascending levels")
            if max(abs(v) for v in self.table) != 1.0:
                raise ValueError(f"format {self.name}: table levels are normalised to max |level| = 1")
        elif self.table:
            raise ValueError(f"format {self.name}: only table formats carry a table")
        object.__setattr__(self, "values_per_word", vpw)
        object.__setattr__(self, "block_values", block_values)
        object.__setattr__(self, "block_words", block_words)

    @property
    def quantized(self) -> bool:
        return self.levels != "float"

    @property
    def n_levels(self) -> int:
        return 2**self.bits

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1 if self.quantized else 0xFFFFFFFF

    @property
    def symmetric_zero(self) -> int:
        """The fixed zero point of symmetric uniform codes: level(u) = u - symmetric_zero."""
        return 1 << (self.bits - 1)

    @property
    def supports_asymmetric(self) -> bool:
        return self.levels == "uniform"

    @property
    def affine_table(self) -> tuple[float, float] | None:
        """(a, c) when the table is a*u + c (int1: 2u - 1; int2-ternary: 2u/3 - 1), so a kernel
        can take a dot product with the raw codes and correct once; None otherwise."""
        if self.levels != "table":
            return None
        a, c = self.table[1] - self.table[0], self.table[0]
        if all(abs(c + a * u - level) < 1e-12 for u, level in enumerate(self.table)):
            return a, c
        return None

    @property
    def code_bits_per_value(self) -> float:
        """Storage bits per value for the codes alone (before scales), padding within words included."""
        return self.bits if self.layout in ("stream", "raw", "vq") else 32 / self.values_per_word

    def stage_words(self, k: int) -> list[int]:
        """Words each stage's codes take in one row of k values (vq layout)."""
        return [math.ceil(k // GROUP_DIM * CODEBOOK_STAGES[s]["bits"] / 32) for s in self.stages]

    def words_per_row(self, k: int) -> int:
        """u32 words one packed row of k values occupies."""
        if self.layout == "vq":
            return sum(self.stage_words(k))
        if self.layout == "raw":
            return k
        if self.layout == "stream":
            return math.ceil(k * self.bits / 32)
        return math.ceil(k / self.values_per_word)

    def to_manifest(self) -> dict:
        """The facts the JS loader and CPU path need, written into every bundle's manifest."""
        return {
            "name": self.name,
            "bits": self.bits,
            "layout": self.layout,
            "levels": self.levels,
            "values_per_word": self.values_per_word,
            "block_values": self.block_values,
            "block_words": self.block_words,
            "table": list(self.table),
            "symmetric_zero": self.symmetric_zero if self.levels == "uniform" else 0,
            "summary": self.summary,
            **({"stages": [{"name": s, **CODEBOOK_STAGES[s]} for s in self.stages], "group_dim": GROUP_DIM,
                "resid_scale": self.resid_scale, "rotate": self.rotate} if self.levels == "codebook" else {}),
        }


def _uniform(name: str, bits: int, layout: str = "words", summary: str = "") -> Format:
    return Format(name, bits, layout, "uniform", summary or f"{bits}-bit uniform levels, {32 // bits} per u32")


def _codebook(name: str, stages: tuple[str, ...], opt_scale: float, resid_scale: float = 1.0, *, summary: str) -> Format:
    bits = sum(CODEBOOK_STAGES[s]["bits"] for s in stages) // GROUP_DIM
    return Format(name, bits, "vq", "codebook", summary, scale_rule="none", stages=stages, opt_scale=opt_scale,
                  resid_scale=resid_scale, rotate=True)


_ROWS = [
    Format("float32", 32, "raw", "float", "float32 weights, unquantized (the baseline)", scale_rule="none"),
    _uniform("int8", 8),
    _uniform("int4", 4),
    _uniform("int3", 3, summary="3-bit uniform levels, 10 per u32 (bits 30-31 unused)"),
    _uniform("int3-dense", 3, "stream", "3-bit uniform levels as a continuous bit stream (values straddle words)"),
    _uniform("int2", 2),
    Format("int2-4values", 2, "words", "table", "2-bit levels {-1, 0, 0.5, 1} x scale", table=(-1.0, 0.0, 0.5, 1.0)),
    Format("int2-ternary", 2, "words", "table", "2-bit levels {-1, -1/3, 1/3, 1} x scale",
           table=(-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0)),
    Format("int2-optimal", 2, "words", "fitted", "4 levels fitted to the tensor's distribution (Lloyd-Max)"),
    Format("int3-optimal", 3, "words", "fitted", "8 levels fitted to the tensor's distribution, 10 per u32"),
    Format("int4-optimal", 4, "words", "fitted", "16 levels fitted to the tensor's distribution (Lloyd-Max)"),
    Format("int1", 1, "words", "table", "sign: levels {-1, +1} x mean |w| of the group, 32 per u32",
           table=(-1.0, 1.0), scale_rule="mean-abs"),
    # QuIP#-style lattice codebooks on Hadamard-rotated inputs (ulpq_build/vq/; constants from
    # docs/two_bit_study.md: QuIP#'s, rvq4's opt_scale tuned here). A new RVQ depth is a new row.
    _codebook("e8p", ("e8p",), 1.03, summary="E8P lattice codebook: 8 weights in 16 bits (2 bpw), rotated inputs"),
    _codebook("e8p-rvq3", ("e8p", "e81b"), 0.98, 2.04,
              summary="E8P + E81B residual: 8 weights in 24 bits (3 bpw), rotated inputs"),
    _codebook("e8p-rvq4", ("e8p", "e8p"), 0.9, 3.45, summary="E8P + E8P residual: 8 weights in 32 bits (4 bpw), rotated inputs"),
    _codebook("e81b", ("e81b",), 0.6, summary="E81B codebook: 8 weights in 8 bits (1 bpw), rotated inputs"),
]

FORMATS: dict[str, Format] = {f.name: f for f in _ROWS}
QUANTIZED_FORMATS = [f.name for f in _ROWS if f.quantized]
CODEBOOK_FORMATS = [f.name for f in _ROWS if f.levels == "codebook"]  # vector-quantized: ulpq_build/vq/
PACKED_FORMATS = [n for n in QUANTIZED_FORMATS if n not in CODEBOOK_FORMATS]  # scalar codes, packing.pack


def get_format(name: str, *, source: str = "--format") -> Format:
    """Look a format up by name, with a one-line error that lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"{source}: unknown format {name!r}; choose one of: {', '.join(FORMATS)}") from None


def format_for_bits(bits: int, *, optimal: bool = False, source: str = "config") -> Format:
    """The uniform (or fitted, with optimal=True) format of a bit width, as the SDK's options name it."""
    if bits == 32:
        return FORMATS["float32"]
    name = {1: "int1", 2: "int2", 3: "int3", 4: "int4", 8: "int8"}.get(bits)
    if name is None:
        raise UserError(f"{source}: unsupported bit width {bits}; use 1, 2, 3, 4, 8 or 32")
    if optimal and f"{name}-optimal" in FORMATS:
        name = f"{name}-optimal"
    return FORMATS[name]
