"""Decode speed of a 1B-parameter Llama-shaped random model on WebGPU under Node + Dawn (issue 14,
item 6): hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192, vocabulary 128256, tied
head (Llama-3.2-1B's shape), one bundle per format (float32, int8, int4, int2 and a role mix by
default), each timed through its own runtime's generate() (tests/js/bench_decode.mjs): greedy
tokens per second over the decode steps (the prefill apart), next to the bound of the weight bytes
one token reads (every matrix once, the tied head included, plus the KV cache it attends over) over
the copy bandwidth measured on the same device in the same run (copyBufferToBuffer: each copied
byte is read once and written once, so the read bandwidth is taken as 2 x bytes / time).

A word table of 128256 x 2048 is 1 GiB in float32 and 256 MiB in int8: past the 128 MiB that one
WebGPU storage binding (and one shard) holds. Those bundles keep the table (= the LM head) at int4
(group 128) and say so in the table; every other matrix has the named format.

Made for the lent H200 (no network; scripts/gpu_bench_setup.sh sets up Node + Dawn), runs anywhere:
    . scripts/gpu_bench_setup.sh && python3 scripts/bench_gpu_decode.py --out $OUT
    python3 scripts/bench_gpu_decode.py --out /tmp/d --tiny --hardware auto --formats int4 --repeats 1   # smoke test
Writes gpu_decode.json and gpu_decode.md to --out and prints the table last. A bundle's failure is
recorded and the others still run.
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
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DRIVER = REPO / "tests" / "js" / "bench_decode.mjs"
SHAPES = {
    "1b": {"label": "Llama-3.2-1B shape", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 4096},
    "tiny": {"label": "tiny Llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 300, "max_position_embeddings": 256},
}
TOKENIZER_VOCAB = 300  # a byte-level BPE trained on the shipped text: its ids fit any table above
# --profile: Dawn left to round its timestamps rounds them to 65.5 us, longer than most of a step's
# dispatches; this switch (web_runtime/node.js passes ULPQ_DAWN_FLAGS to Dawn) keeps them exact
PROFILE_DAWN_FLAGS = "disable-dawn-features=timestamp_quantization"
TABLE_RULE = {"format": "int4", "groupSize": 128}  # a word table past one binding (see the docstring)
WEIGHT_STD = 0.02
# "mixed": a fixed mix by role (attention and the table/head at int4, the feed-forward at int2), quick
# to build at 1B; "mix:B" asks the planner for B bits per weight (--target-bpw), which calibrates on
# the reference model and takes far longer at 1B.
MIXED_CONFIG = {"format": "int2", "mixedPrecision": {"embeddingBits": 4, "attentionBits": 4}}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_model(shape: dict, folder: Path, seed: int = 0) -> None:
    """A random LlamaForCausalLM folder (config.json, model.safetensors, tokenizer.json), written with
    numpy (no torch: a 1B model in float32 is 5 GB)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    d = h // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * d
    rng = np.random.default_rng(seed)
    tensors = {}

    def matrix(name, rows, cols):
        tensors[name] = (rng.standard_normal((rows, cols), dtype=np.float32) * WEIGHT_STD).astype(np.float32)

    matrix("model.embed_tokens.weight", shape["vocab_size"], h)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, rows, cols in (("self_attn.q_proj", h, h), ("self_attn.k_proj", kv, h), ("self_attn.v_proj", kv, h),
                                 ("self_attn.o_proj", h, h), ("mlp.gate_proj", inter, h), ("mlp.up_proj", inter, h),
                                 ("mlp.down_proj", h, inter)):
            matrix(p + name + ".weight", rows, cols)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[p + norm + ".weight"] = np.ones(h, np.float32)
    tensors["model.norm.weight"] = np.ones(h, np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5,
              "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "float32", "bos_token_id": 1,
              "eos_token_id": 2, **{k: v for k, v in shape.items() if k != "label"}}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    train_tokenizer(folder / "tokenizer.json")


def train_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ulpq_build.calibration import calibration_text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(calibration_text(), trainer)
    tokenizer.save(str(path))


def table_bits(fmt: str) -> float:
    from ulpq_build.formats import FORMATS

    return FORMATS[fmt].bits if fmt in FORMATS else 32.0


def bundle(folder: Path, fmt: str, out: Path, shape: dict, timeout: float) -> dict:
    """`python -m ulpq_build bundle` for one format (mix:B = --target-bpw B); a table past one
    binding at this format kept at int4 by a config rule."""
    from ulpq_build.bundle import SHARD_LIMIT

    if fmt == "mixed":
        config = out.parent / "mixed.json"
        config.write_text(json.dumps(MIXED_CONFIG))
        args = ["--config", str(config)]
    else:
        args = ["--target-bpw", fmt.split(":", 1)[1], "--method", "rtn"] if fmt.startswith("mix:") else ["--format", fmt]
    table_bytes = shape["vocab_size"] * shape["hidden_size"] * (8 if fmt.startswith("mix:") else table_bits(fmt)) / 8
    note = "attention + table int4, feed-forward int2" if fmt == "mixed" else None
    if table_bytes > SHARD_LIMIT and fmt != "mixed":
        config = out.parent / f"table-rule-{fmt.replace(':', '')}.json"
        config.write_text(json.dumps({"rules": [{"pattern": "model.embed_tokens.weight", **TABLE_RULE}]}))
        args += ["--config", str(config)]
        note = "word table / LM head int4 (g128): past one 128 MiB binding"
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "ulpq_build", "bundle", "--model", str(folder), *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bundle {fmt}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return {"seconds": round(time.time() - t0, 1), "note": note}


def bytes_per_token(manifest: dict, context: int) -> dict:
    """What one decode step reads: every linear node's weight parts once (the tied head is the word
    table: read whole there; the embedding lookup's one row is left out), and the K and V of
    `context` cached slots in every layer."""
    model = manifest["model"]
    sizes = {t["name"]: sum(p["length"] for p in t["parts"].values()) for t in manifest["tensors"]}
    nodes = []

    def walk(tree):
        if isinstance(tree, dict):
            if "in_features" in tree:
                nodes.append(tree)
            for key, value in tree.items():
                if key != "kernels":
                    walk(value)
        elif isinstance(tree, list):
            for item in tree:
                walk(item)

    walk(model)
    weights = sum(sizes[n["weight"]] + (sizes[n["bias"]] if n.get("bias") else 0) for n in nodes)
    cache = 2 * model["num_layers"] * model["num_kv_heads"] * model["head_dim"] * 4 * context
    return {"weight_bytes": weights, "cache_bytes": cache, "bits_per_weight": manifest["quantization"].get(
        "quantized_bits_per_weight")}


def machine_facts(node: str) -> dict:
    facts = {"host": platform.node(), "python": platform.python_version()}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30, check=False)
        facts["gpu"], facts["driver"] = [s.strip() for s in q.stdout.strip().splitlines()[0].split(",")]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):  # no NVIDIA GPU here (the smoke test)
        facts["gpu"], facts["driver"] = None, None
    try:
        facts["node"] = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                                       check=False).stdout.strip()
        facts["webgpu"] = subprocess.run([node, "-p", "require('webgpu/package.json').version"], capture_output=True,
                                         text=True, timeout=30, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        facts["node"] = facts.get("node")
    return facts


def table(results: dict) -> str:
    f = results["facts"]
    copy = results.get("copy") or {}
    read = copy.get("traffic_gb_per_s")
    title = (f"Decode speed, {results['label']}, {f.get('gpu')} (driver {f.get('driver')}); node {f.get('node')}, Dawn "
             f"(npm webgpu {f.get('webgpu')}) adapter: {results.get('adapter')}; copy {copy.get('copied_gb_per_s', 0):.0f} GB/s "
             f"copied = {read or 0:.0f} GB/s read+written; {results['new_tokens']} new tokens after {results['prompt_tokens']}, "
             f"median of {results['repeats']}")
    header = ("| bundle | bits/weight | bytes read per token | decode tokens/s | ms/token | bound tokens/s | % of bound | "
              "prefill ms | tokens = numpy | note |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        if row.get("error"):
            lines.append(f"| {row['format']} | | | error: {row['error'][:120]} | | | | | | |")
            continue
        per_token = row["weight_bytes"] + row["cache_bytes"]
        bound = read * 1e9 / per_token if read else None
        tps = row.get("tokens_per_second")
        if row.get("features") is not None:  # the optional-feature kernels that ran (None: a runtime before them)
            row["note"] = "; ".join(filter(None, [row.get("note"), f"kernels: {', '.join(row['features']) or 'base'}"]))
        lines.append(f"| {row['format']} | {row.get('bits_per_weight')} | {per_token / 1e6:.1f} MB | "
                     f"{tps:.1f} | {1000 / tps:.2f} | {bound:.0f} | {100 * tps / bound:.0f}% | {row['prefill_ms']:.1f} | "
                     f"{row['matches_reference']} | {row.get('note') or ''} |" if tps and bound else
                     f"| {row['format']} | {row.get('bits_per_weight')} | {per_token / 1e6:.1f} MB | {tps} | | | | "
                     f"{row.get('prefill_ms')} | {row.get('matches_reference')} | path {row.get('path')}; {row.get('note') or ''} |")
    return "\n".join(lines)


def before_twin(row: dict, runtime: Path, rows: list) -> dict:
    """The same bundle under an earlier runtime (its *.js from `runtime`, e.g. `git archive` of an older
    commit's web_runtime/): the shards and shaders hard-linked, so the two differ only in JavaScript
    and are timed in one run."""
    src = Path(row["dir"])
    dst = src.with_name(src.name + "-before")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, copy_function=os.link)
    for js in runtime.glob("*.js"):
        (dst / js.name).unlink(missing_ok=True)
        shutil.copyfile(js, dst / js.name)
    twin = {**row, "format": f"{row['format']} (before)", "dir": str(dst)}
    rows.insert(rows.index(row), twin)
    return twin


def base_twin(row: dict, rows: list) -> dict:
    """The same bundle run with no optional WebGPU feature (its base kernels), in the same run."""
    twin = {**row, "format": f"{row['format']} (base kernels)", "features": []}
    rows.insert(rows.index(row) + 1, twin)
    return twin


def profile_text(results: dict) -> str:
    """Per bundle with a profile: the read-back round trip and the decode step's kernels, costliest first."""
    out = []
    for row in results["rows"]:
        prof = row.get("step_profile")
        if not prof:
            continue
        if prof.get("error"):
            out.append(f"\n{row['format']}: no step profile ({prof['error']})")
            continue
        trip = row.get("round_trip") or {}
        out.append(f"\n{row['format']}: one decode step, {prof['dispatches']} dispatches, {prof['total_us']:.0f} us of kernels "
                   f"(each timed in its own pass); submit + 4-byte read-back round trip {trip.get('median_ms', 0):.3f} ms "
                   f"(min {trip.get('min_ms', 0):.3f})\n\n| kernel | dispatches | us | us each |\n|---|---|---|---|")
        for name, k in sorted(prof["by_kernel"].items(), key=lambda kv: -kv[1]["us"]):
            out.append(f"| {name} | {k['count']} | {k['us']:.1f} | {k['us'] / k['count']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/ulpq-gpu-decode"), help="the model and its bundles")
    p.add_argument("--tiny", action="store_true", help="a tiny model instead (smoke test)")
    p.add_argument("--formats", default="float32,int8,int4,int2,mixed",
                   help="bundle formats; mixed: MIXED_CONFIG; mix:B = --target-bpw B (the planner: slow at 1B)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--node", default=os.environ.get("NODE") or shutil.which("node") or "node")
    p.add_argument("--hardware", default="webgpu", help="the runtime's hardware option (webgpu: fail rather than fall back)")
    p.add_argument("--jobs", type=int, default=3, help="bundles built at once")
    p.add_argument("--timeout-s", type=float, default=1800, help="per bundle build and for the Node run")
    p.add_argument("--before-runtime", type=Path, default=None,
                   help="a folder of an earlier runtime's *.js: each bundle is also timed under it, in the same run")
    p.add_argument("--base-kernels", action="store_true",
                   help="also time each bundle with the optional-feature kernels (subgroups, shader-f16) off")
    p.add_argument("--profile", action="store_true",
                   help="also time each kernel of one decode step and the submit/read-back round trip (printed after the table)")
    args = p.parse_args(argv)

    shape = SHAPES["tiny" if args.tiny else "1b"]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results = {"facts": machine_facts(args.node), "label": shape["label"], "shape": shape, "formats": formats,
               "new_tokens": args.new_tokens, "prompt_tokens": args.prompt_tokens, "repeats": args.repeats,
               "rows": [], "errors": []}
    log(f"facts: {results['facts']}")
    folder = args.work / "hf"
    t0 = time.time()
    make_model(shape, folder)
    log(f"model written in {time.time() - t0:.0f} s")
    rows = [{"format": fmt, "dir": str(args.work / f"bundle-{fmt.replace(':', '')}")} for fmt in formats]
    results["rows"] = rows

    def build(row):
        try:
            row.update(bundle(folder, row["format"], Path(row["dir"]), shape, args.timeout_s))
            manifest = json.loads((Path(row["dir"]) / "manifest.json").read_text())
            row.update(bytes_per_token(manifest, args.prompt_tokens + args.new_tokens // 2))
            log(f"built {row['format']}: {row['seconds']} s")
        except (OSError, RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            row["error"] = str(exc)
            log(f"FAILED {row['format']}: {exc}")

    # a few at a time: bundling a 1B model holds its float64 reference weights (~10 GB) for the check
    with cf.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(build, rows))
    built = [r for r in rows if not r.get("error")]
    if args.base_kernels:
        # each bundle again with the optional-feature kernels (subgroups, shader-f16) turned off
        built = [twin for row in built for twin in (row, base_twin(row, rows))]
    if args.before_runtime:
        built = [twin for row in built for twin in (before_twin(row, args.before_runtime, rows), row)]
    # One Node process per bundle: Dawn (wgpudawn, from Python) on the H200 was measured slowing every
    # GEMV 3-5x after about six timings in one process (scripts/bench_kernels.py --isolate); should
    # Dawn under Node do the same, the bundles timed last in one process would pay for the ones before.
    prompt = [(7 * i + 11) % TOKENIZER_VOCAB for i in range(args.prompt_tokens)]
    copies = []
    for index, row in enumerate(built):
        request = {"bundles": [{"name": row["format"], "dir": row["dir"], "features": row.get("features")}],
                   "prompt_ids": prompt, "new_tokens": args.new_tokens, "repeats": args.repeats,
                   "hardware": args.hardware, "profile": args.profile}
        req = args.work / f"request-{index}.json"
        req.write_text(json.dumps(request))
        env = {**os.environ, **({"ULPQ_DAWN_FLAGS": PROFILE_DAWN_FLAGS} if args.profile else {})}
        proc = subprocess.run([args.node, str(DRIVER), str(req)], capture_output=True, text=True, timeout=args.timeout_s,
                              check=False, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            results["errors"].append(f"node ({row['format']}): exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            row["error"] = f"node exited {proc.returncode}"
            continue
        got = json.loads(lines[-1])
        webgpu = got.get("webgpu") or {}
        results.setdefault("adapter", webgpu.get("adapter") or f"none ({webgpu.get('reason')})")
        if got.get("copy"):
            copies.append(got["copy"])
        entry = got["bundles"][0]
        row.update({k: entry.get(k) for k in ("error", "path", "variant", "tokens_per_second", "prefill_ms",
                                              "matches_reference", "init_ms", "load_ms", "cache_slots", "first",
                                              "runs", "notes", "gpu_memory", "round_trip", "step_profile", "features")})
        if entry.get("runs"):
            row["tokens_per_second_spread"] = [min(r["tokens_per_second"] for r in entry["runs"]),
                                               max(r["tokens_per_second"] for r in entry["runs"])]
            row["decode_median_check"] = statistics.median(r["tokens_per_second"] for r in entry["runs"])
    # each process measures the copy rate once; the fastest is the least disturbed (a shared GPU only slows it)
    results["copy"] = max(copies, key=lambda c: c["copied_gb_per_s"]) if copies else None
    text = table(results) + profile_text(results)
    (args.out / "gpu_decode.json").write_text(json.dumps(results, indent=1))
    (args.out / "gpu_decode.md").write_text(text + "\n")
    for error in results["errors"]:
        log(f"error: {error}")
    print(text)
    return 0 if all(not r.get("error") for r in results["rows"]) and not results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
