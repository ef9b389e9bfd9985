"""The kernel library: every WGSL kernel is a row of KERNELS (template, bindings, uniform params,
dispatch rule, compile-time options, per-profile tiles). A variant is a kernel with one value per
option, a weight storage (for kernels that read packed weights) and a browser profile; its key
names all of them, heads the rendered shader and indexes the manifest.

The uniform `Params` struct of each kernel is rendered from `params` (name, type) and the JS
runtime fills it from the same list in the manifest; the workgroup grid comes from the kernel's
`dispatch` rule, which both this module (`workgroups`) and the runtime (`dispatch.js`)
implement from the variant's tiles. Adding a kernel is adding a row and a template.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache

import jinja2

from ulpq_build.formats import CODEBOOK_STAGES, Format, get_format
from ulpq_build.profiles import DEFAULT_LIMITS, FEATURES, PROFILES, Profile, get_profile
from ulpq_build.resources import templates_dir

MAX_WORKGROUPS_PER_DIM = 65535
HADAMARD_MAX_N = 4096  # the longest row the hadamard kernel rotates: 16 KiB of workgroup memory, the default limit


@dataclass(frozen=True)
class WeightStorage:
    """How a kernel's packed weight operand is stored: what a QuantSpec decides for the shader."""

    format: str
    scale_dtype: str = "float32"
    asymmetric: bool = False

    @classmethod
    def of(cls, spec) -> "WeightStorage":
        if not spec.fmt.quantized:  # raw float weights: scale options do not apply
            return cls(spec.format)
        if spec.fmt.levels == "codebook":  # float16 row scales whatever the spec says (quantspec.part_layout)
            return cls(spec.format, "float16", False)
        return cls(spec.format, spec.scale_dtype, spec.asymmetric)

    @property
    def fmt(self) -> Format:
        return get_format(self.format)

    @property
    def key(self) -> str:
        if not self.fmt.quantized:
            return self.format
        return f"{self.format}.{'asym' if self.asymmetric else 'sym'}.{'f16' if self.scale_dtype == 'float16' else 'f32'}"

    def parts(self) -> list[str]:
        """The stored parts a kernel binds for this weight."""
        if not self.fmt.quantized:
            return ["codes"]
        # codebook formats bind the bundle's one codebook buffer (every stage's table) as `codebook`
        return ["codes", "scales"] + (["zeros"] if self.asymmetric else []) + (["codebook"] if self.fmt.levels in ("fitted", "codebook") else [])


@dataclass(frozen=True)
class Kernel:
    name: str
    template: str
    summary: str
    bindings: tuple[str, ...]  # storage (and the params uniform) in slot order; weight parts appear as "w.codes" etc.
    params: tuple[tuple[str, str], ...]  # uniform fields: (name, "u32" | "f32")
    dispatch: str  # a rule of `workgroups`
    options: dict[str, tuple] = field(default_factory=dict)  # compile-time options and their allowed values
    tiles: dict[str, dict] = field(default_factory=dict)  # per profile name; "*" for all
    weighted: bool = False  # reads a packed weight (its WeightStorage is part of the variant)

    def __post_init__(self) -> None:
        from ulpq_build.profiles import PROFILES

        reserved = {"patch", "filter", "target", "type", "set", "shared", "mod", "module", "layout", "resource"}
        clash = [name for name, _ in self.params if name in reserved]
        if clash:  # WGSL reserves these words: they cannot name a Params member
            raise ValueError(f"{self.name}: param {clash[0]!r} is a WGSL reserved word")

        for name in PROFILES:
            for size in self.options.get("size", (None,)):
                self.check_tiles(name, self.tiles_for(name, {"size": size}))

    def check_tiles(self, profile: str, t: dict) -> None:
        """Tiles must fit the template's assumptions for the profile's workgroup size."""
        wg = get_profile(profile).workgroup_size
        if self.dispatch == "gemm" and t.get("direct"):  # reg_m x reg_n (vec4s of columns) per thread, no staging
            if t["reg_n"] % 4 or t["tile_m"] * t["tile_n"] != t["reg_m"] * t["reg_n"] * wg \
                    or t["tile_m"] % t["reg_m"] or t["tile_n"] % t["reg_n"]:
                raise ValueError(f"{self.name}: tiles {t} do not cover {wg} threads of {profile}")
        elif self.dispatch == "gemm":  # reg_m x 4 outputs per thread cover the tile exactly
            if t["reg_n"] != 4 or t["reg_m"] not in (4, 8) or t["tile_m"] * t["tile_n"] != t["reg_m"] * 4 * wg \
                    or t["tile_m"] % t["reg_m"] or (t["tile_m"] // 4 * t["tile_k"]) % 1:
                raise ValueError(f"{self.name}: tiles {t} do not cover {wg} threads of {profile}")
        if self.dispatch == "gemv" and (wg % t["threads_per_row"] or t["threads_per_row"] & (t["threads_per_row"] - 1)):
            raise ValueError(f"{self.name}: threads_per_row {t['threads_per_row']} must be a power of two dividing {wg}")

    def tiles_for(self, profile: str, opts: dict | None = None) -> dict:
        """Tiles: the "*" row, then the profile's, then "*:size" and "profile:size" when the kernel
        has a size option."""
        size = (opts or {}).get("size")
        return {**self.tiles.get("*", {}), **self.tiles.get(profile, {}), **self.tiles.get(f"*:{size}", {}),
                **self.tiles.get(f"{profile}:{size}", {})}

    def option_defaults(self) -> dict:
        return {k: v[0] for k, v in self.options.items()}


def _reg(*kernels: Kernel) -> dict[str, Kernel]:
    return {k.name: k for k in kernels}


# The activations a kernel can apply, each a row of the activation table in templates/_epilogue.wgsl.jinja
# (and of reference.ACTIVATIONS): the matrix products' epilogue takes the first group, the gate
# product (gated) the second.
EPILOGUE_ACTIVATIONS = ("none", "gelu", "gelu_tanh")
GATE_ACTIVATIONS = ("silu", "gelu", "gelu_tanh")
# RUNTIME: an epilogue whose activation and residual each dispatch picks by a uniform (act: the index
# into EPILOGUE_ACTIVATIONS; add_residual: 0 or 1), so one program serves a layer's Q|K|V, output and
# FFN products. Why: Dawn compiles a device's pipelines one after another, a GEMM taking 50-100 ms
# on an H200's driver without its shader cache, and an encoder bundle compiled 3 epilogues x (2 GEMM
# tiles + GEMV + splitk) per format: 18 pipelines for one format, 32 for a mix of three (MiniLM cold:
# 0.55 s int4, 1.4 s mixed; docs/benchmarks.md). The GEMM applies it in a loop after its raw stores
# (templates/gemm.wgsl.jinja says why), which cost its shapes 0-7% there. Bias stays in the key (an
# encoder's products all have one).
RUNTIME = "runtime"
EPILOGUE = {"activation": (*EPILOGUE_ACTIVATIONS, RUNTIME), "bias": (False, True), "residual": (False, True, RUNTIME)}
EPILOGUE_PARAMS = {"activation": (("act", "u32"),), "residual": (("add_residual", "u32"),)}
RUNTIME_EPILOGUE = {"activation": RUNTIME, "residual": RUNTIME}
# The GEMV's prologues (a decoder step's operator before a product, fused into the product to save
# its dispatch): `norm`, RMSNorm of x (gamma bound as `norm`, eps a param); `gate`, x formed as
# act(gate) * up from a gated FFN's two products (up bound as `up`; the row stride and the two
# column offsets are params). Each adds these params to the kernel's, and is left out of the
# variant's key at its default, so the keys (and programs) of every other variant stay as they were.
PROLOGUE = {"norm": (False, True), "gate": ("none", *GATE_ACTIVATIONS)}
PROLOGUE_PARAMS = {"norm": (("eps", "f32"),), "gate": (("in_stride", "u32"), ("gate_off", "u32"), ("up_off", "u32"))}
PROLOGUE_BINDINGS = {"norm": "norm", "up": "gate"}  # binding -> the option that needs it


def prologues_on(options: dict) -> list[str]:
    """The prologues `options` (a variant's merged options) turn on: those not at their default."""
    return [name for name, values in PROLOGUE.items() if options.get(name, values[0]) != values[0]]

# cache_attention's uniforms: query row r = b * seq + t sits at slot start + t of sequence b;
# capacity: slots per (sequence, kv head) in the cache; chunk, chunks: the split of the slots.
DECODER_ATTENTION_PARAMS = (("rows", "u32"), ("seq", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"),
                            ("scale", "f32"), ("start", "u32"), ("capacity", "u32"), ("chunk", "u32"), ("chunks", "u32"),
                            ("q_stride", "u32"), ("q_off", "u32"), ("cache_off", "u32"))
CACHE_ATTENTION_KEY_THREADS = 8  # threads per key dot product in cache_attention (divides every profile's workgroup)
# rotary_step_attention / step_attention: one query per sequence (its new token at slot start) over
# at most STEP_ATTENTION_MAX_SLOTS slots, whose scores live in workgroup memory; head_dim at most
# STEP_ATTENTION_MAX_DIM (Llama/Qwen/GPT-2 use 64-128)
STEP_ATTENTION_PARAMS = (("rows", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"), ("scale", "f32"),
                         ("start", "u32"), ("capacity", "u32"), ("cache_off", "u32"))
STEP_ATTENTION_MAX_SLOTS = 512
STEP_ATTENTION_MAX_DIM = 256

# CPU adapters (profiles with cpu_adapter: SwiftShader, lavapipe) run a workgroup as a loop over SIMD
# lanes, and a workgroup barrier there is a switch between coroutines, one per lane group, so the
# staged GEMM's two barriers per K step and the GEMV's tree reduction cost more than the loads they
# save (no GPU cache hierarchy to save from: the CPU's caches serve the re-reads). `direct` GEMM tiles:
# each thread computes its reg_m x reg_n block straight from x and the packed words (no workgroup
# memory, no barrier); tile_k only rounds split-K's k_split. Each load from a buffer there is a loop
# over the SIMD lanes (lavapipe: about 100 FMAs' time), so the blocks are 16x16 (32 loads per 256
# products of a float32 step; 8x4 was 12 per 32): 2-3.7x faster GEMMs on both engines, at the price of
# longer compiles (SwiftShader: 1.3-2 s per GEMM variant; gemm.wgsl.jinja keeps the unrolled text to
# at most 8 codes of a word). The GEMV: one thread per `rows` outputs. Measured per kernel through
# wgpu-py on SwiftShader and lavapipe (scripts/profile_cpu_adapter.py; docs/benchmarks.md, "CPU adapters").
CPU_PROFILES = tuple(name for name, p in PROFILES.items() if p.cpu_adapter)
CPU_GEMM_TILES = {"tile_m": 64, "tile_n": 256, "tile_k": 32, "reg_m": 16, "reg_n": 16, "direct": 1}
CPU_GEMV_TILES = {"threads_per_row": 1, "rows": 2}

KERNELS: dict[str, Kernel] = _reg(
    Kernel(
        "gemv", "gemv.wgsl.jinja",
        "y[m, n] = act(x[m, :] . W[n, :] + b[n]) (+ r[m, n]) for few rows m: groups of threads_per_row threads own "
        "`rows` outputs each and stride over K, each x load feeding all their rows; vec4 loads 4 code words per row "
        "per step (shapes with words_per_row % 4 == 0 and no partial word)",
        ("params", "x", "w.codes", "w.scales", "w.zeros", "w.codebook", "bias", "residual", "y", "norm", "up"),
        (("m", "u32"), ("n", "u32"), ("k", "u32"), ("words_per_row", "u32"), ("groups_per_row", "u32"),
         ("group_size", "u32"), ("codebook_stride", "u32")),
        "gemv", {**EPILOGUE, "vec4": (False, True, "pairs"), "deep": (False, True, "wide", "lut"), **PROLOGUE},
        # float32's tiles, from H200 sweeps (docs/benchmarks.md): 2 rows per thread group (8 left BERT's
        # 768 outputs 24 workgroups and ran 1.4-2.6x slower at one input row, level at 16384 outputs);
        # 32 threads per row at 128 threads per workgroup, 64 at 256 and 512. Packed formats derive
        # theirs (gemv_packed_tiles, GEMV_DEEP_TILES). CPU adapters: one thread per `rows` outputs walks
        # the whole of K, so no partial sums meet in workgroup memory and no barrier is passed.
        {"*": {"rows": 2, "threads_per_row": 64}, "firefox": {"threads_per_row": 32},
         **{p: CPU_GEMV_TILES for p in CPU_PROFILES}},
        weighted=True,
    ),
    Kernel(
        "gemm", "gemm.wgsl.jinja",
        "y = act(x . W^T + b) (+ r): tiled; a workgroup computes a tile_m x tile_n block, staging x and the "
        "dequantized W through workgroup memory tile_k inputs at a time; each thread holds a reg_m x reg_n block. "
        "size=large tiles suit many rows (thousands), size=small fill the GPU at about a hundred. Workgroup z "
        "covers inputs [z * k_split, (z + 1) * k_split): k_split = k is one pass; with split (split-K) each z writes "
        "its raw partial sums to y[z, m, n] and a splitk kernel adds them and applies the epilogue",
        ("params", "x", "w.codes", "w.scales", "w.zeros", "w.codebook", "bias", "residual", "y"),
        (("m", "u32"), ("n", "u32"), ("k", "u32"), ("words_per_row", "u32"), ("groups_per_row", "u32"),
         ("group_size", "u32"), ("codebook_stride", "u32"), ("k_split", "u32")),
        "gemm", {**EPILOGUE, "size": ("small", "large"), "split": (False, True)},
        # Chosen on an H200 (scripts/bench_kernels.py --sweep, docs/benchmarks.md): at 4096^3 the 8x4
        # register tiles win, at 128 rows the smaller tiles fill more of the GPU. (32x32 tiles in
        # 64-thread workgroups were tried for 128 rows: same thread count, slower; split-K is what
        # adds parallelism there.)
        {"firefox:large": {"tile_m": 64, "tile_n": 64, "tile_k": 16, "reg_m": 8, "reg_n": 4},
         "firefox:small": {"tile_m": 32, "tile_n": 64, "tile_k": 32, "reg_m": 4, "reg_n": 4},
         "chrome:large": {"tile_m": 128, "tile_n": 64, "tile_k": 16, "reg_m": 8, "reg_n": 4},
         "chrome:small": {"tile_m": 64, "tile_n": 64, "tile_k": 16, "reg_m": 4, "reg_n": 4},
         "edge:large": {"tile_m": 128, "tile_n": 64, "tile_k": 16, "reg_m": 8, "reg_n": 4},
         "edge:small": {"tile_m": 64, "tile_n": 64, "tile_k": 16, "reg_m": 4, "reg_n": 4},
         "safari:small": {"tile_m": 128, "tile_n": 64, "tile_k": 16, "reg_m": 4, "reg_n": 4},
         "safari:large": {"tile_m": 128, "tile_n": 128, "tile_k": 16, "reg_m": 8, "reg_n": 4},
         **{p: CPU_GEMM_TILES for p in CPU_PROFILES}},
        weighted=True,
    ),
    Kernel(
        "splitk", "splitk.wgsl.jinja",
        "y[m, n] = act(sum_s partial[s, m, n] + b[n]) (+ r[m, n]): adds a split-K GEMM's partial sums (splits of them, "
        "count = m * n) and applies the epilogue the GEMM left out",
        ("params", "partial", "bias", "residual", "y"), (("m", "u32"), ("n", "u32"), ("splits", "u32"), ("count", "u32")),
        "elementwise", dict(EPILOGUE),
    ),
    # Transformer operators. Activations are row-major float32: token t of sequence b is row b * seq + t.
    Kernel(
        "embed", "embed.wgsl.jinja",
        "y[t, :] (+)= W[ids[t], :]: gathers rows of a packed table (word, position or token-type embeddings; "
        "with float32 storage also any activation, e.g. the [CLS] rows); accumulate adds into y; "
        "count = tokens * k (the elementwise dispatch); an id >= n gives a zero row",
        ("params", "ids", "w.codes", "w.scales", "w.zeros", "w.codebook", "y"),
        (("tokens", "u32"), ("n", "u32"), ("k", "u32"), ("words_per_row", "u32"), ("groups_per_row", "u32"),
         ("group_size", "u32"), ("codebook_stride", "u32"), ("count", "u32")),
        "elementwise", {"accumulate": (False, True)}, weighted=True,
    ),
    Kernel(
        "hadamard", "hadamard.wgsl.jinja",
        "y[r, :] = R x[r, :] with R = (B kron H_p / sqrt(p)) D, n = b * p (b = 1 or 12): the input rotation of a "
        "codebook-format matrix (ulpq_build/vq/incoherence.py), D's signs hashed from `seed`, B the Paley Hadamard "
        "matrix of order 12 / sqrt(12), H_p by the fast Walsh-Hadamard butterflies in workgroup memory "
        "(n <= HADAMARD_MAX_N); one workgroup per row",
        ("params", "x", "y"), (("rows", "u32"), ("n", "u32"), ("p", "u32"), ("seed", "u32")), "rows",
    ),
    Kernel(
        "add", "add.wgsl.jinja", "y[i] = a[i] + b[i % b_count] (b_count = count: elementwise; smaller: broadcast rows)",
        ("params", "a", "b", "y"), (("count", "u32"), ("b_count", "u32")), "elementwise",
    ),
    Kernel(
        "gelu", "gelu.wgsl.jinja", "y[i] = gelu(x[i]) (erf form)", ("params", "x", "y"), (("count", "u32"),), "elementwise",
    ),
    Kernel(
        "layernorm", "layernorm.wgsl.jinja",
        "y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta; one workgroup per row",
        ("params", "x", "gamma", "beta", "y"), (("rows", "u32"), ("cols", "u32"), ("eps", "f32")), "rows",
    ),
    Kernel(
        "softmax", "softmax.wgsl.jinja", "y[r, :] = softmax(x[r, :]); one workgroup per row",
        ("params", "x", "y"), (("rows", "u32"), ("cols", "u32")), "rows",
    ),
    Kernel(
        "attention", "attention.wgsl.jinja",
        "y[b*seq+s, h*d:(h+1)*d] = softmax(q_s . k_j^T * scale + mask_j) v_j over keys j of sequence b and head h; "
        "q, k, v read as row r, column c at r * in_stride + {q,k,v}_off + c (separate projections: in_stride = "
        "heads*head_dim, offsets 0; the fused Q|K|V product: one buffer, in_stride = 3*heads*head_dim, offsets 0, "
        "H, 2H); y is [batch*seq, heads*head_dim]; mask[b*seq+j] = 1 keeps, 0 pads; "
        "one workgroup per (query, head, sequence), scores in workgroup memory (seq <= max_seq)",
        ("params", "q", "k", "v", "mask", "y"),
        (("batch", "u32"), ("seq", "u32"), ("heads", "u32"), ("head_dim", "u32"), ("scale", "f32"),
         ("in_stride", "u32"), ("q_off", "u32"), ("k_off", "u32"), ("v_off", "u32")), "attention",
        # (64-thread workgroups were tried on an H200: no faster than the profile's 256)
        # CPU adapters: one_barrier (the template says why)
        {"mask": (True, False)}, {"*": {"max_seq": 512}, **{p: {"one_barrier": 1} for p in CPU_PROFILES}},
    ),
    Kernel(
        "meanpool", "meanpool.wgsl.jinja",
        "y[b, :] = sum_s mask[b*seq+s] x[b*seq+s, :] / sum_s mask[b*seq+s], then / ||y[b, :]||_2 if normalize; "
        "one workgroup per sequence",
        ("params", "x", "mask", "y"), (("batch", "u32"), ("seq", "u32"), ("hidden", "u32")), "rows",
        {"normalize": (True, False)},
    ),
    Kernel(
        "im2col", "im2col.wgsl.jinja",
        "patches[b*P + p, (c*patch_size + i)*patch_size + j] = image[b, c, py*patch_size + i, px*patch_size + j] for patch p = py*grid_w + px "
        "of an NCHW image: the patch embedding becomes a gemm with the conv weight [hidden, C*patch*patch]",
        ("params", "image", "y"),
        (("batch", "u32"), ("channels", "u32"), ("height", "u32"), ("width", "u32"), ("patch_size", "u32"),
         ("count", "u32")), "elementwise",
    ),
    Kernel(
        "vit_tokens", "vit_tokens.wgsl.jinja",
        "y[b*(P+1) + 0, :] = cls + pos[0, :]; y[b*(P+1) + 1 + p, :] = patches[b*P + p, :] + pos[1 + p, :]",
        ("params", "patches", "cls", "pos", "y"), (("batch", "u32"), ("patches", "u32"), ("hidden", "u32"),
                                                   ("count", "u32")), "elementwise",
    ),
    # Generative decoders (templates/decoder/). The KV cache of one layer is [batch][kv_heads][slot]
    # [head_dim] float32 from element cache_off of its buffer (one buffer may hold every layer): a
    # (sequence, kv head) is one contiguous block of `capacity` slots, so a decode step's attention
    # reads a head's keys and values as one run, shared by the head's whole query group, and
    # appending a token writes in place, never moving the cache. Slot s of sequence b holds a real
    # token (not padding) when keep[b * capacity + s] > 0.5; the host writes keep.
    Kernel(
        "rmsnorm", "decoder/rmsnorm.wgsl.jinja",
        "y[r, :] = h / sqrt(mean(h^2) + eps) * gamma with h = x[r, :] (+ residual[r, :], then written back into "
        "residual: the residual stream updated in place); one workgroup per row",
        ("params", "x", "residual", "gamma", "y"), (("rows", "u32"), ("cols", "u32"), ("eps", "f32")), "rows",
        {"residual": (False, True)},
    ),
    Kernel(
        "rotary_cache", "decoder/cache_append.wgsl.jinja",
        "from the fused Q|K|V product qkv [rows, (heads + 2 kv_heads) * head_dim] (row b * seq + t): q = rotary(Q) "
        "into q [rows, heads * head_dim], rotary(K) and V appended to the caches at slot start + t; rotary in the "
        "rotate-half layout (dimension i pairs with i + head_dim/2) at angle positions[row] * inv_freq[i] (f32, "
        "as transformers computes it); count = rows * (heads + 2 kv_heads) * head_dim / 2",
        ("params", "qkv", "positions", "inv_freq", "q", "k_cache", "v_cache"),
        (("rows", "u32"), ("seq", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"),
         ("start", "u32"), ("capacity", "u32"), ("cache_off", "u32"), ("count", "u32")), "elementwise",
    ),
    Kernel(
        "append_cache", "decoder/cache_append.wgsl.jinja",
        "rotary_cache without the rotation (learned positions, GPT-2): Q copied into q, K and V appended to the caches",
        ("params", "qkv", "q", "k_cache", "v_cache"),
        (("rows", "u32"), ("seq", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"),
         ("start", "u32"), ("capacity", "u32"), ("cache_off", "u32"), ("count", "u32")), "elementwise",
    ),
    # a layer whose Q, K and V weights cannot be one matrix (per-tensor codebooks or scales, mixed
    # formats): three products, gathered by the append itself rather than by an extra copy dispatch
    Kernel(
        "rotary_cache_split", "decoder/cache_append_split.wgsl.jinja",
        "rotary_cache over three products q_in [rows, heads * head_dim], k_in and v_in [rows, kv_heads * head_dim] "
        "instead of the fused qkv; same params, dispatch and outputs",
        ("params", "q_in", "k_in", "v_in", "positions", "inv_freq", "q", "k_cache", "v_cache"),
        (("rows", "u32"), ("seq", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"),
         ("start", "u32"), ("capacity", "u32"), ("cache_off", "u32"), ("count", "u32")), "elementwise",
    ),
    Kernel(
        "append_cache_split", "decoder/cache_append_split.wgsl.jinja",
        "rotary_cache_split without the rotation (learned positions)",
        ("params", "q_in", "k_in", "v_in", "q", "k_cache", "v_cache"),
        (("rows", "u32"), ("seq", "u32"), ("heads", "u32"), ("kv_heads", "u32"), ("head_dim", "u32"),
         ("start", "u32"), ("capacity", "u32"), ("cache_off", "u32"), ("count", "u32")), "elementwise",
    ),
    Kernel(
        "cache_attention", "decoder/cache_attention.wgsl.jinja",
        "y[r, h*d:(h+1)*d] = softmax_j(q_r,h . k_j * scale) v_j over the kept cache slots j <= start + t of query row "
        "r = b * seq + t (causal and padding mask); grouped-query: head h reads kv head h / (heads / kv_heads); q at "
        "r * q_stride + q_off + h * d; one workgroup per (kv head, row) serves the head's whole query group over its "
        "slots with an online softmax in blocks (f32, running max subtracted): no length limit. The prefill "
        "kernel: grid (chunks = 1, kv_heads, rows), chunk >= start + seq",
        ("params", "q", "k_cache", "v_cache", "keep", "y"), DECODER_ATTENTION_PARAMS, "cache_attention",
        tiles={"*": {"max_group": 16, "acc": 2048}},
    ),
    Kernel(
        "cache_attention_split", "decoder/cache_attention.wgsl.jinja",
        "cache_attention with the slots cut into `chunks` chunks of `chunk` (grid (chunks, kv_heads, rows)): each "
        "workgroup writes its chunk's unnormalized output part_o [(r * heads + h) * chunks + c, d] and its (max, sum) "
        "part_ml [.., 2], which attention_combine merges. The decode step (one query per sequence, a long cache); a "
        "chunk past a row's last slot writes an empty part, so a grid fixed by the capacity serves every step",
        ("params", "q", "k_cache", "v_cache", "keep", "part_o", "part_ml"), DECODER_ATTENTION_PARAMS, "cache_attention",
        tiles={"*": {"max_group": 16, "acc": 2048}},
    ),
    Kernel(
        "attention_combine", "decoder/attention_combine.wgsl.jinja",
        "y[r, h*d + e] = sum_c exp(m_c - M) o_c[e] / sum_c exp(m_c - M) l_c (M = max_c m_c) over the chunk parts of "
        "cache_attention_split; zeros where no chunk saw a kept slot; count = rows * heads * head_dim",
        ("params", "part_o", "part_ml", "y"),
        (("rows", "u32"), ("heads", "u32"), ("head_dim", "u32"), ("chunks", "u32"), ("count", "u32")), "elementwise",
    ),
    Kernel(
        "gated", "decoder/gated.wgsl.jinja",
        "y[r, c] = act(gate[r * in_stride + gate_off + c]) * up[r * in_stride + up_off + c] (SwiGLU: silu; the "
        "concatenated gate|up product bound twice: in_stride = 2 cols, offsets 0 and cols); count = rows * cols",
        ("params", "gate", "up", "y"), (("count", "u32"), ("cols", "u32"), ("in_stride", "u32"), ("gate_off", "u32"),
                                         ("up_off", "u32")), "elementwise",
        {"activation": GATE_ACTIVATIONS},
    ),
    # A decode step's append, attention and combine in one dispatch while the cache is short (the runtime
    # takes it up to tiles["max_slots"] slots): a Llama-1B step ran 3 x 16 of its 116 dispatches there.
    Kernel(
        "rotary_step_attention", "decoder/step_attention.wgsl.jinja",
        "a decode step's attention from the fused Q|K|V product qkv [rows, (heads + 2 kv_heads) * head_dim] (row r: "
        "sequence r's new token at slot start, position positions[r]): rotary(Q), and rotary(K) and V appended at "
        "slot start, then y[r, h*d:(h+1)*d] = softmax_j(q . k_j * scale) v_j over the kept slots j <= start of the "
        "cache; grid (heads, rows); start < tiles max_slots, head_dim <= tiles max_dim",
        ("params", "qkv", "positions", "inv_freq", "k_cache", "v_cache", "keep", "y"), STEP_ATTENTION_PARAMS,
        "step_attention", tiles={"*": {"max_slots": STEP_ATTENTION_MAX_SLOTS, "max_dim": STEP_ATTENTION_MAX_DIM}},
    ),
    Kernel(
        "step_attention", "decoder/step_attention.wgsl.jinja",
        "rotary_step_attention without the rotation (learned positions, GPT-2)",
        ("params", "qkv", "k_cache", "v_cache", "keep", "y"), STEP_ATTENTION_PARAMS,
        "step_attention", tiles={"*": {"max_slots": STEP_ATTENTION_MAX_SLOTS, "max_dim": STEP_ATTENTION_MAX_DIM}},
    ),
    Kernel(
        "argmax", "decoder/argmax.wgsl.jinja",
        "y[r] = the lowest c < cols where x[r * row_stride + row_off + c] is largest, as u32 (greedy decoding reads "
        "back 4 bytes per sequence, not the logits); one workgroup per row. With indices, y[r] = indices[that "
        "element's index] instead: the second stage after argmax_parts (x = its part_value, indices = part_index, "
        "cols = row_stride = parts, row_off = 0)",
        ("params", "x", "indices", "y"), (("rows", "u32"), ("cols", "u32"), ("row_stride", "u32"), ("row_off", "u32")),
        "rows", {"indices": (False, True)},
    ),
    Kernel(
        "argmax_parts", "decoder/argmax.wgsl.jinja",
        "the first stage of a long row's argmax: workgroup (r, p) (grid rows * parts) writes the largest of columns "
        "[p * span, min((p + 1) * span, cols)) of row r and its lowest column to part_value / part_index [r * parts + p] "
        "(0xffffffff: a part without a number, skipped there); argmax with indices reduces them. One workgroup per row "
        "walks a 128256-word vocabulary in a serial chain of ~500 loads per thread (124 us on an H200 under Dawn, "
        "chrome variant); parts of 8 loads per thread (argmax_split) took 25 us for both stages",
        ("params", "x", "part_value", "part_index"),
        (("rows", "u32"), ("cols", "u32"), ("row_stride", "u32"), ("row_off", "u32"), ("parts", "u32"), ("span", "u32")),
        "row_parts",
    ),
)


def codebook_gemv_table_bytes(fmt: Format) -> int:
    """Workgroup memory the codebook GEMV's decode tables take (templates/gemv_codebook.wgsl.jinja):
    per e8p decoder 256 magnitude and 128 sign words, per lut8 decoder its 256 entries."""
    decoders = {CODEBOOK_STAGES[s]["decode"] for s in fmt.stages}
    return 4 * sum(256 + 128 if d == "e8p" else 256 for d in decoders)


# Units (16 weights each) a lane of the codebook GEMV loads per step on GPU profiles, by the format's
# number of stages (templates/gemv_codebook.wgsl.jinja; others 4, the template's default, as on CPU
# adapters). On the H200 (docs/benchmarks.md, "The codebook GEMVs, settled"; Dawn, 3 processes each)
# e8p with 2 units took 13.2-13.3 / 15.7-17.2 / 51.0-53.3 us at 8192x2048 / 2048x8192 / 16384x8192
# against 14.6-19.1 / 19.3-20.3 / 52.9-55.4 with 4; the residual formats decode 2-4 times as much per
# unit and were level or slower with 2 (e8p-rvq3 19.0 / 22.7 / 82.2 against 17.9-18.1 / 21.9-22.3 /
# 80.9-83.6). e81b (one stage of 8-bit words, half e8p's decode per unit) follows e8p, unmeasured.
CODEBOOK_GEMV_UNITS = {1: 2}


def codebook_gemv_units(fmt: Format) -> int:
    return CODEBOOK_GEMV_UNITS.get(len(fmt.stages), 4)


def gemv_packed_tiles(tiles: dict, bits: int) -> dict:
    """GEMV tiles for packed weights: fewer threads per row the more values a word holds. A row of
    BERT's K = 768 is 192 vec4 steps in float32 but 24 in int4 and 12 in int2, so the float32 table's
    64 threads per row left 60-80% of an int2 workgroup idle (int2 ran slower than int4 at 1x8 on an
    H200). Threads per row shrink to the power of two at most the steps of K = 768, but not below 16:
    rows per thread group shrink with them (a workgroup still covers the same output rows), and each
    row a thread owns re-reads x, so at 8 threads (1 row each) int2 read x twice as often per weight
    as int4 and ran slower at 1x8 (BERT-base 1.68 vs 1.39 ms on the H200; 16 threads: 1.42 vs 1.41)."""
    steps = max(16, 6 * bits)  # K = 768 at `bits` bits: 768 * bits / 32 words, 4 words a step
    tpr = min(tiles["threads_per_row"], 1 << (steps.bit_length() - 1))
    return {"threads_per_row": tpr, "rows": max(1, GEMV_PACKED_ROWS * tpr // tiles["threads_per_row"])}


# Rows per thread group of the packed GEMV tiles at the profile's full threads per row (gemv_packed_tiles
# scales them down with the threads): what they were tuned with on the H200 (float32's own are 2).
GEMV_PACKED_ROWS = 8


# Packed rows of at least this many inputs take the `deep` GEMV tiles: 64 threads per row, 4 rows per
# thread group. An H200 sweep at decoder shapes (docs/benchmarks.md, Dawn, groups of 32) had the
# few-thread tiles above 1.6-3x slower there (int4 2048x8192: 148 vs 66 us; 16384x8192: 444 vs 218;
# 2048x2048: 45 vs 25), while at K = 768 they win (int4 768x768: 9.4 vs 11.6 us): long rows want
# more threads per row and more rows per thread, i.e. more loads in flight per thread.
GEMV_DEEP_K = 2048
GEMV_DEEP_TILES = {"threads_per_row": 64, "rows": 4}


def gemv_deep(weight: "WeightStorage", k: int) -> bool:
    """Does a GEMV over K inputs of this storage take the deep tiles (packed formats only)?"""
    return weight.fmt.quantized and k >= GEMV_DEEP_K


# Deep products with at least this many outputs (a decoder's gate|up product, its tied head) take the
# wide tiles instead: 32 threads per row, 8 rows per thread group, so a 256-thread workgroup covers 64
# rows. An H200 A/B (docs/benchmarks.md, "A lead for the large products"; Dawn, one process per cell):
# 128256 x 2048 int4 96.5-99.0 -> 77.2 us, int2 97.8-100.3 -> 79.5; 16384 x 2048 int4 19.6 -> 16.6,
# int2 level. Few outputs would leave the GPU idle (2048 outputs: 32 workgroups), hence the bound;
# measured for uniform 2- and 4-bit rows only, so only those take them.
GEMV_WIDE_N = 16384
GEMV_WIDE_TILES = {"threads_per_row": 32, "rows": 8}


# Wide products of 1- and 2-bit codes with fixed levels take the lookup-table GEMV on the wide tiles
# (deep "lut"; templates/gemv_lut.wgsl.jinja): on the H200, alone, int2's 128256 x 2048 head ran 65-67 us
# against 79-80 decoding each code (int4: 80); in a 1B Llama decode its gate|up took 18.3 us (int4 22.3)
# and its head 76.1 (int4 94.7), and int2 decoded faster than int4 (931 against 877 tokens/s). With
# fewer outputs (2048-3072) the tables lost alone (too few rows share them), so only wide products.
GEMV_LUT_TILES = {**GEMV_WIDE_TILES, "lut": 1}


def gemv_depth(weight: "WeightStorage", k: int, n: int) -> bool | str:
    """The GEMV's `deep` option for K inputs and n outputs of this storage: False (the tiles of short
    rows), True (GEMV_DEEP_TILES), "wide" (GEMV_WIDE_TILES) or "lut" (GEMV_LUT_TILES)."""
    if not gemv_deep(weight, k):
        return False
    if n < GEMV_WIDE_N or weight.fmt.bits > 4:
        return True
    fits = not gemv_lut_problem(weight, {**GEMV_LUT_TILES, "x_rows": 1}) \
        and gemv_lut_fits(weight, k, GEMV_LUT_TILES["threads_per_row"])
    if fits:
        return "lut"
    return "wide" if weight.fmt.levels == "uniform" else True


def gemv_depth_tiles(depth: bool | str) -> dict:
    """The tile table of a deep GEMV (its `deep` option True, "wide" or "lut"), before the profile caps
    its threads per row at the workgroup size."""
    return {"wide": GEMV_WIDE_TILES, "lut": GEMV_LUT_TILES}.get(depth, GEMV_DEEP_TILES)


def vec4_capable(weight: "WeightStorage | None") -> bool:
    """Can the vec4 GEMV read this storage 4 words at a time (a word never splits a block)?"""
    if weight is None:
        return False
    fmt = weight.fmt
    return not fmt.quantized or (fmt.layout == "words" and 32 % fmt.values_per_word == 0)


# The lookup-table GEMV (templates/gemv_lut.wgsl.jinja): nibbles of 1- and 2-bit code words index
# tables of x sums built per workgroup. Its tables take 16 floats per nibble of each of the chunk's
# threads_per_row words, so at most 32 threads per row fit WebGPU's default 16 KiB of workgroup memory.
GEMV_LUT_MAX_THREADS = 32


def gemv_lut_problem(weight: "WeightStorage | None", tiles: dict) -> str:
    """Why the lookup-table GEMV cannot serve this storage and these tiles ("" when it can)."""
    fmt = weight.fmt if weight is not None else None
    if fmt is None or not fmt.quantized or fmt.layout != "words" or fmt.bits > 2:
        return "needs 1- or 2-bit codes in whole words"
    if fmt.levels not in ("uniform", "table"):
        return f"needs levels fixed per format (uniform or a table), not {fmt.levels}"
    if tiles["x_rows"] != 1 or tiles["threads_per_row"] > GEMV_LUT_MAX_THREADS or tiles["threads_per_row"] < 2:
        return f"needs one input row and 2..{GEMV_LUT_MAX_THREADS} threads per row"
    return ""  # (it reads single words: a vec4 option serves the profiles without the tables, CPU adapters)


def gemv_lut_fits(weight: "WeightStorage", k: int, threads_per_row: int) -> bool:
    """A row the lookup-table GEMV serves: whole chunks of threads_per_row words."""
    words, rest = divmod(k, weight.fmt.values_per_word)
    return rest == 0 and words % threads_per_row == 0


def gemv_vec4_fits(weight: "WeightStorage", k: int) -> bool:
    """A GEMV shape the vec4 variant serves: whole quads of words, no partial word (K = words * values)."""
    fmt = weight.fmt
    if not vec4_capable(weight):
        return False
    per_word = 1 if not fmt.quantized else fmt.values_per_word
    return k % per_word == 0 and (k // per_word) % 4 == 0


def gemv_loads(weight: "WeightStorage", k: int, n: int) -> bool | str:
    """The GEMV's `vec4` option for K inputs and n outputs: True (4 code words per load), "pairs" (2) or
    False (a block at a time). A deep product whose rows hold fewer quads of words than its tiles have
    threads per row takes pairs, so that every thread loads: int2's K = 2048 is 32 quads for the deep
    tiles' 64 threads, and with quads half of them idled while the other half decoded twice the
    weights int4's threads did (on the H200, in a whole decode, int2's Q|K|V and output products
    took 15.7 / 13.7 us against int4's 13.8 / 11.6 at half the bytes)."""
    if not gemv_vec4_fits(weight, k):
        return False
    depth = gemv_depth(weight, k, n)
    if depth:
        threads = gemv_depth_tiles(depth)["threads_per_row"]
        words = k // weight.fmt.values_per_word
        if words // 4 < threads <= words // 2:
            return "pairs"
    return True


# Up to this many rows a GEMV (one workgroup per 32 outputs of one row; a weight is read once per
# row, from L2 after the first) beats a GEMM tile: at 8 rows a tile wastes 3/4 of its rows and
# BERT-base's 768 outputs give a GEMM only 24 workgroups (H200 / Dawn, docs/benchmarks.md).
GEMV_MAX_ROWS = 8
GEMM_LARGE_ROWS = 1024  # from this many rows the large GEMM tiles win (H200 sweep)


# Split-K (GEMMs whose output tiles give too few workgroups to fill a GPU: a sentence batch against
# BERT's 768 outputs is 24 tiles): below SPLIT_TARGET_WORKGROUPS tiles, K is cut into splits of at
# least SPLIT_MIN_K inputs so that tiles x splits approaches the target. The runtime applies the
# rule (dispatch.js: splitFor); the thresholds travel in the manifest.
SPLIT_TARGET_WORKGROUPS = 256
SPLIT_MIN_K = 256


def split_for(m: int, n: int, k: int, tiles: dict) -> int:
    """k_split for a small-tile GEMM of m x n x k (k itself: no split). dispatch.js: splitFor."""
    count = math.ceil(n / tiles["tile_n"]) * math.ceil(m / tiles["tile_m"])
    splits = min(math.ceil(SPLIT_TARGET_WORKGROUPS / count), k // SPLIT_MIN_K)
    if count >= SPLIT_TARGET_WORKGROUPS or splits < 2:
        return k
    return math.ceil(k / splits / tiles["tile_k"]) * tiles["tile_k"]


def matmul_choice(m: int, k: int, weight: "WeightStorage", n: int) -> tuple[str, dict]:
    """Which matrix-product kernel and options serve m rows of x against W[n, k].
    web_runtime/dispatch.js applies the same rule (its thresholds come from the manifest; the GEMV's
    tiles are the bundle's choice per matrix)."""
    if m <= GEMV_MAX_ROWS:
        return "gemv", {"vec4": gemv_loads(weight, k, n), "deep": gemv_depth(weight, k, n)}
    return "gemm", {"size": "large" if m >= GEMM_LARGE_ROWS else "small"}


# Which kernels have a variant for each optional WebGPU feature (profiles.FEATURES): subgroups replace
# the cross-thread reductions (the GEMV's row sums, the row statistics of layernorm / rmsnorm / softmax,
# argmax's pairs); shader-f16 decodes the GEMV's packed codes in f16 pairs. feature_applies narrows
# this by storage and tiles; every other kernel keeps one program whatever the adapter offers.
FEATURE_KERNELS = {
    "subgroups": ("gemv", "layernorm", "softmax", "rmsnorm", "argmax", "argmax_parts"),
    "shader-f16": ("gemv",),
}
# WebGPU's smallest subgroup (subgroupMinSize is at least 4): the GEMV's array of subgroup partials
# is sized for it, so any size the adapter reports (4..128) fits.
MIN_SUBGROUP_SIZE = 4


def f16_decodable(weight: "WeightStorage | None") -> bool:
    """Does the GEMV's f16 decoding serve this storage? Uniform levels (code minus zero point: small
    integers, exact in f16) in blocks that never straddle a scale group (the GEMV's aligned path)."""
    if weight is None or not weight.fmt.quantized:
        return False
    return weight.fmt.levels == "uniform" and 32 % weight.fmt.block_values == 0


def feature_applies(kernel: str, profile: str, weight: "WeightStorage | None", tiles: dict, feature: str) -> bool:
    """Does `feature` change this kernel's program? Only for the profile's features and the kernels
    of FEATURE_KERNELS; a GEMV of one thread per row (CPU profiles) has no reduction for subgroups,
    and f16 decoding needs an f16-decodable storage."""
    if feature not in get_profile(profile).features or kernel not in FEATURE_KERNELS[feature]:
        return False
    if kernel == "gemv" and tiles.get("lut"):  # the lookup-table GEMV has one program
        return False
    if kernel == "gemv" and feature == "subgroups":  # (codebook formats render their own gemv)
        return tiles["threads_per_row"] > 1 and (weight is None or weight.fmt.levels != "codebook")
    if kernel == "gemv" and feature == "shader-f16":
        return f16_decodable(weight)
    return True


@dataclass(frozen=True)
class KernelVariant:
    kernel: str
    profile: str
    weight: WeightStorage | None = None
    options: tuple[tuple[str, object], ...] = ()
    tile_overrides: tuple[tuple[str, int], ...] = ()  # benchmarks try other tiles; bundles use the table's
    features: tuple[str, ...] = ()  # the profiles.FEATURES its program uses (in FEATURES order); () is the base variant

    @classmethod
    def make(cls, kernel: str, profile: str, weight: WeightStorage | None = None, tiles: dict | None = None,
             features=(), **options) -> "KernelVariant":
        k = KERNELS[kernel]
        if k.weighted != (weight is not None):
            raise ValueError(f"{kernel}: {'needs' if k.weighted else 'takes no'} weight storage")
        unknown = set(options) - set(k.options)
        if unknown:
            raise ValueError(f"{kernel}: unknown options {sorted(unknown)}")
        merged = {**k.option_defaults(), **options}
        for name, value in merged.items():
            if value not in k.options[name]:
                raise ValueError(f"{kernel}: option {name}={value!r} not in {k.options[name]}")
        if merged.get("split") and (merged["activation"] != "none" or merged["bias"] or merged["residual"]):
            raise ValueError(f"{kernel}: a split-K GEMM writes raw partial sums; its epilogue runs in the splitk kernel")
        if len(prologues_on(merged)) > 1:
            raise ValueError(f"{kernel}: one prologue at a time (norm or gate)")
        if prologues_on(merged) and weight.fmt.levels == "codebook":
            raise ValueError(f"{kernel}: a codebook format's product rotates its input first; no prologue fuses into it")
        if merged.get("vec4") == "pairs" and not weight.fmt.quantized:
            raise ValueError(f"{kernel}: vec4 pairs (2 code words per load) are for packed formats; float32 loads 4 values")
        if merged.get("vec4") and not vec4_capable(weight):
            raise ValueError(f"{kernel}: vec4 needs a words layout whose blocks align with 32 (or float32), not {weight.format}")
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ValueError(f"{kernel}: unknown features {unknown}; known: {', '.join(FEATURES)}")
        variant = cls(kernel, profile, weight, tuple(sorted(merged.items())), tuple(sorted((tiles or {}).items())))
        k.check_tiles(profile, variant.tiles)
        # decode_chunk=C, a GEMV tile only benchmarks set (bench_kernels.py --gemv-tiles; bundles never do):
        # a word's codes decoded C at a time for every row, then multiplied (templates/gemv.wgsl.jinja), so a
        # thread holds C levels per row instead of a word's all. int2 holds 16 levels per row to int4's 8;
        # decode_chunk=8 gives it int4's count, but on the H200 it ran int2's head no faster (84 against
        # 79-80 us; docs/benchmarks.md, "Lookup tables for int2's wide products"), so bundles never set it.
        chunk = (tiles or {}).get("decode_chunk")
        if chunk is not None:
            values = weight.fmt.block_values if weight is not None and weight.fmt.quantized else 0
            if kernel != "gemv" or not merged.get("vec4") or not values or chunk % 4 or values % chunk:
                raise ValueError(f"{kernel}: decode_chunk {chunk} needs the packed vec4 GEMV and a multiple of 4 "
                                 f"dividing the format's {values or 'no'} codes per block")
        if variant.tiles.get("lut"):
            problem = gemv_lut_problem(weight, variant.tiles) if kernel == "gemv" else "it is a GEMV tile"
            if problem:
                raise ValueError(f"{kernel}: tile lut: {problem}")
        # keep only the features that change this kernel's program: asking for more is not an
        # error (a bundle asks every kernel for every feature), it gives the base variant's key
        used = tuple(f for f in FEATURES if f in features and feature_applies(kernel, profile, weight, variant.tiles, f))
        if used:
            variant = cls(kernel, profile, weight, variant.options, variant.tile_overrides, used)
        return variant

    @property
    def spec(self) -> Kernel:
        return KERNELS[self.kernel]

    @property
    def prof(self) -> Profile:
        return get_profile(self.profile)

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def tiles(self) -> dict:
        tiles = self.spec.tiles_for(self.profile, self.opts)
        if self.kernel == "gemv":
            if self.weight is not None and self.weight.fmt.quantized and not self.prof.cpu_adapter:
                table = gemv_depth_tiles(self.opts.get("deep"))
                deep = {**table, "threads_per_row": min(table["threads_per_row"], self.workgroup_size)}
                tiles = {**tiles, **(deep if self.opts.get("deep") else gemv_packed_tiles(tiles, self.weight.fmt.bits))}
            # x_rows: input rows per workgroup, each decoded weight applied to all of them. One by
            # default: decoding once for 8 rows left BERT-base's 768 outputs 24 workgroups at 1x8 and
            # ran 1.8x slower on an H200 (docs/benchmarks.md); it pays only where the grid stays full.
            tiles = {"x_rows": 1, **tiles}
            if self.weight is not None and self.weight.fmt.levels == "codebook" and not self.prof.cpu_adapter:
                tiles = {**tiles, "units": codebook_gemv_units(self.weight.fmt)}
        return {**tiles, **dict(self.tile_overrides)}

    @property
    def key(self) -> str:
        parts = [self.kernel]
        if self.weight is not None:
            parts.append(self.weight.key)
        for name, value in self.options:
            if name in PROLOGUE and value == PROLOGUE[name][0]:
                continue  # (see PROLOGUE: keys as before the prologues existed)
            parts.append(f"{name}-{value}" if not isinstance(value, bool) else (name if value else f"no{name}"))
        parts.extend(f"{name}{value}" for name, value in self.tile_overrides)
        parts.extend(FEATURES[f].tag for f in self.features)
        parts.append(self.prof.variant)
        return ".".join(parts)

    @property
    def base(self) -> "KernelVariant":
        """This variant without its features: what runs where the device lacks them."""
        return KernelVariant(self.kernel, self.profile, self.weight, self.options, self.tile_overrides)

    def with_features(self, features) -> "KernelVariant":
        """The variant of this kernel using whichever of `features` change its program."""
        return KernelVariant.make(self.kernel, self.profile, self.weight, dict(self.tile_overrides) or None,
                                  features=features, **self.opts)

    @property
    def bindings(self) -> dict[str, int]:
        """name -> slot for what this variant binds (weight parts its storage lacks and disabled
        options are left out; slots keep their kernel-wide numbers)."""
        used = {}
        weight_parts = set(self.weight.parts()) if self.weight else set()
        for slot, name in enumerate(self.spec.bindings):
            if name.startswith("w.") and name[2:] not in weight_parts:
                continue
            if name in self.spec.options and not self.opts[name]:
                continue
            if name in PROLOGUE_BINDINGS and PROLOGUE_BINDINGS[name] in self.spec.options \
                    and PROLOGUE_BINDINGS[name] not in prologues_on(self.opts):
                continue
            used[name] = slot
        return used

    @property
    def params(self) -> tuple[tuple[str, str], ...]:
        """The uniform fields: the kernel's, then those of the prologue its options turn on, then those
        of a runtime epilogue (RUNTIME)."""
        extra = tuple(field for name in prologues_on(self.opts) for field in PROLOGUE_PARAMS[name])
        chosen = tuple(field for name, fields in EPILOGUE_PARAMS.items() if self.opts.get(name) == RUNTIME for field in fields)
        return self.spec.params + extra + chosen

    @property
    def workgroup_size(self) -> int:
        """Threads per workgroup (every variant of a profile runs the profile's)."""
        return self.prof.workgroup_size

    @property
    def workgroup_storage_bytes(self) -> int:
        t = self.tiles
        if self.kernel == "gemm":
            return 0 if t.get("direct") else 4 * t["tile_k"] * (t["tile_m"] + t["tile_n"])
        if self.kernel == "gemv":
            # partial sums per thread: rows x x_rows products (+ x_rows sums of x^2 with the norm prologue)
            per_thread = (t["rows"] + (1 if self.opts.get("norm") else 0)) * t["x_rows"]
            if t.get("lut"):  # the chunk's tables; after them, in the same array, the sums of x^2, then the partials
                wg = self.workgroup_size
                return 4 * max(t["threads_per_row"] * 8 * 16, wg * t["rows"], wg + wg // 32)
            if self.weight is not None and self.weight.fmt.levels == "codebook":  # + the nibble-form decode tables
                return codebook_gemv_table_bytes(self.weight.fmt) + (0 if t["threads_per_row"] == 1 else 4 * self.workgroup_size * per_thread)
            if "subgroups" in self.features:  # the partials of each subgroup (at least 4 threads), + a counter
                return 4 * (self.workgroup_size // MIN_SUBGROUP_SIZE) * per_thread + 4
            return 0 if t["threads_per_row"] == 1 else 4 * self.workgroup_size * per_thread
        if self.kernel == "attention":  # the scores of one query row (+ the reduction array)
            return 4 * (t["max_seq"] + (0 if t.get("one_barrier") else self.workgroup_size))
        if self.kernel in ("layernorm", "softmax") or (self.kernel == "meanpool" and self.opts["normalize"]):
            return 4 * self.workgroup_size  # one f32 per thread for the tree reductions
        if self.kernel == "hadamard":
            return 4 * HADAMARD_MAX_N
        if self.kernel == "rmsnorm":
            return 4 * self.workgroup_size
        if self.kernel in ("argmax", "argmax_parts"):  # a value and an index per thread
            return 8 * self.workgroup_size
        if self.spec.dispatch == "step_attention":  # q, k, v of one head; the scores; red (pairs, or output shares)
            return 4 * (3 * t["max_dim"] + t["max_slots"] + max(2 * self.workgroup_size, t["max_dim"]))
        if self.spec.dispatch == "cache_attention":  # red, a block of scores per group head, acc, max / sum / alpha
            keys = self.workgroup_size // CACHE_ATTENTION_KEY_THREADS
            return 4 * (self.workgroup_size + t["max_group"] * keys + t["acc"] + 3 * t["max_group"])
        return 0

    @property
    def limits(self) -> dict[str, int]:
        """Every limit this variant needs (checked against the adapter)."""
        need = dict(self.prof.limits)
        need["maxComputeWorkgroupStorageSize"] = self.workgroup_storage_bytes
        need["maxStorageBuffersPerShaderStage"] = sum(1 for n in self.bindings if n != "params")
        return need

    @property
    def required_limits(self) -> dict[str, int]:
        """The limits above WebGPU's defaults, to name in requestDevice's requiredLimits."""
        return {k: v for k, v in self.limits.items() if v > DEFAULT_LIMITS[k]}

    def to_manifest(self) -> dict:
        return {
            "key": self.key, "template": self.spec.template, "kernel": self.kernel,
            "weight": None if self.weight is None else {"key": self.weight.key, "format": self.weight.format,
                                                         "scale_dtype": self.weight.scale_dtype,
                                                         "asymmetric": self.weight.asymmetric},
            "options": self.opts, "profile": self.profile, "workgroup_size": self.workgroup_size,
            "tiles": self.tiles, "dispatch": self.spec.dispatch, "params": [list(p) for p in self.params],
            "bindings": self.bindings, "limits": self.limits, "required_limits": self.required_limits,
            # the base variant this one replaces where the device has its features (the model graph
            # names base keys; web_runtime/variants.js serves each with its best feature variant)
            "features": list(self.features), "base_key": self.base.key,
        }


def _wgsl_float(value: float) -> str:
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["wgsl_float"] = _wgsl_float
    env.globals["epilogue_activations"] = EPILOGUE_ACTIVATIONS  # the runtime epilogue's act indexes this
    return env


def render(variant: KernelVariant) -> str:
    prof = variant.prof
    required = ", ".join(f"{k} >= {v}" for k, v in variant.limits.items())
    extra = variant.required_limits
    required += f" (request {', '.join(extra)} in requiredLimits)" if extra else " (within WebGPU's defaults)"
    weight = variant.weight
    return _environment().get_template(variant.spec.template).render(
        kernel=variant.spec, key=variant.key, profile=prof, wg=variant.workgroup_size, tiles=variant.tiles,
        opts=variant.opts, bindings=variant.bindings, params=variant.params, required_limits_text=required,
        weight=weight, fmt=weight.fmt if weight else None,
        scale_dtype=weight.scale_dtype if weight else None, asymmetric=weight.asymmetric if weight else False,
        features=variant.features, enables=[FEATURES[f].enable for f in variant.features],
        max_n=HADAMARD_MAX_N,
    )


def feature_variants(variant: KernelVariant) -> list[KernelVariant]:
    """The feature variants a bundle ships beside `variant`: one per non-empty subset of its profile's
    features that changes the program (distinct keys only; none for kernels no feature touches)."""
    features = get_profile(variant.profile).features
    found = {}
    for size in range(1, len(features) + 1):
        for subset in itertools.combinations(features, size):
            other = variant.with_features(subset)
            if other.features:
                found.setdefault(other.key, other)
    return list(found.values())


def _grid(total: int) -> tuple[int, int]:
    """Split a count of workgroups into (x, y) with x at most 65535."""
    x = min(max(total, 1), MAX_WORKGROUPS_PER_DIM)
    return x, math.ceil(max(total, 1) / x)


def workgroups(variant: KernelVariant, dims: dict[str, int]) -> tuple[int, int, int]:
    """The dispatch grid for `dims` (the kernel's params by name), by the kernel's rule.
    web_runtime/dispatch.js implements the same rules."""
    t, wg = variant.tiles, variant.workgroup_size
    rule = variant.spec.dispatch
    if rule == "gemv":
        rows_per_workgroup = t["rows"] * wg // t["threads_per_row"]
        return (*_grid(math.ceil(dims["n"] / rows_per_workgroup) * math.ceil(dims["m"] / t["x_rows"])), 1)
    if rule == "gemm":  # z: the K splits (one when k_split = k)
        return math.ceil(dims["n"] / t["tile_n"]), math.ceil(dims["m"] / t["tile_m"]), math.ceil(dims["k"] / dims["k_split"])
    if rule == "elementwise":
        return (*_grid(math.ceil(dims["count"] / wg)), 1)
    if rule == "rows":
        return (*_grid(dims["rows"] if "rows" in dims else dims["batch"]), 1)
    if rule == "attention":  # x: query position, y: head, z: sequence
        return dims["seq"], dims["heads"], dims["batch"]
    if rule == "cache_attention":  # x: slot chunk, y: kv head, z: query row
        return dims["chunks"], dims["kv_heads"], dims["rows"]
    if rule == "row_parts":  # one workgroup per (row, part), split as (x <= 65535, y)
        return (*_grid(dims["rows"] * dims["parts"]), 1)
    if rule == "step_attention":  # x: query head, y: row (sequence)
        return dims["heads"], dims["rows"], 1
    raise ValueError(f"unknown dispatch rule {rule!r}")


def check_attention_dims(variant: KernelVariant, dims: dict[str, int]) -> None:
    """Refuse dims the attention kernel cannot compute: the scores of a query row live in a
    workgroup array of tiles["max_seq"] floats, and the grid is (seq, heads, batch). The JS
    runtime applies the same rule before it dispatches."""
    if variant.kernel != "attention":
        raise ValueError(f"check_attention_dims: {variant.key} is not an attention variant")
    for name in ("batch", "seq", "heads", "head_dim"):
        if int(dims[name]) < 1:
            raise ValueError(f"attention: {name} = {dims[name]}; it must be at least 1")
    max_seq = variant.tiles["max_seq"]
    if dims["seq"] > max_seq:
        raise ValueError(f"attention: sequence length {dims['seq']} exceeds max_seq {max_seq} of {variant.key} "
                         f"(its scores live in workgroup memory); truncate the input to {max_seq} tokens")
    for name in ("heads", "batch"):
        if dims[name] > MAX_WORKGROUPS_PER_DIM:
            raise ValueError(f"attention: {name} = {dims[name]} exceeds {MAX_WORKGROUPS_PER_DIM} workgroups per dimension")


# The longest chunk of slots a decode-step attention workgroup walks: on an H200 (Dawn), chunks of 1024
# and 4096 slots ran 1.07-1.38x slower than 256 at 8192-32768 cached slots (fewer workgroups, each a
# longer serial chain), and 256 was never far from the best measured (scripts/bench_decoder_kernels.py).
MAX_DECODE_CHUNK = 256


def decode_chunks(variant: KernelVariant, slots: int, kv_heads: int, rows: int) -> tuple[int, int]:
    """(chunk, chunks) for cache_attention_split over `slots` cached slots: each workgroup walks its
    chunk block after block (a serial chain of loads and barriers), so the slots are cut until the
    grid (chunks x kv_heads x rows) reaches SPLIT_TARGET_WORKGROUPS workgroups or the chunks are one
    block (the variant's keys per pass) short, and never longer than MAX_DECODE_CHUNK. On an H200
    (Dawn, chrome variant) its pick was the fastest measured of 32/64/256/rule slots, or within 1.11x of
    it, for Llama-3.2-1B's and Qwen2.5-0.5B's heads at 512 to 32768 slots, batch 1 and 4 (where a
    repeated row varied by up to 1.4x between trials at under 100 us)."""
    block = variant.workgroup_size // CACHE_ATTENTION_KEY_THREADS
    chunks = max(1, min(math.ceil(SPLIT_TARGET_WORKGROUPS / (kv_heads * rows)), math.ceil(slots / block)))
    chunk = min(MAX_DECODE_CHUNK, math.ceil(math.ceil(slots / chunks) / block) * block)
    return chunk, math.ceil(slots / chunk)


ARGMAX_LOADS_PER_THREAD = 8  # argmax_parts: columns each thread of a part reads


def argmax_split(variant: KernelVariant, cols: int) -> tuple[int, int]:
    """(parts, span) for argmax_parts over rows of `cols` values: spans of about
    ARGMAX_LOADS_PER_THREAD loads per thread, so the second stage (argmax with indices) reduces
    `parts` values per row."""
    span = variant.workgroup_size * ARGMAX_LOADS_PER_THREAD
    return math.ceil(cols / span), span


def check_cache_dims(dims: dict[str, int]) -> None:
    """Refuse dims that would touch slots outside a sequence's cache block (rotary_cache,
    append_cache and cache_attention share the rule; the host checks before it dispatches)."""
    for name in ("rows", "seq", "heads", "kv_heads", "head_dim", "capacity"):
        if int(dims[name]) < 1:
            raise ValueError(f"decoder kernel: {name} = {dims[name]}; it must be at least 1")
    if dims["rows"] % dims["seq"]:
        raise ValueError(f"decoder kernel: rows {dims['rows']} are not whole sequences of {dims['seq']} tokens")
    if dims["heads"] % dims["kv_heads"]:
        raise ValueError(f"decoder kernel: heads {dims['heads']} is not a multiple of kv_heads {dims['kv_heads']}")
    if dims["head_dim"] % 2:
        raise ValueError(f"decoder kernel: head_dim {dims['head_dim']} must be even (rotate-half pairs i with i + d/2)")
    if dims["start"] + dims["seq"] > dims["capacity"]:
        raise ValueError(f"decoder kernel: slots {dims['start']} + {dims['seq']} exceed the cache's capacity "
                         f"{dims['capacity']}; allocate a longer cache")


def check_cache_attention_dims(variant: KernelVariant, dims: dict[str, int]) -> None:
    """Refuse dims cache_attention(_split) cannot compute: a workgroup keeps its query group's outputs
    (group * head_dim <= tiles["acc"]) and scores (group <= tiles["max_group"]) in workgroup memory,
    the chunks must cover every slot a query sees, and the grid is (chunks, kv_heads, rows)."""
    if variant.spec.dispatch != "cache_attention":
        raise ValueError(f"check_cache_attention_dims: {variant.key} is not a cache attention variant")
    check_cache_dims(dims)
    t, group = variant.tiles, dims["heads"] // dims["kv_heads"]
    if group > t["max_group"] or group * dims["head_dim"] > t["acc"]:
        raise ValueError(f"{variant.kernel}: a query group of {group} heads x head_dim {dims['head_dim']} exceeds "
                         f"{t['max_group']} heads / {t['acc']} outputs per workgroup of {variant.key}")
    if dims["chunk"] < 1 or dims["chunk"] * dims["chunks"] < dims["start"] + dims["seq"]:
        raise ValueError(f"{variant.kernel}: {dims['chunks']} chunks of {dims['chunk']} slots do not cover "
                         f"{dims['start'] + dims['seq']} slots")
    if variant.kernel == "cache_attention" and dims["chunks"] != 1:
        raise ValueError("cache_attention writes normalized outputs of one chunk; split the slots with "
                         "cache_attention_split and attention_combine")
    for name in ("chunks", "kv_heads", "rows"):
        if dims[name] > MAX_WORKGROUPS_PER_DIM:
            raise ValueError(f"{variant.kernel}: {name} = {dims[name]} exceeds {MAX_WORKGROUPS_PER_DIM} workgroups per dimension")


def step_attention_fits(variant: KernelVariant, dims: dict[str, int]) -> bool:
    """Can (rotary_)step_attention serve a decode step of these dims (else the runtime appends, splits
    and combines)? Its scores and one head's q, k and v live in workgroup memory."""
    return dims["start"] < variant.tiles["max_slots"] and dims["head_dim"] <= variant.tiles["max_dim"]


def check_step_attention_dims(variant: KernelVariant, dims: dict[str, int]) -> None:
    """Refuse dims (rotary_)step_attention cannot compute (the JS runtime checks step_attention_fits first)."""
    if variant.spec.dispatch != "step_attention":
        raise ValueError(f"check_step_attention_dims: {variant.key} is not a step attention variant")
    check_cache_dims({**dims, "seq": 1})
    if not step_attention_fits(variant, dims):
        raise ValueError(f"{variant.kernel}: slot {dims['start']} or head_dim {dims['head_dim']} past the "
                         f"{variant.tiles['max_slots']} slots / {variant.tiles['max_dim']} dims of {variant.key}")
    for name in ("heads", "rows"):
        if dims[name] > MAX_WORKGROUPS_PER_DIM:
            raise ValueError(f"{variant.kernel}: {name} = {dims[name]} exceeds {MAX_WORKGROUPS_PER_DIM} workgroups per dimension")


def pack_params(variant: KernelVariant, values: dict[str, float]) -> bytes:
    """The uniform buffer for `values`: fields in the kernel's order, padded to 16 bytes."""
    raw = b"".join(struct.pack("<I" if kind == "u32" else "<f", values[name]) for name, kind in variant.params)
    return raw + b"\0" * (-len(raw) % 16 or (16 if not raw else 0))


def decoder_operator_kernels(model: dict) -> list:
    """The weightless operators a generative decoder (a decoder_reference description: `norm`,
    `positions`, `ffn`, `activation`) runs on the GPU, as an architecture row's operator_kernels
    list [(role, kernel, None, options)]: the bundle renders each for every profile."""
    rms = model["norm"] == "rms"
    ops = [("norm", "rmsnorm", None, {"residual": False}) if rms else ("norm", "layernorm", None, {})]
    if rms:
        ops.append(("norm_residual", "rmsnorm", None, {"residual": True}))
    ops.append(("cache_append", "rotary_cache" if model["positions"]["kind"] == "rotary" else "append_cache", None, {}))
    if any("query" in layer for layer in model.get("layers", [])):
        # separate query/key/value weights: the runtime fuses them into one product where their storage
        # allows, else it runs three and appends with this (decoder_qkv.js decides, per layer)
        ops.append(("cache_append_split", "rotary_cache_split" if model["positions"]["kind"] == "rotary"
                    else "append_cache_split", None, {}))
    ops.append(("attention_step", "rotary_step_attention" if model["positions"]["kind"] == "rotary" else "step_attention",
                None, {}))
    ops += [("attention_prefill", "cache_attention", None, {}), ("attention_decode", "cache_attention_split", None, {}),
            ("attention_combine", "attention_combine", None, {}), ("argmax", "argmax", None, {"indices": False}),
            ("argmax_parts", "argmax_parts", None, {}), ("argmax_finish", "argmax", None, {"indices": True})]
    if model["ffn"] == "gated":
        ops.append(("gate", "gated", None, {"activation": model["activation"]}))
    return ops
