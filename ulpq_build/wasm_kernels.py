"""The CPU path's WebAssembly kernels: WAT rendered from templates/wasm/kernels.wat.jinja for the
storages a bundle uses, assembled to .wasm at bundle time.

Why generate and assemble at bundle time (and not commit prebuilt .wasm): the kernels are
specialised per format row of the registry (bits, layout, level kind, values per word become
constants and unrolled lane shifts), exactly like the WGSL. A new format row then needs no
hand-written wasm and no rebuild step a contributor could forget; a committed binary would have to
cover every format x scale dtype x zero-point combination up front and be re-generated and
checked by a test on every registry change. The cost is one runtime dependency, the `wasmtime`
wheel (its `wat2wasm` is a pure text-to-binary assembler; binary wheels exist for manylinux
x86_64 and aarch64, macOS x86_64 and arm64, and Windows), which the tests also use to run the
kernels against numpy without a browser. Assembly is deterministic, so bundles stay
byte-identical across builds.

Codebook rows (levels "codebook": e8p, e8p-rvq3, ...) get kernels from the same template, keyed by
their stages' decode kinds (formats.CODEBOOK_STAGES: e8p, lut8): a new row made of known stages needs
no wasm. Their tables are not copied into the template: `codebook_expand` turns the bundle's
codebook buffer into the f32 lanes the kernels load (CODEBOOK_* below), and the input rotation of
such a matrix runs as `rotation_signs` (once per seed) and `hadamard_rows` (before each product).

Four binaries are written per bundle: importing an ordinary memory (one thread) or a shared
memory (worker threads over a SharedArrayBuffer when the page is cross-origin isolated; browsers
only create shared memories then, and a module must declare which it imports), each with plain
SIMD multiply-adds (mul + add, everywhere SIMD is) or relaxed-SIMD f32x4.relaxed_madd (a fused
multiply-add on CPUs with FMA: fewer instructions in the GEMM's inner loop), which the runtime
loads only where the engine validates relaxed SIMD.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ulpq_build.errors import UserError
from ulpq_build.formats import (
    CODEBOOK_STAGES,
    CODEBOOK_TABLE_WORDS,
    FORMATS,
    GROUP_DIM,
    Format,
)
from ulpq_build.resources import templates_dir
from ulpq_build.vq.incoherence import paley_hadamard_12

# The GEMM's register tile: ROWS_PER_TILE rows of x times PANEL_COLUMNS output columns (two f32x4
# vectors): 12 accumulators + 2 panel vectors + 1 broadcast x value, within the 15 SIMD registers
# the engines allocate on x86-64 (one is their scratch) and arm64's 32. XNNPACK's wasm SIMD GEMMs
# use the same 6 x 8 tile. Measured against the former 2 x 4 dot-product tile on this machine
# (MiniLM's GEMMs, 144 rows): Firefox 153 relaxed SIMD 22 -> 40-43 GFLOP/s, Chromium 156 35 -> 40-45.
ROWS_PER_TILE = 6
PANEL_COLUMNS = 8
# A GEMM's scratch per input (k rounded up to 32): PANEL_COLUMNS decoded rows and the panel, f32 each
SCRATCH_BYTES_PER_K = 2 * PANEL_COLUMNS * 4
# Upper bound of the shared memory (64 KiB pages): 4 GiB, wasm32's address space. Engines reserve
# it virtually, not physically.
MAX_PAGES = 65536
# Codebook formats (levels "codebook"): the kernels decode through tables that `codebook_expand`
# writes once per memory from the bundle's codebook buffer (formats.CODEBOOK_STAGES): entry i of a
# stage's table as eight f32 lanes at byte 32 * (stage offset + i) (e8p: the magnitudes |a| with
# the abs vector's parity in lane 7's sign bit; lut8: the codeword), then E8P's sign masks for
# code bits 1-7 (128 entries of eight lanes; lane 7 the parity of those bits) and the two shift
# vectors (+1/4, -1/4). A group of 8 then decodes by two table loads per stage instead of bit work.
# The one-row product decodes E8P from two more tables with the signs already applied, two loads per code
# instead of four loads, two xors and their address arithmetic (docs/two_bit_study.md, "Speed on the CPU
# path", measured it): CODEBOOK_E8P_LO[(code >> 8) * 16 + (code bits 1-4)] = coordinates 0-3 signed, and
# CODEBOOK_E8P_HI[(code >> 8) * 16 + (code bits 5-7) * 2 + the parity of bits 1-4] = coordinates 4-7 signed
# (coordinate 7 by all seven bits' parity and the abs vector's), 4096 entries of four f32 lanes each (64 KiB
# per table, built by codebook_expand from the tables above).
CODEBOOK_SIGNS = 32 * CODEBOOK_TABLE_WORDS
CODEBOOK_SHIFTS = CODEBOOK_SIGNS + 128 * 32
CODEBOOK_E8P_LO = CODEBOOK_SHIFTS + 32
CODEBOOK_E8P_HI = CODEBOOK_E8P_LO + 4096 * 16
CODEBOOK_BYTES = CODEBOOK_E8P_HI + 4096 * 16
# (shared memory, relaxed SIMD) of each build
FILES = {"single": ("cpu-kernels.wasm", False, False), "shared": ("cpu-kernels-shared.wasm", True, False),
         "single_relaxed": ("cpu-kernels-relaxed.wasm", False, True),
         "shared_relaxed": ("cpu-kernels-shared-relaxed.wasm", True, True)}


@dataclass(frozen=True, order=True)
class WasmVariant:
    """One packed storage the kernels decode: a registry format, its scale dtype, zero points or not."""

    format: str
    scale_dtype: str = "float32"
    zeros: bool = False

    @property
    def fmt(self) -> Format:
        return FORMATS[self.format]

    @property
    def codebook(self) -> bool:
        return self.fmt.levels == "codebook"

    @property
    def stages(self) -> list[dict]:
        """A codebook row's stages as the kernels decode them: the registry's bits, decode kind and
        table offset, and the float32 magnification its codeword is divided by (numpy's
        CodebookFormat.decode: 1, then times resid_scale per later stage, in float32)."""
        out, magnify = [], np.float32(1.0)
        for name in self.fmt.stages:
            if CODEBOOK_STAGES[name]["decode"] not in ("e8p", "lut8"):  # a new decode kind needs its kernel code
                raise ValueError(f"format {self.format}: the wasm kernels have no decode '{CODEBOOK_STAGES[name]['decode']}'")
            out.append({**CODEBOOK_STAGES[name], "name": name, "magnify": float(magnify)})
            magnify = np.float32(magnify * np.float32(self.fmt.resid_scale))
        return out

    @property
    def key(self) -> str:
        """The export suffix (gemm_<key>, embed_<key>); web_runtime/backend_wasm.js derives the same."""
        if not self.fmt.quantized:
            return "float32"
        dtype = {"float32": "f32", "float16": "f16"}[self.scale_dtype]
        return f"{re.sub(r'[^a-z0-9]', '_', self.format)}_{dtype}_{'z' if self.zeros else 's'}"

    @property
    def simd_decode(self) -> bool:
        """Whole words decode four lanes at a time when codes are uniform levels and a word holds a
        multiple of 4 of them (int8/4/2/1 layouts); tables, fitted levels, int3's 10 per word and the
        bit stream decode one value at a time (the GEMM amortises decoding over all rows of x)."""
        f = self.fmt
        return f.layout == "words" and f.levels == "uniform" and f.values_per_word % 4 == 0

    @property
    def panel_decode(self) -> bool:
        """The GEMM decodes four rows at once straight into its panel (lanes = rows, so any number of
        values per word works) for uniform levels in whole words; the others decode a row at a time
        and transpose it into the panel."""
        return self.fmt.layout == "words" and self.fmt.levels == "uniform"

    @property
    def lane_split(self) -> str:
        """How a whole word's codes reach four f32 lanes in the SIMD decode (the kernels' decode
        runs once per weight per GEMM, and at a few rows of x it is a good part of the GEMM's time):
        'mask' where four codes in place fit the signed conversion (bits * 4 <= 31: and, convert,
        sub, mul; no integer multiply), 'bytes' for 8-bit codes (the word's bytes widened),
        'multiply' otherwise (a per-lane shift by an integer multiply)."""
        bits = self.fmt.bits
        if 4 * bits <= 31:
            return "mask"
        return "bytes" if bits == 8 else "multiply"


def variant_of(spec) -> WasmVariant:
    """The kernel variant a QuantSpec's tensors need."""
    if not spec.fmt.quantized:
        return WasmVariant("float32")
    if spec.fmt.levels == "codebook":  # one float16 scale per row, whatever the spec says
        return WasmVariant(spec.format, "float16")
    return WasmVariant(spec.format, spec.scale_dtype, bool(spec.asymmetric))


def all_variants() -> list[WasmVariant]:
    """Every storage the registry allows (tests build all of them)."""
    out = []
    for f in FORMATS.values():
        if f.levels == "codebook":  # float16 row scales only
            out.append(WasmVariant(f.name, "float16"))
            continue
        if not f.quantized:
            out.append(WasmVariant(f.name))
            continue
        for dtype in ("float32", "float16"):
            for zeros in ((False, True) if f.supports_asymmetric else (False,)):
                out.append(WasmVariant(f.name, dtype, zeros))
    return out


def render_wat(variants, *, shared: bool, relaxed: bool = False, rows_per_tile: int = ROWS_PER_TILE) -> str:
    """The kernel module's text for these variants (float32 is always included: biases, tables)."""
    chosen = sorted(set(variants) | {WasmVariant("float32")})
    env = Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    # whole register tiles first, then pairs and single rows (8 rows: 6 + 2, not 6 + 1 + 1)
    tiles = tuple(sorted({rows_per_tile, min(rows_per_tile, 2), 1}, reverse=True))
    paley = [[int(v) for v in row] for row in paley_hadamard_12()]
    return env.get_template("wasm/kernels.wat.jinja").render(
        variants=chosen, shared=shared, relaxed=relaxed, max_pages=MAX_PAGES, rows_per_tile=rows_per_tile,
        tiles=tiles, panel_columns=PANEL_COLUMNS, panel_vectors=PANEL_COLUMNS // 4,
        codebook_stages=CODEBOOK_STAGES, group_dim=GROUP_DIM, codebook_signs=CODEBOOK_SIGNS,
        codebook_shifts=CODEBOOK_SHIFTS, codebook_e8p_lo=CODEBOOK_E8P_LO,
        codebook_e8p_hi=CODEBOOK_E8P_HI, paley=paley)


def assemble(text: str) -> bytes:
    """WAT to a wasm binary (wasmtime's assembler; no engine is started)."""
    try:
        import wasmtime  # a declared dependency; imported here so modules that never assemble don't load it
    except ImportError:
        raise UserError("the CPU path's kernels need the `wasmtime` package to assemble; "
                        "run `python3 -m pip install wasmtime` (or reinstall ulpq_build)") from None
    return bytes(wasmtime.wat2wasm(text))


def build(variants, *, shared: bool, relaxed: bool = False, rows_per_tile: int = ROWS_PER_TILE) -> bytes:
    return assemble(render_wat(variants, shared=shared, relaxed=relaxed, rows_per_tile=rows_per_tile))


def write_cpu_kernels(folder: Path, specs) -> dict:
    """Write the kernel binaries for the specs a bundle uses; the manifest's `wasm` section."""
    variants = sorted({variant_of(s) for s in specs} | {WasmVariant("float32")})
    files = {}
    for kind, (name, shared, relaxed) in FILES.items():
        data = build(variants, shared=shared, relaxed=relaxed)
        (folder / name).write_bytes(data)
        files[kind] = {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # panel_columns: the runtime splits a GEMM's output columns between threads in multiples of it
    # and gives each thread scratch_bytes_per_k * (the largest k, rounded up to 32) of scratch
    # codebook_bytes: what codebook_expand writes (one region per memory, when a codebook format is used)
    return {"files": files, "variants": [v.key for v in variants], "rows_per_tile": ROWS_PER_TILE,
            "panel_columns": PANEL_COLUMNS, "scratch_bytes_per_k": SCRATCH_BYTES_PER_K, "codebook_bytes": CODEBOOK_BYTES}
