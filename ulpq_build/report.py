"""report.html for `bench`: one self-contained static page (inline SVG charts, no scripts, no CDN):
bytes vs bits, accuracy vs bits, accuracy vs bytes, latency per browser and path, the full table,
the original SDK guide's figures, and the demo-page screenshots."""

from __future__ import annotations

import html
from pathlib import Path

from ulpq_build.bench import GUIDE

W, H, PAD = 520, 300, 48
COLORS = {"chromium": "#1a73e8", "firefox": "#e66000", "webkit": "#5f6368"}


def _scale(values, lo_pad=0.05):
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1
    span = hi - lo
    return lo - span * lo_pad, hi + span * lo_pad


def scatter(points: list[tuple[float, float, str]], xlabel: str, ylabel: str, title: str, log_x: bool = False) -> str:
    import math

    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs, ys = [tx(p[0]) for p in points], [p[1] for p in points]
    x0, x1 = _scale(xs)
    y0, y1 = _scale(ys)
    px = lambda v: PAD + (tx(v) - x0) / (x1 - x0) * (W - 2 * PAD)  # noqa: E731
    py = lambda v: H - PAD - (v - y0) / (y1 - y0) * (H - 2 * PAD)  # noqa: E731
    items = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>',
             f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{html.escape(xlabel)}</text>',
             f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{html.escape(ylabel)}</text>']
    for frac in (0, 0.5, 1):
        yv = y0 + frac * (y1 - y0)
        items.append(f'<text x="{PAD - 4}" y="{py(yv) + 4:.1f}" text-anchor="end" font-size="10">{yv:.3g}</text>')
        xv = x0 + frac * (x1 - x0)
        label = 10 ** xv if log_x else xv
        items.append(f'<text x="{PAD + frac * (W - 2 * PAD):.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{label:.3g}</text>')
    for x, y, label in points:
        items.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="#1a73e8"/>'
                     f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}" font-size="10">{html.escape(label)}</text>')
    return f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">{"".join(items)}</svg>'


def bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str) -> str:
    width = max(W, 60 + len(groups) * 18 * max(len(series), 1) + len(groups) * 12)
    values = [v for vs in series.values() for v in vs if v]
    top = max(values) if values else 1
    slot = (width - 2 * PAD) / max(len(groups), 1)
    bar = slot / (len(series) + 1)
    items = [f'<text x="{width / 2}" y="18" text-anchor="middle" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{width - PAD}" y2="{H - PAD}" stroke="#888"/>',
             f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{html.escape(ylabel)}</text>',
             f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end" font-size="10">{top:.3g}</text>']
    for gi, group in enumerate(groups):
        for si, (name, vs) in enumerate(series.items()):
            v = vs[gi]
            if not v:
                continue
            h = v / top * (H - 2 * PAD)
            x = PAD + gi * slot + si * bar
            items.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" '
                         f'fill="{COLORS.get(name.split()[0], "#888")}"><title>{html.escape(name)}: {v:.1f}</title></rect>')
        items.append(f'<text x="{PAD + gi * slot + slot / 2 - bar / 2:.1f}" y="{H - PAD + 14}" text-anchor="middle" '
                     f'font-size="10">{html.escape(group)}</text>')
    legend = "".join(f'<tspan fill="{COLORS.get(n.split()[0], "#888")}">■ {html.escape(n)}  </tspan>' for n in series)
    items.append(f'<text x="{PAD}" y="36" font-size="11">{legend}</text>')
    return f'<svg width="{width}" height="{H}" viewBox="0 0 {width} {H}" font-family="sans-serif" font-size="12">{"".join(items)}</svg>'


def write_report(result: dict, path: Path) -> None:
    rows = result["rows"]
    metric = rows[0]["accuracy"]["metric"] if rows else "accuracy"
    charts = [
        scatter([(r["bits_per_weight"], r["weight_bytes"] / 1e6, r["preset"]) for r in rows], "bits per weight", "MB of weights",
                "Bytes vs bits"),
        scatter([(r["bits_per_weight"], r["accuracy"]["ratio"], r["preset"]) for r in rows], "bits per weight",
                f"{metric}, % of float32", "Accuracy vs bits"),
        scatter([(r["weight_bytes"] / 1e6, r["accuracy"]["ratio"], r["preset"]) for r in rows], "MB of weights (log)",
                f"{metric}, % of float32", "Accuracy vs bytes", log_x=True),
    ]
    series: dict[str, list] = {}
    for r in rows:
        for b in r["browsers"]:
            key = f"{b['browser']} {b.get('path') or 'error'}"
            series.setdefault(key, [None] * len(rows))
    for gi, r in enumerate(rows):
        for b in r["browsers"]:
            series[f"{b['browser']} {b.get('path') or 'error'}"][gi] = b.get("median_ms")
    if series:
        charts.append(bars([r["preset"] for r in rows], series, "median ms per run (fixed input)", "Latency per browser and path"))
    base_bytes = result.get("float32_weight_bytes") or 0
    head = ["preset", "method", "bits/weight", "weights MB", "x smaller than float32", "bundle MB", metric, "% of float32"]
    if rows and "mean_cosine_to_float32" in rows[0]["accuracy"]:
        head.append("mean cosine to float32")
    table = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        a = r["accuracy"]
        cells = [r["preset"], r.get("method", "-"), f"{r['bits_per_weight']:.3f}", f"{r['weight_bytes'] / 1e6:.2f}",
                 f"{base_bytes / r['weight_bytes']:.2f}" if base_bytes else "-", f"{r['bundle_bytes'] / 1e6:.2f}",
                 f"{a['value']}", f"{a['ratio']}"] + ([f"{a['mean_cosine_to_float32']}"] if "mean_cosine_to_float32" in a else [])
        table.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    table.append("</table>")
    btable = ["<table><tr><th>preset</th><th>browser</th><th>path</th><th>variant</th><th>check vs numpy</th><th>pass</th>"
              "<th>load ms</th><th>init ms</th><th>first run ms</th><th>median ms</th><th>downloaded MB</th><th>GPU buffers MB</th>"
              "<th>JS heap MB</th></tr>"]
    fmt = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        for b in r["browsers"]:
            btable.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [
                r["preset"], b["browser"], b.get("path") or "-", b.get("variant") or "-",
                f"{b.get('metric', '')} {fmt(b.get('value'), 6)}" if b.get("value") is not None else (b.get("error") or "-"),
                "yes" if b.get("passed") else "NO", fmt(b.get("load_ms")), fmt(b.get("init_ms")), fmt(b.get("first_ms")),
                fmt(b.get("median_ms")), fmt(b["downloaded_bytes"] / 1e6, 2) if b.get("downloaded_bytes") else "-",
                fmt((b.get("gpu_buffer_bytes") or 0) / 1e6, 2) if b.get("gpu_buffer_bytes") else "-",
                fmt((b.get("js_heap_bytes") or 0) / 1e6, 1) if b.get("js_heap_bytes") else "-"]) + "</tr>")
    btable.append("</table>")
    goals = ["<table><tr><th>goal (% of float32)</th><th>best qualifying preset</th><th>bits/weight</th><th>% of float32</th>"
             "<th>result</th></tr>"]
    for g in result.get("goals", []):
        verdict = "no qualifying preset measured" if g["best"] is None else ("met" if g["met"] else f"missed by {g['gap']} points")
        goals.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [
            g["goal"], g["best"] or "-", g["bits_per_weight"] or "-", g["ratio"] if g["ratio"] is not None else "-", verdict]) + "</tr>")
    goals.append("</table>")
    guide = ["<table><tr><th>original guide</th><th>size</th><th>latency</th><th>accuracy</th></tr>"]
    guide += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in g) + "</tr>" for g in GUIDE]
    guide.append("</table>")
    shots = "".join(f'<figure><img src="{html.escape(p)}" width="420" alt="{html.escape(b)} demo page">'
                    f"<figcaption>{html.escape(b)}</figcaption></figure>" for b, p in result.get("screenshots", {}).items())
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ulpq bench: {html.escape(result['model'])}</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:2rem;max-width:80rem}}table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}}th{{background:#f3f3f3}}svg{{margin:.5rem;border:1px solid #eee}}
figure{{display:inline-block;margin:.5rem}}</style></head><body>
<h1>{html.escape(result['model'])} ({html.escape(result['architecture'])}): accuracy, size and speed per precision</h1>
<p>Measured {html.escape(result['date'])} on {html.escape(result['machine'])}; browsers: {html.escape(', '.join(result['browsers']) or 'none')}.
Accuracy: {html.escape(metric)} with the numpy reference over each bundle's own weights (float32: {result['float32']:.4f}).
Browser columns: the bundle run in that browser on a fixed input and compared with numpy; times are wall-clock on this machine
(software WebGPU on CPU-only machines: compare ratios between presets, not absolute speed).</p>
{''.join(charts)}
<h2>Goals</h2>{''.join(goals) if result.get("goals") else '<p>(no goals for this architecture)</p>'}
<h2>Accuracy and size</h2>{''.join(table)}
<h2>In the browsers</h2>{''.join(btable)}
<h2>The original SDK guide's figures (BERT-base, ViT-base), for comparison</h2>{''.join(guide)}
<h2>Demo page</h2>{shots or '<p>(no screenshots)</p>'}
</body></html>"""
    path.write_text(page, encoding="utf-8")


def markdown_tables(result: dict) -> str:
    """The bench result as markdown for docs/benchmarks.md: goals, accuracy and size, browsers."""
    rows = result["rows"]
    metric = rows[0]["accuracy"]["metric"] if rows else "accuracy"
    base_bytes = result.get("float32_weight_bytes") or 0
    cosine = bool(rows) and "mean_cosine_to_float32" in rows[0]["accuracy"]
    out = [f"{result['model']} ({result['architecture']}), measured {result['date']} on {result['machine']}; "
           f"{metric} of float32: {result['float32']:.4f}. Command: `python -m ulpq_build bench --model "
           f"{result.get('model_arg') or '...'} --formats {','.join(r['preset'] for r in rows)} --browsers "
           f"{','.join(result['browsers'])}`.", ""]
    if result.get("goals"):
        out += ["| goal | best qualifying preset | bits/weight | % of float32 | result |", "|---|---|---:|---:|---|"]
        for g in result["goals"]:
            verdict = "no qualifying preset" if g["best"] is None else ("met" if g["met"] else f"missed by {g['gap']} points")
            out.append(f"| {g['goal']} | {g['best'] or '-'} | {g['bits_per_weight'] or '-'} | "
                       f"{g['ratio'] if g['ratio'] is not None else '-'} | {verdict} |")
        out.append("")
    out += [f"| preset | method | bits/weight | weights MB | x smaller | {metric} | % of float32 |"
            + (" mean cosine to float32 |" if cosine else ""),
            "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if cosine else "")]
    for r in rows:
        a = r["accuracy"]
        out.append(f"| {r['preset']} | {r.get('method', '-')} | {r['bits_per_weight']:.3f} | {r['weight_bytes'] / 1e6:.2f} | "
                   f"{base_bytes / r['weight_bytes']:.2f} | {a['value']} | {a['ratio']} |"
                   + (f" {a['mean_cosine_to_float32']} |" if cosine else ""))
    browsers = result["browsers"]
    if browsers:
        out += ["", "In the browsers (a fixed input, checked against numpy; median of the timed runs, and its ratio to "
                "float32's in the same browser; software WebGPU or the CPU path on this machine, so compare ratios):", "",
                "| preset | " + " | ".join(f"{b}: path, check, median ms (x float32)" for b in browsers) + " | downloaded MB |",
                "|---|" + "---|" * len(browsers) + "---:|"]
        base = {b["browser"]: b.get("median_ms") for r in rows if r["preset"] == "float32" for b in r["browsers"]}
        for r in rows:
            cells = []
            for name in browsers:
                b = next((x for x in r["browsers"] if x["browser"] == name), None)
                if b is None or b.get("path") is None:
                    cells.append(f"FAIL: {(b or {}).get('error') or 'not run'}")
                    continue
                ms = b.get("median_ms") or b.get("first_ms")
                ratio = f" (x{ms / base[name]:.2f})" if ms and base.get(name) else ""
                cells.append(f"{b['path']}, {'pass' if b['passed'] else 'FAIL'}, {ms:.0f}{ratio}")
            downloaded = max((b.get("downloaded_bytes") or 0 for b in r["browsers"]), default=0)
            out.append(f"| {r['preset']} | " + " | ".join(cells) + f" | {downloaded / 1e6:.2f} |" if downloaded else
                       f"| {r['preset']} | " + " | ".join(cells) + " | - |")
    return "\n".join(out)
