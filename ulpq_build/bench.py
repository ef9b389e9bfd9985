"""`bench`: the numbers users decide by. For each precision preset it builds the bundle, measures
accuracy on real data with the numpy reference (evaluation.py; decoders: perplexity on held-out text,
architectures/decoder_bench.py), and, in each browser, the bundle's agreement with numpy, load and run
times (decoders: decode tokens per second too), and memory. Writes results.json, report.html (charts,
tables, screenshots of the demo page per browser) under --out.

Presets (names accepted by --formats):
    <format>          round to nearest, per-channel scales (float32 is the baseline)
    <format>-gptq     GPTQ over calibration data, per-channel scales (int2-gptq: int2-ternary,
                      groups of 32 with float16 scales when the rows allow, 2.5 bits per weight)
    mixed-<bits>      automatic mixed precision at that many bits per weight, then GPTQ
    default           exactly what `bundle` gives with no options (int4 per channel; GPTQ on the shipped
                      calibration text for text models, round to nearest otherwise)
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import shutil
import statistics
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path


from ulpq_build.architectures import ARCHITECTURES, Goal, architecture_of  # noqa: F401 (Goal: still importable from here)
from ulpq_build.browser_check import check_in_browser, fixed_input
from ulpq_build.browsers import check_browser_names, started
from ulpq_build.endpoints import browser_specs, page_base
from ulpq_build.bundle import build_bundle
from ulpq_build.bundle_reader import load_bundle
from ulpq_build.errors import UserError
from ulpq_build.formats import FORMATS
from ulpq_build.model_source import DEFAULT_MODEL, check_model_name, resolve_model
from ulpq_build.quantspec import QuantSpec
from ulpq_build.serve import serving

# The original SDK guide's table, for comparison (its models: BERT-base and ViT-base).
GUIDE = [("BERT-base FP32", "440 MB", "145 ms", "-"), ("BERT-base INT8", "110 MB", "", "99.5 %"),
         ("BERT-base INT4", "55 MB", "", "98 %"), ("BERT-base INT3", "41 MB", "", "96 %"),
         ("BERT-base INT2", "28 MB", "", "92 %"), ("ViT-base INT4", "43 MB", "", "99 %"), ("ViT-base INT2", "22 MB", "", "94 %")]




# The goals for our models (MiniLM, the built-in ViT) live in their architecture's row; the
# report says met or missed by how much. Default presets likewise, per architecture.
GOALS = {a.name: list(a.bench_goals) for a in ARCHITECTURES.values() if a.bench_goals}
DEFAULT_PRESETS = {a.name: list(a.bench_presets) for a in ARCHITECTURES.values()}
# int2 with GPTQ: ternary values in groups of 32 with float16 scales (2.5 bits per weight), unless
# the architecture's row builds that preset otherwise
INT2_GPTQ = {"format": "int2-ternary", "group_size": 32, "scale_dtype": "float16"}


def evaluate_goals(arch: str, rows: list["Row"]) -> list[dict]:
    """For each goal: the best qualifying preset, its ratio, and met or the gap in points."""
    out = []
    for goal in (ARCHITECTURES[arch].bench_goals if arch in ARCHITECTURES else ()):
        candidates = [r for r in rows if goal.qualifies(r)]
        entry = {"goal": goal.label, "target": goal.min_ratio, "best": None, "ratio": None, "bits_per_weight": None,
                 "met": False, "gap": None}
        if candidates:
            best = max(candidates, key=lambda r: r.accuracy["ratio"])
            ratio = best.accuracy["ratio"]
            entry.update(best=best.preset, ratio=ratio, bits_per_weight=round(best.bits_per_weight, 3),
                         met=ratio >= goal.min_ratio, gap=round(max(0.0, goal.min_ratio - ratio), 2))
        out.append(entry)
    return out


@dataclass
class Preset:
    name: str
    options: dict  # build_bundle keyword arguments

    @property
    def format(self) -> str:
        """The base format, or "mixed" for a planned mix."""
        return "mixed" if "target_bpw" in self.options else self.options["overrides"].get("format", QuantSpec().format)

    @classmethod
    def parse(cls, name: str, arch: str) -> "Preset":
        """`arch`: the architecture the preset is built for (any other name: the general rule)."""
        if name == "default":
            return cls(name, {"overrides": {}, "method": "auto"})
        if name.startswith("mixed-"):
            try:
                bits = float(name.removeprefix("mixed-"))
            except ValueError:
                raise UserError(f"--formats: {name!r} should be mixed-<bits per weight>, e.g. mixed-2.5") from None
            return cls(name, {"target_bpw": bits, "method": "gptq"})
        method = "rtn"
        fmt = name
        if name.endswith("-gptq"):
            method, fmt = "gptq", name.removesuffix("-gptq")
        if fmt not in FORMATS:
            raise UserError(f"--formats: unknown preset {name!r}; use a format ({', '.join(FORMATS)}), <format>-gptq, "
                            f"mixed-<bits> or default")
        overrides = dict(INT2_GPTQ) if fmt == "int2" and method == "gptq" else {"format": fmt}
        if arch in ARCHITECTURES and name in ARCHITECTURES[arch].preset_overrides:
            overrides = dict(ARCHITECTURES[arch].preset_overrides[name])
        return cls(name, {"overrides": overrides, "method": method})


@dataclass
class Row:
    preset: str
    format: str  # base format, or "mixed"
    method: str  # rtn or gptq
    bits_per_weight: float = 0.0
    weight_bytes: int = 0
    bundle_bytes: int = 0
    accuracy: dict = field(default_factory=dict)
    browsers: list = field(default_factory=list)
    build_seconds: float = 0.0


class Evaluator:
    """Accuracy of a bundle's weights on the model's real data, relative to float32: its row's scorer."""

    def __init__(self, model: dict, folder: Path, fp32_weights: dict):
        self.model, self.arch = model, model["architecture"]
        row = ARCHITECTURES.get(self.arch)
        if row is None or row.accuracy is None:
            able = " and ".join(a.name for a in ARCHITECTURES.values() if a.accuracy is not None)
            raise UserError(f"bench measures accuracy for {able} models, not {self.arch!r}")
        self.score = row.accuracy(model, folder, fp32_weights)
        self.base = self.score.base

    def __call__(self, weights: dict) -> dict:
        return self.score(weights)


def model_folders(models: list[str], out: Path) -> list[Path]:
    """Where each model's results go: --out itself for one model, a folder per model for several.
    Every name is checked first, so a typo in the last model does not wait for the first's hour."""
    for m in models:
        check_model_name(m)
    if len(models) == 1:
        return [out]
    names = [Path(m.removeprefix("builtin:")).name or "model" for m in models]
    if len(set(names)) != len(names):
        raise UserError(f"--model: {', '.join(models)} would share result folders; bench them one at a time")
    return [out / n for n in names]


def write_index(results: list[tuple[dict, Path]], out: Path) -> Path:
    """A page linking each model's report, with its goals."""
    import html

    items = []
    for result, folder in results:
        goals = "".join(f"<li>{html.escape(g['goal'])}: {html.escape(str(g['best']))} {g['ratio']}% "
                        f"({'met' if g['met'] else 'missed by ' + str(g['gap']) + ' points'})</li>"
                        for g in result.get("goals", []) if g["best"] is not None)
        items.append(f'<li><a href="{html.escape(folder.relative_to(out).as_posix())}/report.html">'
                     f"{html.escape(result['model'])}</a><ul>{goals}</ul></li>")
    page = out / "index.html"
    page.write_text(f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ulpq bench</title></head>"
                    f"<body><h1>ulpq bench</h1><ul>{''.join(items)}</ul></body></html>\n", encoding="utf-8")
    return page


def run_bench(model_arg: str | None, presets: list[str] | None, browsers: list, out: Path, repeats: int = 3,
              log=print, serve=None) -> dict:
    """`browsers`: local names or BrowserSpecs (remote endpoints too); `serve`: verify.ServeOptions,
    where the bundles are served for them."""
    check_browser_names(browsers)
    browsers = [browser_specs([b], [])[0] if isinstance(b, str) else b for b in browsers]
    for name in presets or []:
        Preset.parse(name, "any")  # names checked before minutes of building
    out.mkdir(parents=True, exist_ok=True)
    bundles = out / "bundles"
    start = time.time()
    _, model_name = resolve_model(model_arg, out)  # checks it; builds re-resolve it, so bundles carry its name
    source = model_arg or DEFAULT_MODEL
    log(f"[bench] {model_name}: building the float32 reference bundle")
    fp32 = _build(source, bundles / "float32", {"overrides": {"format": "float32"}})
    arch = fp32.model["architecture"]
    chosen = presets or list(ARCHITECTURES[arch].bench_presets)
    parsed = [Preset.parse(p, arch) for p in chosen]
    evaluator = Evaluator(fp32.model, fp32.folder, fp32.weights)
    log(f"[bench] float32 {evaluator(fp32.weights)['metric']}: {evaluator.base:.4f} ({time.time() - start:.0f} s)")
    rows = []
    for i, preset in enumerate(parsed, 1):
        t0 = time.time()
        bundle = fp32 if preset.name == "float32" else _build(source, bundles / preset.name, preset.options, log)
        q = bundle.manifest["quantization"]
        row = Row(preset.name, preset.format, q.get("method", preset.options.get("method", "rtn")), q["quantized_bits_per_weight"],
                  q["bytes"], _folder_bytes(bundle.folder), evaluator(bundle.weights), build_seconds=round(time.time() - t0, 1))
        rows.append(row)
        a = row.accuracy
        log(f"[bench] {i}/{len(parsed)} {preset.name}: {row.bits_per_weight:.3f} bits/weight, {row.weight_bytes / 1e6:.2f} MB, "
            f"{a['metric']} {a['value']} ({a['ratio']}% of float32) ({time.time() - t0:.0f} s)")
    screenshots, details = _browser_runs(rows, bundles, browsers, out, repeats, log, serve)
    goals = evaluate_goals(arch, rows)
    for g in goals:
        verdict = "no qualifying preset" if g["best"] is None else (
            f"{g['best']} {g['ratio']}%: " + ("met" if g["met"] else f"missed by {g['gap']} points"))
        log(f"[bench] goal {g['goal']}: {verdict}")
    result = {"model": model_name, "model_arg": source, "architecture": arch, "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()} {platform.system()}, {_cpu()}", "browsers": [b.label for b in browsers],
              "browser_details": details,
              "float32": evaluator.base, "float32_weight_bytes": int(fp32.manifest["quantization"]["bytes"]),
              "rows": [r.__dict__ for r in rows], "goals": goals, "screenshots": screenshots,
              "seconds": round(time.time() - start)}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    from ulpq_build.report import write_report

    write_report(result, out / "report.html")
    log(f"[bench] wrote {out / 'results.json'} and {out / 'report.html'} ({result['seconds']} s)")
    return result


def _build(source: str, folder: Path, options: dict, log=None):
    if folder.exists():
        shutil.rmtree(folder)

    def progress(message: str) -> None:  # the planner's and GPTQ's steps, one short line each (not the plan table)
        if log and message.startswith(("sensitivit", "gptq")):
            log(f"[bench]     {message[:110]}")

    build_bundle(source, folder, options.get("overrides"), None, log=progress, method=options.get("method", "rtn"),
                 target_bpw=options.get("target_bpw"))
    return load_bundle(folder)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _browser_runs(rows: list[Row], bundles: Path, browsers: list, out: Path, repeats: int, log,
                  serve=None) -> tuple[dict, dict]:
    """Every preset in every browser: agreement with numpy, timings, memory; one demo screenshot each.
    Returns the screenshots and, per browser, what ran (engine, version, endpoint, user agent)."""
    if not browsers:
        return {}, {}
    shots, details = {}, {}
    (out / "screenshots").mkdir(exist_ok=True)
    host, port, public_url = (serve.host, serve.port, serve.public_url) if serve else ("127.0.0.1", 0, None)
    with serving(bundles, host, port, public_url) as server:
        allow = () if server.loopback_only else (urllib.parse.urlsplit(server.url).hostname,)
        for spec in browsers:
            browser, base = spec.label, page_base(spec, server)
            log(f"[bench] {browser}: starting{' at ' + spec.shown if spec.remote else ''}")
            with started(spec, base, allow) as (session, error):
                if error:
                    details[browser] = {"endpoint": spec.shown, "error": error}
                    for row in rows:
                        row.browsers.append({"browser": browser, "error": error, "passed": False})
                    continue
                info = session.info
                details[browser] = {"endpoint": info.endpoint, "engine": info.engine, "version": info.version,
                                    "user_agent": info.user_agent}
                log(f"[bench]   {browser}: {info.describe()}")
                for row in rows:
                    bundle = load_bundle(bundles / row.preset)
                    check = check_in_browser(session, f"{base}{row.preset}/index.html", bundle, browser,
                                             repeats=repeats, prepared=fixed_input(bundle))
                    entry = check.to_json()
                    if architecture_of(bundle.model).input_kind == "prompt" and check.error is None:
                        entry.update(decode_speed(session, bundle.manifest, repeats))
                    row.browsers.append(entry)
                    log(f"[bench]   {browser} {row.preset}: {check.path or 'error'} {check.variant or ''} "
                        f"{check.metric} {check.value if check.value is not None else check.error} "
                        f"median {check.median_ms and round(check.median_ms)} ms"
                        + (f", decode {entry['decode_tokens_per_second']:.1f} tokens/s"
                           if entry.get("decode_tokens_per_second") else ""))
                shot_preset = next((r.preset for r in rows if r.preset != "float32"), rows[0].preset)
                try:
                    session.goto(f"{base}{shot_preset}/index.html")
                    session.evaluate("""async () => { for (let i = 0; i < 6000 && (!window.ulpqDemo || window.ulpqDemo.status === 'loading'); i++)
                                        await new Promise((r) => setTimeout(r, 100)); }""")
                    name = re.sub(r"[^A-Za-z0-9._-]", "_", browser)
                    file = out / "screenshots" / f"{name}.png"
                    session.screenshot(file)
                    shots[browser] = f"screenshots/{name}.png"
                except Exception as exc:
                    log(f"[bench]   {browser}: no screenshot ({exc})")
    return shots, details


# Decoders: tokens per second of the cached decode steps (generate()'s timings: the steps after the
# prefill's first token), greedy, from the verification prompt, on the page check_in_browser loaded.
DECODE_SPEED = """async ({ ids, steps, repeats }) => {
  const model = window.ulpqDemo.model;
  const runs = [];
  for (let i = 0; i < repeats; i++) {
    const r = await model.generate(ids, { maxNewTokens: steps });
    runs.push({ tps: r.timings.tokens_per_second, prefill: r.timings.prefill_ms, steps: r.timings.decode_steps, path: r.path });
  }
  return runs;
}"""


def decode_speed(session, manifest: dict, repeats: int) -> dict:
    """Median decode tokens/s and prefill ms over `repeats` (at least one) greedy generations of the
    verification's length; {} where a generation gave fewer than two tokens (no decode step)."""
    case = manifest["verification"]
    try:
        runs = session.evaluate(DECODE_SPEED, {"ids": case["prompt_ids"], "steps": case["max_new_tokens"],
                                               "repeats": max(1, repeats)})
    except Exception as exc:  # noqa: BLE001 (a browser failure is reported, not a crash, as check_in_browser does)
        return {"decode_error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    speeds = [r["tps"] for r in runs if r["tps"]]
    if not speeds:
        return {}
    return {"decode_tokens_per_second": round(statistics.median(speeds), 2),
            "prefill_ms": round(statistics.median(r["prefill"] for r in runs), 1),
            "decode_steps": runs[0]["steps"], "decode_runs": len(runs)}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {__import__('os').cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
