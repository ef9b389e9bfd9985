"""Every weight format of the registry through decoder bundles, in real browsers, on WebGPU and on the
CPU path (issue 14: "tokens identical to the numpy reference for 32 greedy steps for every format's
bundle, in Chromium and Firefox on WebGPU and on the CPU path, for the trained model and random
GPT-2 and Llama shapes").

For each model and format (plus a planned mix), `bundle` writes a decoder bundle, whose manifest
carries the numpy reference's 32 greedy tokens over the bundle's own weights; each browser then
runs `verify`'s check with the path asked for (`hardware=webgpu` / `hardware=cpu`) and counts the
tokens that differ. The CI tests run float32/int8/int4 of small random models; this script is the
whole matrix (minutes per browser on a 2-core machine).

    python scripts/verify_decoder_formats.py [--models trained,llama,gpt2] [--formats all] [--mix 2.5]
        [--browsers chromium,firefox] [--paths webgpu,cpu] [--work .bench/decoder-formats] [--reuse]
        [--write-docs docs/benchmarks.md]

Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ulpq_build.browser_check import check_in_browser
from ulpq_build.browsers import launch
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.cli import main as cli_main
from ulpq_build.formats import FORMATS
from ulpq_build.markdown import write_section
from ulpq_build.serve import BundleServer

TRAINED = ROOT / "ulpq_build/models/llama-pydoc"
# random models share the trained model's tokenizer (4096 ids); weights scaled so greedy decoding varies
RANDOM_SHAPE = {"hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 2, "num_attention_heads": 8,
                    "num_key_value_heads": 2, "max_position_embeddings": 256}
WEIGHT_SCALE = 0.15


def random_model(name: str, folder: Path, seed: int = 0) -> Path:
    """A random-weight Llama (grouped-query attention, untied head) or GPT-2 with the trained model's
    tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    vocab = json.loads((TRAINED / "config.json").read_text())["vocab_size"]
    config = (LlamaConfig(**RANDOM_SHAPE, vocab_size=vocab, tie_word_embeddings=False) if name == "llama" else
              GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=vocab, n_positions=256))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            is_norm = p.dim() == 1 and ("norm" in pname or "ln_" in pname) and pname.endswith("weight")
            p.copy_(1 + 0.1 * torch.randn_like(p) if is_norm else WEIGHT_SCALE * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    for extra in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(TRAINED / extra, folder / extra)
    return folder


def build(models: list[str], formats: list[str], mix: float | None, work: Path, method: str, reuse: bool = False) -> list[dict]:
    """Every bundle under work/site (`reuse`: the random models and bundles a run before left there
    whole are kept, so a run cut short resumes; anything else is rebuilt)."""
    site, sources = work / "site", work / "models"
    if not reuse:
        shutil.rmtree(work, ignore_errors=True)
    site.mkdir(parents=True, exist_ok=True)
    sources.mkdir(exist_ok=True)
    rows = []
    for name in models:
        kept = reuse and (sources / name / "config.json").is_file() and (sources / name / "tokenizer.json").is_file()
        folder = TRAINED if name == "trained" else (sources / name if kept else random_model(name, sources / name))
        options = [(fmt, ["--format", fmt]) for fmt in formats]
        if mix:
            options.append((f"mix {mix}", ["--target-bpw", str(mix)]))
        for label, args in options:
            out = site / f"{name}-{label.replace(' ', '-')}"
            code = 0 if reuse and (out / "manifest.json").is_file() else cli_main(
                ["bundle", "--model", str(folder), "--out", str(out), "--method", method, *args])
            if code != 0:
                rows.append({"model": name, "format": label, "error": f"bundle exited {code}"})
                continue
            manifest = json.loads((out / "manifest.json").read_text())
            rows.append({"model": name, "format": label, "folder": out, "bits": manifest["quantization"]["bits_per_weight"]})
    return rows


def check(rows: list[dict], browsers: list[str], paths: list[str], site: Path) -> list[dict]:
    results = []
    server = BundleServer(site, 0).start_in_background()
    try:
        for browser in browsers:
            session = launch(browser)
            try:
                for row in rows:
                    if "error" in row:
                        continue
                    bundle = load_bundle(row["folder"])
                    for path in paths:
                        r = check_in_browser(session, f"{server.url}{row['folder'].name}/index.html", bundle, browser,
                                             query=f"&hardware={path}")
                        ok = r.passed and r.error is None and r.path == path
                        results.append({**{k: row[k] for k in ("model", "format", "bits")}, "browser": browser,
                                        "asked": path, "path": r.path, "variant": r.variant, "differing": r.value,
                                        "error": r.error, "passed": ok})
                        print(f"{browser:8s} {path:6s} {row['model']:8s} {row['format']:13s} -> path {r.path}, "
                              f"{r.value} token(s) differing{', ' + r.error if r.error else ''}: {'PASS' if ok else 'FAIL'}",
                              flush=True)
            finally:
                session.close()
    finally:
        server.shutdown()
        server.server_close()
    return results


def table(results: list[dict], rows: list[dict], browsers: list[str], paths: list[str]) -> str:
    cols = [(b, p) for b in browsers for p in paths]
    lines = ["| model | format | bits/param | " + " | ".join(f"{b} {p}" for b, p in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for b, p in cols:
            hit = [r for r in results if (r["model"], r["format"], r["browser"], r["asked"]) == (row["model"], row["format"], b, p)]
            if "error" in row:
                cells.append(row["error"])
            elif not hit:
                cells.append("-")
            else:
                r = hit[0]
                why = (r["error"] or f"{r['differing']} differing").replace("|", "/")[:120]
                cells.append(f"{r['differing']:.0f} differing" if r["passed"] else f"FAIL ({why}, path {r['path']})")
        bits = f"{row['bits']:.2f}" if row.get("bits") else "-"
        lines.append(f"| {row['model']} | {row['format']} | {bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="trained,llama,gpt2")
    p.add_argument("--formats", default="all", help="registry formats, comma-separated, or all")
    p.add_argument("--mix", type=float, default=2.5, help="also a planned mix at this many bits per weight (0: none)")
    p.add_argument("--method", default="rtn", help="bundle --method (rtn is fast; the check holds for any method)")
    p.add_argument("--browsers", default="chromium,firefox")
    p.add_argument("--paths", default="webgpu,cpu")
    p.add_argument("--work", type=Path, default=ROOT / ".bench/decoder-formats")
    p.add_argument("--write-docs", type=Path)
    p.add_argument("--reuse", action="store_true", help="keep the random models and whole bundles a run before left in --work")
    args = p.parse_args()
    formats = list(FORMATS) if args.formats == "all" else args.formats.split(",")
    browsers, paths = args.browsers.split(","), args.paths.split(",")
    rows = build(args.models.split(","), formats, args.mix or None, args.work, args.method, args.reuse)
    results = check(rows, browsers, paths, args.work / "site")
    body = table(results, rows, browsers, paths)
    failed = sum(not r["passed"] for r in results) + sum("error" in r for r in rows)
    stamp = (f"Measured {datetime.date.today()} on {platform.machine()} ({platform.system()}), `python "
             f"scripts/verify_decoder_formats.py --models {args.models} --formats {args.formats} --mix {args.mix} "
             f"--method {args.method}`: tokens differing from the numpy reference's 32 greedy tokens over each "
             f"bundle's own weights ({len(results)} checks, {failed} failed). WebGPU here is SwiftShader in "
             f"Chromium and lavapipe in Firefox; the CPU path is the wasm SIMD kernels.")
    print(body)
    print(stamp)
    if args.write_docs:
        write_section(args.write_docs, "verify_decoder_formats", stamp + "\n\n" + body,
                      "## Decoder bundles in every format, in the browsers (scripts/verify_decoder_formats.py)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
