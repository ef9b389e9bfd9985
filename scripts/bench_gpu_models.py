"""Whole-model GPU benchmark (issue 10, item 5): random-weight BERTs of real shapes, side by side in
ONE run on one machine:
  - this runtime under Node + Dawn (the bundle's own node.js; tests/js/bench_node_model.mjs), one
    bundle per format (float32, int8, int4, int2 by default);
  - ONNX Runtime's WebGPU EP through onnxruntime-node (tests/js/bench_ort.mjs) on the same weights
    exported with torch.onnx, float32 and 4-bit MatMulNBits (block 32, symmetric);
  - PyTorch eager on CUDA, float32 and float16 (CUDA events).
Every engine computes the same thing: BERT, then mean pooling over the tokens (what a plain BERT
bundle outputs). Times are medians of --repeats runs after warm-up; "first" is the first run at a
new shape; "init" is the runtime's initialisation after its shards are in memory.

Made for the lent H200 (no network; see scripts/gpu_bench_setup.sh for what travels), runs anywhere:
    python3 scripts/bench_gpu_models.py --out $OUT                   # the full run (~6 min on an H200)
    python3 scripts/bench_gpu_models.py --out /tmp/b --tiny --device cpu --repeats 3   # a smoke test
Writes gpu_models.json and gpu_models.md to --out and prints the table last. One engine's failure
is recorded and the others still run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
JS = REPO / "tests" / "js"
MODELS = {
    "minilm": dict(label="MiniLM shape", num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(label="BERT-base shape", num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(label="tiny BERT", num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128),
}
VOCAB = 30522
MAX_POSITIONS = 512
SPECIALS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
FIRST_WORD = 104  # ids from here on are four-letter words, so any text of them has an exact token count


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def word(k: int) -> str:
    return "".join(chr(97 + (k // 26 ** p) % 26) for p in (3, 2, 1, 0))


def write_vocab(folder: Path) -> None:
    lines = [f"[unused{i}]" for i in range(FIRST_WORD)]
    for name, index in SPECIALS.items():
        lines[index] = name
    lines += [word(k) for k in range(VOCAB - FIRST_WORD)]
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n")


def token_ids(batch: int, tokens: int) -> np.ndarray:
    """The ids tests/js/bench_node_model.mjs's texts tokenize to: [CLS] words [SEP]."""
    words = VOCAB - FIRST_WORD
    ids = np.empty((batch, tokens), np.int64)
    for b in range(batch):
        ids[b, 0], ids[b, -1] = SPECIALS["[CLS]"], SPECIALS["[SEP]"]
        ids[b, 1:-1] = [FIRST_WORD + (b * 7919 + i * 104729) % words for i in range(tokens - 2)]
    return ids


# --- the models ---------------------------------------------------------------------------------

def make_model(name: str, folder: Path, seed: int):
    """A random-weight BertModel saved as a Hugging Face folder (config, safetensors, vocab.txt)."""
    import torch
    from transformers import BertConfig, BertModel

    shape = {k: v for k, v in MODELS[name].items() if k != "label"}
    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2, **shape)
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm" in pname:
                p.copy_((1.0 if pname.endswith("weight") else 0.0) + 0.02 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.02)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    write_vocab(folder)
    return model


class MeanPooled:
    """forward(input_ids, attention_mask, token_type_ids) by keyword (transformers 5 changed the
    positional order), then mean pooling over the unmasked tokens: what a plain BERT bundle outputs."""

    def __new__(cls, bert):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        return Wrapped().eval()


# --- building: bundles and ONNX files -----------------------------------------------------------

# "mixed": a mixed-precision config needing no calibration data (the SDK's options: 3-bit fitted
# levels in groups of 32, embeddings at 4 bits, first and last layers at 8, attention at 4), so
# random models can show what mixing formats costs at initialisation and per run.
MIXED_CONFIG = {"bitsPerWeight": 3, "distributeOptimalValues": True, "groupSize": 32,
                "mixedPrecision": {"embeddingBits": 4, "firstLayerBits": 8, "lastLayerBits": 8, "attentionBits": 4}}


def bundle(folder: Path, fmt: str, out: Path) -> dict:
    if fmt == "mixed":
        config = out.parent / "mixed.json"
        config.write_text(json.dumps(MIXED_CONFIG))
        args = ["--config", str(config)]
    else:
        args = ["--target-bpw", fmt.split(":", 1)[1]] if fmt.startswith("mix:") else ["--format", fmt]
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "ulpq_build", "bundle", "--model", str(folder), *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bundle {fmt}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    size = sum(p.stat().st_size for p in out.glob("*.bin"))
    return {"seconds": round(time.time() - t0, 1), "shard_bytes": size}


_EXPORT_LOCK = threading.Lock()  # torch.onnx.export traces with global state: one at a time


def export_onnx(model, folder: Path) -> dict:
    """fp32 (opset 17, IR version <= 13 for onnxruntime-node) and its 4-bit MatMulNBits version."""
    with _EXPORT_LOCK:
        return _export_onnx(model, folder)


def _export_onnx(model, folder: Path) -> dict:
    import onnx
    import torch

    files = {}
    fp32 = folder / "model.onnx"
    ids = torch.from_numpy(token_ids(1, 8))
    wrapped = MeanPooled(model.float().cpu())
    with torch.no_grad():
        torch.onnx.export(wrapped, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embeddings"],
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask", "token_type_ids")}
                          | {"embeddings": {0: "batch"}}, opset_version=17, dynamo=False)
    m = onnx.load(str(fp32))
    m.ir_version = min(m.ir_version, 13)
    onnx.save(m, str(fp32))
    files["fp32"] = str(fp32)
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    q = MatMulNBitsQuantizer(m, block_size=32, is_symmetric=True)
    q.process()
    q4 = q.model.model
    q4.ir_version = min(q4.ir_version, 13)
    int4 = folder / "model_int4.onnx"
    onnx.save(q4, str(int4))
    files["int4"] = str(int4)
    return files


# --- engines ------------------------------------------------------------------------------------

def ours_times(args, name: str, bundles: list[dict], request: dict, timeout: float) -> dict:
    """This runtime on every bundle: all in one Node process, or with --cold-driver-cache each in its own
    process over an empty driver shader cache, so that every initialisation compiles all of its
    pipelines (cold against cold; in one process, or with the driver's cache, a bundle reuses what an
    earlier one compiled: float32's operators, the same packed format)."""
    script = JS / "bench_node_model.mjs"
    if not args.cold_driver_cache:
        return run_node_script(args.node, script, {"bundles": bundles, **request}, args.work, f"ours_{name}", timeout=timeout)
    got = {"bundles": []}
    for i, b in enumerate(bundles):
        cache = Path(tempfile.mkdtemp(prefix="driver-cache-", dir=args.work))
        # NVIDIA's driver and Mesa's each keep compiled shaders on disk, keyed by their code
        env = {"__GL_SHADER_DISK_CACHE_PATH": str(cache), "MESA_SHADER_CACHE_DIR": str(cache)}
        one = run_node_script(args.node, script, {"bundles": [b], **request}, args.work, f"ours_{name}_{i}",
                              timeout=timeout / len(bundles), env=env)
        got = {**one, "bundles": got["bundles"] + one["bundles"]}
    return got


def run_node_script(node: str, script: Path, request: dict, work: Path, name: str, timeout: float,
                    env: dict | None = None) -> dict:
    req = work / f"{name}_request.json"
    req.write_text(json.dumps(request))
    try:
        proc = subprocess.run([node, str(script), str(req)], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        sys.stdout.write(said[-4000:])
        raise RuntimeError(f"{script.name} stopped after {timeout:.0f} s (out of time); see the log for what it measured") from None
    sys.stdout.write(proc.stderr[-4000:])
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    return json.loads(lines[-1])


def torch_times(model, shapes, repeats: int, warmup: int, device: str, dtype: str, warmup_s: float = 0.0) -> dict:
    import torch

    tdtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    m = MeanPooled(model.to(device=device, dtype=tdtype))
    out = {}
    with torch.inference_mode():
        for batch, tokens in shapes:
            ids = torch.from_numpy(token_ids(batch, tokens)).to(device)
            args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
            times = []
            try:
                warm_start, warm_runs = time.perf_counter(), 0  # at least `warmup` runs and `warmup_s` seconds of them
                while warm_runs < warmup or (time.perf_counter() - warm_start < warmup_s and warm_runs < 5000):
                    m(*args)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    warm_runs += 1
                for i in range(repeats):
                    if device == "cuda":
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        y = m(*args)
                        end.record()
                        torch.cuda.synchronize()
                        ms = start.elapsed_time(end)
                    else:
                        t0 = time.perf_counter()
                        y = m(*args)
                        ms = (time.perf_counter() - t0) * 1000
                    times.append(ms)
                out[f"{batch}x{tokens}"] = {"median_ms": statistics.median(times), "output": y.float().cpu().numpy()}
            except Exception as exc:  # one shape's failure (e.g. fp16 on a CPU) is recorded, not fatal
                out[f"{batch}x{tokens}"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    model.to(dtype=torch.float32)
    return out


def cosine_min(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


# --- report -------------------------------------------------------------------------------------

def machine_facts(node: str | None) -> dict:
    facts = {"machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores", "python": platform.python_version()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        facts["gpu"], facts["driver"] = [s.strip() for s in q.stdout.splitlines()[0].split(",")]
    except Exception:
        facts["gpu"], facts["driver"] = "none (nvidia-smi absent)", "-"
    for mod in ("torch", "transformers", "onnx", "onnxruntime"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception:
            facts[mod] = None
    if node:
        try:
            facts["node"] = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:
            facts["node"] = None
    return facts


def first_cell(shape) -> str:
    """A first run's time, marked `reused` when it ran on GPU objects an earlier shape had made and
    `grown` when it had to enlarge an earlier layout's buffers (new buffers and bind groups)."""
    if not shape:
        return "-"
    mark = {"none": " (reused)", "grown": " (grown)"}.get(shape.get("first_made"), "")
    return fmt_ms(shape.get("first_ms")) + mark


def fmt_ms(value) -> str:
    return "-" if value is None else (f"{value:.2f}" if value < 100 else f"{value:.0f}")


def table(results: dict, formats: list[str]) -> str:
    f = results["facts"]
    lines = [f"Whole-model benchmark, {f.get('gpu')} (driver {f.get('driver')}); node {f.get('node')}, Dawn (npm webgpu "
             f"{results.get('webgpu_version')}) adapter: {results.get('adapter')}; onnxruntime-node {results.get('ort_version')}; "
             f"torch {f.get('torch')}, transformers {f.get('transformers')}. Medians of {results['repeats']} runs after at least "
             f"{results.get('warmup_s', 0)} s of warm-up runs per shape, ms."
             + (" Each bundle of this runtime in its own process over an empty driver shader cache (every pipeline "
                "compiled: a first visit)." if results.get("cold_driver_cache") else ""), ""]
    head = ["model, batch x tokens", *[f"ours {x}" for x in formats], "ORT fp32", "ORT int4", "torch fp32", "torch fp16",
            "ORT/ours fp32", "ORT int4/ours int4"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, per in results["models"].items():
        for shape, row in per["rows"].items():
            ours = [row.get(f"ours {x}") for x in formats]
            ort32, ort4 = row.get("ORT fp32"), row.get("ORT int4")
            ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
            cells = [f"{MODELS[model]['label']} {shape}", *map(fmt_ms, ours), fmt_ms(ort32), fmt_ms(ort4),
                     fmt_ms(row.get("torch fp32")), fmt_ms(row.get("torch fp16")),
                     ratio(ort32, row.get("ours float32")), ratio(ort4, row.get("ours int4"))]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "First run at a new shape and initialisation (ms), this runtime. The backend starts when the",
              "manifest is read, while the shards load; init is the time from the shards in memory to ready, and",
              "load the time before that (reading and checking the shards). In brackets, the backend's stages from",
              "its start: device / shaders fetched and pipelines started / waiting for the shards / weight upload",
              "(pipelines compile meanwhile) / pipelines still compiling after the upload / self-test:", ""]
    lines += ["| model, format | load | init (shards in memory) | " + " | ".join(f"first {s}" for s in results["shapes"]) + " |",
              "|" + "---|" * (3 + len(results["shapes"]))]
    for model, per in results["models"].items():
        for fmt, b in per.get("ours", {}).items():
            firsts = {f"{s['batch']}x{s['tokens']}": s for s in b.get("shapes", [])}
            parts = b.get("init_parts") or {}
            split = "/".join(fmt_ms(parts.get(k)) for k in ("device_ms", "shaders_ms", "weights_wait_ms", "upload_ms",
                                                            "compile_ms", "self_test_ms"))
            ready = list((b.get("pipeline_ready_ms") or {}).values())
            if ready:
                split += f"; {len(ready)} pipelines, the last ready {fmt_ms(max(ready))} after the first was started"
            lines.append(f"| {MODELS[model]['label']} {fmt} ({b.get('path')}, {b.get('variant')}) | {fmt_ms(b.get('load_ms'))} | "
                         f"{fmt_ms(b.get('init_ms'))} ({split}) | "
                         + " | ".join(first_cell(firsts.get(s)) for s in results["shapes"]) + " |")
    lines += ["", "A new shape two tokens shorter than each shape above (same batch), right after it: its first",
              "run / its steady median (wall ms, with tokenization), and what that first run made: `reused`",
              "(nothing: it ran on the GPU objects of the shape before), `grown` (larger buffers and new",
              "bind groups for a layout made before) or `new` (a new layout):", "",
              "| model, format | " + " | ".join(f"{s} -2 tokens" for s in results["shapes"]) + " |",
              "|" + "---|" * (1 + len(results["shapes"]))]
    for model, per in results["models"].items():
        for fmt, b in per.get("ours", {}).items():
            near = {f"{s['batch']}x{s['tokens']}": s.get("near") for s in b.get("shapes", [])}
            cell = lambda n: (f"{fmt_ms(n['first_ms'])} / {fmt_ms(n['median_wall_ms'])} "
                              f"({ {'none': 'reused', 'grown': 'grown'}.get(n.get('made'), 'new') })") if n else "-"
            lines.append(f"| {MODELS[model]['label']} {fmt} | " + " | ".join(cell(near.get(s)) for s in results["shapes"]) + " |")
    if results["checks"]:
        lines += ["", "Agreement with torch fp32 (lowest cosine over the batch, first shape): "
                  + "; ".join(f"{k} {v:.6f}" for k, v in results["checks"].items())]
    if results["errors"]:
        lines += ["", "Errors:"] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="where gpu_models.json and gpu_models.md go")
    p.add_argument("--work", type=Path, default=Path("/tmp/ulpq-gpu-bench"), help="models, bundles, ONNX files")
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--tiny", action="store_true", help="one tiny model instead (smoke test)")
    p.add_argument("--formats", default="float32,int8,int4,int2", help="bundle formats; mix:B = --target-bpw B")
    p.add_argument("--shapes", default="1x8,1x128,8x18,8x128")
    p.add_argument("--engines", default="ours,ort,torch")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--warmup-s", type=float, default=1.0,
                   help="and warm up each shape for at least this many seconds, every engine alike (on the H200 every "
                        "kernel ran 2-10x slow for 0.1-0.4 s after a setup, longer than 30 small runs take)")
    p.add_argument("--node", default=shutil.which("node") or "node")
    p.add_argument("--hardware", default="webgpu", help="this runtime's hardware option (webgpu: fail rather than fall back)")
    p.add_argument("--profile", default=None, help="this runtime's shader profile (chrome, firefox, safari); default: "
                   "the runtime's choice (Dawn under Node: chrome)")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--ort-ep", default="webgpu")
    p.add_argument("--base-kernels", action="store_true",
                   help="also time each bundle with the optional-feature kernels (subgroups, shader-f16) off: columns '<format> base'")
    p.add_argument("--cold-driver-cache", action="store_true",
                   help="time each bundle in its own Node process over an empty driver shader cache: every "
                        "initialisation compiles all of its pipelines (a page's first visit)")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="bundles built at once")
    p.add_argument("--budget-s", type=float, default=500, help="whole run; each Node process gets a share and is stopped "
                   "when out of time, so the table is always printed")
    args = p.parse_args(argv)

    models = ["tiny"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    engines = set(args.engines.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results = {"facts": machine_facts(args.node), "repeats": args.repeats, "warmup_s": args.warmup_s, "cold_driver_cache": args.cold_driver_cache, "shapes": [f"{b}x{t}" for b, t in shapes],
               "formats": formats, "models": {}, "checks": {}, "errors": [], "adapter": None, "build": {}}
    try:
        results["webgpu_version"] = subprocess.run([args.node, "-p", "require('webgpu/package.json').version"], capture_output=True,
                                                   text=True, timeout=30).stdout.strip() or None
        results["ort_version"] = subprocess.run([args.node, "-p", "require('onnxruntime-node/package.json').version"],
                                                capture_output=True, text=True, timeout=30).stdout.strip() or None
    except Exception as exc:
        results["errors"].append(f"node versions: {exc}")
    log(f"facts: {results['facts']}")

    t_start = time.time()
    deadline = t_start + args.budget_s
    share = lambda cap: max(20.0, min(cap, deadline - time.time() - 20))  # noqa: E731
    torch_models = {}
    # Build everything first, in parallel on the CPUs: bundles per format, ONNX per model.
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        pending = {}
        for i, name in enumerate(models):
            folder = args.work / name / "hf"
            try:
                torch_models[name] = make_model(name, folder, seed=i)
            except Exception as exc:
                results["errors"].append(f"{name}: model not made: {exc}")
                traceback.print_exc()
                continue
            results["models"][name] = {"rows": {f"{b}x{t}": {} for b, t in shapes}, "ours": {}}
            if "ours" in engines:
                for fmt in formats:
                    pending[pool.submit(bundle, folder, fmt, args.work / name / f"bundle-{fmt.replace(':', '')}")] = (name, fmt)
            if "ort" in engines:
                pending[pool.submit(export_onnx, torch_models[name], args.work / name)] = (name, "onnx")
        for fut in cf.as_completed(pending):
            name, what = pending[fut]
            try:
                results["build"][f"{name} {what}"] = fut.result()
                log(f"built {name} {what}: {results['build'][f'{name} {what}']}")
            except Exception as exc:
                results["errors"].append(f"{name} {what}: build failed: {exc}")
                log(f"FAILED {name} {what}: {exc}")
    log(f"build done in {time.time() - t_start:.0f} s")
    keep = [list(shapes[0])]
    ids = {f"{b}x{t}": token_ids(b, t).tolist() for b, t in shapes}
    reference = {}

    if "torch" in engines:
        for name, model in torch_models.items():
            for dtype in ("fp32", "fp16"):
                try:
                    got = torch_times(model, shapes, args.repeats, args.warmup, args.device, dtype, args.warmup_s)
                    for shape, r in got.items():
                        results["models"][name]["rows"][shape][f"torch {dtype}"] = r.get("median_ms")
                        if "error" in r:
                            results["errors"].append(f"torch {dtype} {name} {shape}: {r['error']}")
                    if dtype == "fp32":
                        reference[name] = got[f"{shapes[0][0]}x{shapes[0][1]}"].get("output")
                    log(f"torch {dtype} {name}: " + ", ".join(f"{s} {fmt_ms(r.get('median_ms'))}" for s, r in got.items()))
                except Exception as exc:
                    results["errors"].append(f"torch {dtype} {name}: {type(exc).__name__}: {exc}".splitlines()[0])
                    traceback.print_exc()
        for model in torch_models.values():
            model.cpu()
        try:
            import torch
            torch.cuda.empty_cache()
        except Exception:
            pass

    if "ours" in engines:
        for name in results["models"]:
            bundles = [{"name": fmt, "dir": str(args.work / name / f"bundle-{fmt.replace(':', '')}")} for fmt in formats
                       if f"{name} {fmt}" in results["build"]]
            if args.base_kernels:  # each bundle again with its optional-feature kernels (subgroups, shader-f16) off
                bundles += [{**b, "name": f"{b['name']} base", "features": []} for b in bundles]
            if not bundles:
                continue
            try:
                request = {"shapes": shapes, "repeats": args.repeats, "warmup": args.warmup, "warmup_s": args.warmup_s,
                           "hardware": args.hardware, "profile": args.profile, "keep_outputs": keep}
                got = ours_times(args, name, bundles, request, timeout=share(0.3 * args.budget_s))
                webgpu = got.get("webgpu") or {}
                results["adapter"] = webgpu.get("adapter") or f"none ({webgpu.get('reason')})"
                for b in got["bundles"]:
                    outputs = [s.pop("output", None) for s in b.get("shapes", [])]
                    results["models"][name]["ours"][b["name"]] = b
                    if b.get("error"):
                        results["errors"].append(f"ours {name} {b['name']}: {b['error']}")
                    for s in b.get("shapes", []):
                        key = f"{s['batch']}x{s['tokens']}"
                        results["models"][name]["rows"][key][f"ours {b['name']}"] = s.get("median_ms")
                        if s.get("error"):
                            results["errors"].append(f"ours {name} {b['name']} {key}: {s['error']}")
                        elif s.get("path") != "webgpu" and args.hardware != "cpu":
                            results["errors"].append(f"ours {name} {b['name']} {key}: ran on {s.get('path')}: {b.get('notes')}")
                    if outputs and outputs[0] is not None and reference.get(name) is not None:
                        results["checks"][f"ours {name} {b['name']}"] = cosine_min(outputs[0], reference[name])
            except Exception as exc:
                results["errors"].append(f"ours {name}: {type(exc).__name__}: {exc}".splitlines()[0])
                traceback.print_exc()

    if "ort" in engines:
        for name in results["models"]:
            build = results["build"].get(f"{name} onnx")
            if not build:
                continue
            try:
                got = run_node_script(args.node, JS / "bench_ort.mjs",
                                      {"models": [{"name": k, "file": v} for k, v in build.items()], "shapes": shapes,
                                       "repeats": args.repeats, "warmup": args.warmup, "warmup_s": args.warmup_s, "ep": args.ort_ep, "keep_outputs": keep,
                                       "ids": ids}, args.work, f"ort_{name}", timeout=share(0.2 * args.budget_s))
                for m in got["models"]:
                    results["models"][name].setdefault("ort", {})[m["name"]] = m
                    if m.get("error"):
                        results["errors"].append(f"ORT {name} {m['name']}: {m['error']}")
                    for s in m.get("shapes", []):
                        key = f"{s['batch']}x{s['tokens']}"
                        output = s.pop("output", None)
                        results["models"][name]["rows"][key][f"ORT {m['name']}"] = s.get("median_ms")
                        if s.get("error"):
                            results["errors"].append(f"ORT {name} {m['name']} {key}: {s['error']}")
                        if output is not None and reference.get(name) is not None:
                            results["checks"][f"ORT {name} {m['name']}"] = cosine_min(output, reference[name])
            except Exception as exc:
                results["errors"].append(f"ORT {name}: {type(exc).__name__}: {exc}".splitlines()[0])
                traceback.print_exc()

    results["seconds"] = round(time.time() - t_start, 1)
    text = table(results, formats + ([f"{f} base" for f in formats] if args.base_kernels else []))
    (args.out / "gpu_models.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "gpu_models.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
