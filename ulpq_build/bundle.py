"""Write a static web bundle: manifest, weight shards, rendered shaders, the JS runtime and a
demo page. Every path inside is relative, so the folder works from any static host and
sub-path; the same input gives byte-identical output; a failure leaves no folder behind.

    <out>/index.html            demo page (runs the model, shows output, path, variant, progress)
    <out>/manifest.json         see `MANIFEST_SCHEMA_VERSION` and `build_manifest`
    <out>/weights-000.bin ...   weight shards, at most SHARD_LIMIT bytes each
    <out>/shaders/*.wgsl        one file per distinct WGSL program, named by content (shader_store.py);
                                the manifest maps each kernel variant (kernels.py) of each profile to one
    <out>/ulpq.js, *.js         the runtime (ES modules, no build step)
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulpq_build import __version__, row_blocks
from ulpq_build.architectures import architecture_of, describe_model, model_tensors
from ulpq_build.atomic import atomic_folder, preflight_folder, scratch_folder
from ulpq_build.bundle_reader import GENERATOR, MANIFEST_SCHEMA_VERSION, MARKER, foreign_content, load_bundle
from ulpq_build.checkpoint import iter_quantized
from ulpq_build.config import resolve_options
from ulpq_build.strategy import plan_and_quantize
from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS
from ulpq_build.graph import graph_nodes
from ulpq_build.kernels import (EPILOGUE_ACTIVATIONS, GEMM_LARGE_ROWS, GEMV_MAX_ROWS, RUNTIME_EPILOGUE, SPLIT_MIN_K,
                                SPLIT_TARGET_WORKGROUPS, KernelVariant,
                                WeightStorage, feature_variants, gemv_depth, gemv_loads)
from ulpq_build.model_source import ModelSource, open_model, resolve_model
from ulpq_build.plan import Plan
from ulpq_build.profiles import FEATURE_POLICY, PROFILES
from ulpq_build.quantize import quantize
from ulpq_build.quantspec import QuantSpec
from ulpq_build.resources import web_runtime_dir
from ulpq_build.shader_store import distinct_shaders
from ulpq_build.vq.tensor import manifest_codebooks
from ulpq_build.wasm_kernels import write_cpu_kernels

SHARD_LIMIT = 128 * 1024 * 1024  # Firefox caps storage bindings at 128 MiB (environment.md)
PART_ALIGN = 256  # parts start 256-byte aligned inside shards (typed-array views, buffer offsets)


@dataclass
class BundleResult:
    out: Path
    plan: Plan
    manifest: dict


class ShardWriter:
    """Append tensor parts to weight shards of at most `limit` bytes, hashing as it goes."""

    def __init__(self, folder: Path, limit: int = SHARD_LIMIT):
        self.folder, self.limit = folder, limit
        self.shards: list[dict] = []
        self._file = None
        self._hash = None
        self._size = 0

    def _open_next(self) -> None:
        self._close()
        name = f"weights-{len(self.shards):03d}.bin"
        self._file = open(self.folder / name, "wb")
        self._hash = hashlib.sha256()
        self._size = 0
        self.shards.append({"file": name, "bytes": 0, "sha256": ""})

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1].update(bytes=self._size, sha256=self._hash.hexdigest())
            self._file = None

    def add(self, array: np.ndarray, what: str) -> dict:
        data = np.ascontiguousarray(array).tobytes()
        if len(data) > self.limit:
            raise UserError(f"{what} takes {len(data):,} bytes, more than one {self.limit:,}-byte shard (the "
                            f"128 MiB storage-binding limit of WebGPU); quantize it to fewer bits")
        pad = -self._size % PART_ALIGN
        if self._file is None or self._size + pad + len(data) > self.limit:
            self._open_next()
            pad = 0
        self._write(b"\0" * pad)
        ref = {"shard": len(self.shards) - 1, "file": self.shards[-1]["file"], "offset": self._size,
               "length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
               "dtype": str(array.dtype), "shape": list(array.shape)}
        self._write(data)
        return ref

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def decoder_prologues(model: dict) -> dict[int, dict[str, dict]]:
    """id(linear node) -> {prologue name: gemv options} for the products of a generative decoder whose
    preceding operator the GEMV can fuse (kernels.PROLOGUE): those an RMSNorm feeds (Q, K and V or
    the fused QKV, gate and up or fc, the LM head), and a gated FFN's down product (its act(gate) * up).
    LayerNorm (GPT-2) has a mean and a bias the prologue does not compute: none there."""
    if "layers" not in model or "lm_head" not in model:
        return {}
    out: dict[int, dict[str, dict]] = {}
    if model.get("norm") == "rms":
        for layer in model["layers"]:
            for role in ("query", "key", "value", "qkv", "gate", "up", "fc"):
                if role in layer:
                    out.setdefault(id(layer[role]), {})["norm"] = {"norm": True}
        out.setdefault(id(model["lm_head"]), {})["norm"] = {"norm": True}
    if model.get("ffn") == "gated":
        for layer in model["layers"]:
            out.setdefault(id(layer["down"]), {})["gate"] = {"gate": model["activation"]}
    return out


def fused_outputs(model: dict) -> dict[int, int]:
    """id(linear node) -> the outputs of the product its kernels serve, where the runtime fuses it with
    others: a gated decoder's gate with its up (gate's columns first; backend_webgpu.js uploads the
    two as one matrix whenever their parts align, which equal shapes always do, and only where both
    nodes name the same kernels: so both get the fused product's count)."""
    if "layers" not in model or "lm_head" not in model or model.get("ffn") != "gated":
        return {}
    out = {}
    for layer in model["layers"]:
        if "gate" in layer and "up" in layer:
            both = layer["gate"]["out_features"] + layer["up"]["out_features"]
            out.update({id(layer["gate"]): both, id(layer["up"]): both})
    return out


def plan_shaders(model: dict, specs: dict[str, QuantSpec]) -> list[KernelVariant]:
    """Decide the shader variants the bundle ships, and record in the graph which one serves what per
    profile: each linear node gets kernels[profile] = {gemv, gemm_small, gemm_large} (the runtime
    picks by row count, kernels.matmul_choice's rule), each embedding table {first, accumulate},
    and the model op_kernels[profile] for its weightless operators."""
    variants: dict[str, KernelVariant] = {}
    if not architecture_of(model).webgpu_graph:  # the runtime runs it on the CPU path: no WGSL to ship
        for node in [*graph_nodes(model, "in_features"), *graph_nodes(model, "table")]:
            node["kernels"] = {}  # no profile has a shader for it
        return []

    def use(kernel: str, profile: str, weight=None, **options) -> str:
        variant = KernelVariant.make(kernel, profile, weight, **options)
        variants.setdefault(variant.key, variant)
        # its feature variants (subgroups, shader-f16), which the runtime serves under this key where
        # the device has those features (kernels.feature_variants; web_runtime/variants.js)
        for other in feature_variants(variant):
            variants.setdefault(other.key, other)
        return variant.key

    # a gated FFN's gate product runs without its activation: the `gated` kernel applies it (silu is
    # no epilogue activation), as the CPU path's decoderForward does
    gates = {id(layer["gate"]) for layer in model.get("layers", []) if model.get("ffn") == "gated" and "gate" in layer}
    prologues = decoder_prologues(model)
    served = fused_outputs(model)
    # encoders take the runtime epilogue; a generative decoder keeps its epilogues in the key (its gate
    # and up must name one program with no activation to fuse, its GEMVs fuse prologues per role)
    runtime_epilogue = "lm_head" not in model
    for node in graph_nodes(model, "in_features"):
        weight = WeightStorage.of(specs[node["weight"]])
        act = "none" if id(node) in gates else node["activation"]
        epilogue = {"activation": act, "bias": bool(node["bias"]), "residual": bool(node.get("residual"))}
        if runtime_epilogue:  # one program per format and tile for every product of the encoder (kernels.RUNTIME)
            epilogue.update(RUNTIME_EPILOGUE)
        # the tiles suit the product the node's kernels run: a gated decoder's gate|up is one product of
        # both halves' outputs (web_runtime/backend_webgpu.js linearGateUp dispatches the gate's kernels)
        n = served.get(id(node), node["out_features"])
        # gemm_split + split_finish: the small-tile GEMM cut along K (raw partial sums), then the
        # epilogue over their sum, for row counts whose tiles alone would leave the GPU idle
        deep = gemv_depth(weight, node["in_features"], n)
        vec4 = gemv_loads(weight, node["in_features"], n)
        # a codebook format rotates its inputs (ulpq_build/vq/): the hadamard kernel runs before the product
        rotates = weight.fmt.levels == "codebook" and weight.fmt.rotate
        # a decoder step's GEMV with the operator before it fused in (kernels.PROLOGUE): gemv_norm,
        # gemv_gate; the runtime takes them where the GEMV serves the rows. Packed storages only: a
        # float32 GEMV is bound by its weight bytes and reads x (with gamma, or gate and up) once more
        # per row group; on an H200 (Llama-1B shape, one run) float32 showed no gain (medians 354.5
        # unfused / 315.7 fused tokens/s, both spread over 268-364) where int4 went 518.9 -> 633.8
        # (docs/benchmarks.md). Nor a rotated input (the hadamard kernel runs between).
        fusable = weight.fmt.quantized and not rotates
        fused = {f"gemv_{name}": options for name, options in prologues.get(id(node), {}).items()} if fusable else {}
        node["kernels"] = {p: {**({"hadamard": use("hadamard", p)} if rotates else {}),
                               "gemv": use("gemv", p, weight, vec4=vec4, deep=deep, **epilogue),
                               **{role: use("gemv", p, weight, vec4=vec4, deep=deep, **epilogue, **options)
                                  for role, options in fused.items()},
                               "gemm_small": use("gemm", p, weight, size="small", **epilogue),
                               "gemm_large": use("gemm", p, weight, size="large", **epilogue),
                               "gemm_split": use("gemm", p, weight, size="small", split=True),
                               "split_finish": use("splitk", p, None, **epilogue)} for p in PROFILES}
    for node in graph_nodes(model, "table"):
        if "parts" in node:  # a table stored in row blocks: its parts (walked as table nodes) get the kernels
            continue
        weight = WeightStorage.of(specs[node["table"]])
        node["kernels"] = {p: {"first": use("embed", p, weight, accumulate=False),
                               "accumulate": use("embed", p, weight, accumulate=True)} for p in PROFILES}
    ops = architecture_of(model).operator_kernels(model)
    if ops:
        model["op_kernels"] = {p: {role: use(kernel, p, weight, **options) for role, kernel, weight, options in ops}
                               for p in PROFILES}
    return sorted(variants.values(), key=lambda v: v.key)


def profile_entry(profile, variants: list[KernelVariant]) -> dict:
    """The profile row of the manifest, with the limits of this bundle's shaders for it combined
    (the runtime checks `limits` against the adapter and requests `required_limits`)."""
    entry = profile.to_manifest()
    for variant in variants:
        if variant.profile == profile.name:
            for field in ("limits", "required_limits"):
                for name, value in getattr(variant, field).items():
                    entry[field][name] = max(entry[field].get(name, 0), value)
    return entry


def build_bundle(model_path: str | Path | None, out: Path, overrides: dict | None = None, config: Path | None = None,
                 log=print, method: str = "rtn", target_bpw: float | None = None, target_mb: float | None = None) -> BundleResult:
    """Quantize the model `model_path` names (a path or a BUILTIN_MODELS name; None: builtin:minilm) and
    write the bundle to `out`. `overrides` are QuantSpec fields given on the command line; `config` a
    config file; method / target_*: see strategy.plan_and_quantize."""
    preflight_folder(out, foreign=foreign_content)  # a bad --out fails before minutes of quantizing
    with scratch_folder("ulpq-model-") as scratch:
        path, model_name = resolve_model(model_path, scratch)
        source = open_model(path)
        model = describe_model(source)
        refusal = architecture_of(model).bundle_unsupported(model)  # no runtime runs it: refuse before quantizing
        if refusal:
            raise UserError(f"{path}: {refusal}")
        names = model_tensors(model)
        tensors = [(n, source.weights.shape(n), source.weights.dtype(n)) for n in names]
        plan, precomputed = plan_and_quantize(source, tensors, overrides or {}, config, method, target_bpw, target_mb,
                                              model, log)
        method = "rtn" if precomputed is None else "gptq"  # what "auto" chose
        log(plan.table())
        with atomic_folder(out, foreign=foreign_content) as tmp:
            manifest = _write_bundle(tmp, source, model_name, model, plan, default_spec(plan, overrides or {}, config),
                                     precomputed, method)
    return BundleResult(Path(out), plan, manifest)


def default_spec(plan: Plan, overrides: dict, config) -> QuantSpec:
    """The spec the manifest reports as the bundle's precision: the flags' (or config's) default, else
    the spec that covers most weights (a planned mix)."""
    if overrides or config:
        return resolve_options(config, overrides, [])[0]
    quantized = [e for e in plan.entries if e.spec.fmt.quantized]
    if not quantized:
        return QuantSpec()
    counts: dict = {}
    for e in quantized:
        counts[e.spec] = counts.get(e.spec, 0) + math.prod(e.shape)
    return max(counts, key=counts.get)


def _copy_files(folder: Path, source: ModelSource, model: dict) -> list[dict]:
    """Files the runtime needs besides weights and shaders (tokenizer, demo samples), hashed."""
    entries = []
    for name in architecture_of(model).bundle_files(model, source):
        data = (source.folder / name).read_bytes()
        (folder / name).write_bytes(data)
        entries.append({"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return entries


def demo_section(model: dict) -> dict:
    """What the demo page runs on load (sentences, sample images, fixed rows): the row says."""
    return architecture_of(model).demo(model)


def _write_bundle(folder: Path, source: ModelSource, model_name: str, model: dict, plan: Plan, default: QuantSpec,
                  precomputed: dict | None = None, method: str = "rtn") -> dict:
    shards = ShardWriter(folder)
    tensors = []
    for entry, qt in iter_quantized(source.weights, plan, precomputed):
        qt = qt or quantize(entry.name, source.weights.tensor(entry.name), entry.spec)  # float32 in bundles
        parts = {part: shards.add(array, f"tensor {entry.name!r} ({part})") for part, array in qt.parts.items()}
        tensors.append({"name": entry.name, "shape": list(qt.shape), "dtype": qt.dtype, "format": entry.spec.format,
                        "spec": entry.spec.to_json(), "matrix": qt.matrix_layout(),
                        "bits_per_weight": round(qt.bits_per_weight, 4), "bytes": qt.nbytes, "parts": parts})
    shard_list = shards.finish()

    row_blocks.attach_parts(model, [e.name for e in plan.entries], list(graph_nodes(model, "table")))
    variants = plan_shaders(model, {e.name: e.spec for e in plan.entries})
    shader_files, file_of = distinct_shaders(variants)
    if shader_files:  # none for a family the runtime runs on the CPU path only
        (folder / "shaders").mkdir()
    for shader in shader_files:
        (folder / shader.file).write_bytes(shader.data)

    files = _copy_files(folder, source, model)
    # the CPU path's wasm kernels, for every format the bundle uses (codebook rows included)
    cpu_kernels = write_cpu_kernels(folder, [e.spec for e in plan.entries])
    files += cpu_kernels["files"].values()  # listed with sha256 like every other file
    runtime_files = sorted(p.name for p in web_runtime_dir().iterdir() if p.suffix in (".js", ".html", ".css"))
    runtime_hashes = {}
    for name in runtime_files:
        shutil.copyfile(web_runtime_dir() / name, folder / name)
        runtime_hashes[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()

    used_formats = sorted({e.spec.format for e in plan.entries})
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "generator": {"name": GENERATOR, "version": __version__},
        "model": {"name": model_name, **model},
        "quantization": {"default": default.to_json(), "method": method,
                         "mixed": len({e.spec for e in plan.entries if e.spec.fmt.quantized}) > 1, **plan.summary()},
        "formats": {name: FORMATS[name].to_manifest() for name in used_formats},
        # the decode tables of every codebook stage, once per bundle (formats.CODEBOOK_STAGES)
        **({"codebooks": manifest_codebooks()} if any(FORMATS[n].levels == "codebook" for n in used_formats) else {}),
        "profiles": [profile_entry(p, variants) for p in PROFILES.values()],
        # per adapter vendor, where a feature's variants run (profiles.FEATURE_POLICY; variants.js)
        "feature_policy": list(FEATURE_POLICY),
        "tensors": tensors,
        "shards": shard_list,
        # shaders: every kernel variant (profile x kernel key) and the file holding its WGSL;
        # shader_files: each distinct WGSL program once (shader_store.py), hashed
        "shaders": [{**variant.to_manifest(), "file": file_of[variant.key]} for variant in variants],
        "shader_files": [{"file": s.file, "bytes": len(s.data), "sha256": s.sha256} for s in shader_files],
        "matmul": {"gemv_max_rows": GEMV_MAX_ROWS, "gemm_large_rows": GEMM_LARGE_ROWS,
                   "split_target_workgroups": SPLIT_TARGET_WORKGROUPS, "split_min_k": SPLIT_MIN_K,
                   # a runtime epilogue's params.act indexes this list (kernels.RUNTIME)
                   "activations": list(EPILOGUE_ACTIVATIONS)},
        "runtime": {"module": "ulpq.js", "page": "index.html", "files": runtime_files, "sha256": runtime_hashes},
        "files": files,
        "wasm": cpu_kernels,
        "demo": demo_section(model),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    case = architecture_of(model).verification_case
    if case is not None:  # computed over the weights as written, read back: what every runtime will run
        manifest["verification"] = case(model, source.folder, load_bundle(folder).weights)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    # With the manifest's generator field, this marker is what lets a later `bundle --out` replace
    # the folder (bundle_reader.foreign_content): a folder without it is never deleted.
    (folder / MARKER).write_text(json.dumps({"generator": GENERATOR}) + "\n", encoding="utf-8")
    return manifest
