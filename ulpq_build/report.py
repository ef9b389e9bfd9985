"""report.html for `bench`: one self-contained static page (inline SVG charts, no scripts, no CDN):
bytes vs bits, accuracy vs bits, accuracy vs size, latency per browser and path, the full table,
the original SDK guide's figures, and the demo-page screenshots.

Charts are meant to be read at a glance: bits and bytes on logarithmic axes (float32's 32 bits would
otherwise squeeze every quantized preset into one corner), the Pareto front of accuracy against size
drawn, latency on a logarithmic axis in ms (paths differ by orders of magnitude), and point labels
placed where they overlap nothing (a key lists any that find no room), by the same box estimate
tests/test_report.py checks."""

from __future__ import annotations

import html
import math
from pathlib import Path

from ulpq_build.bench import GUIDE

W, H = 600, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 44, 46  # plot margins: tick labels left and below, title and legend above
FONT = 10  # px, point labels and ticks
CHAR_EM = 0.62  # a generous average advance of sans-serif glyphs, in em: label boxes are estimated with it
COLORS = {"chromium": "#1a73e8", "firefox": "#e66000", "webkit": "#5f6368", "node": "#3c8d2f"}
METHOD_COLORS = {"rtn": "#1a73e8", "gptq": "#e66000", "mixed": "#2e7d32"}
BITS_TICKS = (1, 2, 3, 4, 6, 8, 16, 32)


def text_width(text: str, size: float = FONT) -> float:
    return len(text) * size * CHAR_EM


def text_box(x: float, y: float, text: str, size: float = FONT, anchor: str = "start") -> tuple[float, float, float, float]:
    """(left, top, right, bottom) that a one-line SVG text at baseline (x, y) covers, by the estimate above."""
    w = text_width(text, size)
    left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    return left, y - 0.8 * size, left + w, y + 0.25 * size


def overlaps(a, b, gap: float = 1.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


class Axis:
    """Data value -> pixel along one axis, linear or logarithmic, over [lo, hi] padded a little."""

    def __init__(self, values, start: float, end: float, log: bool, pad: float = 0.06):
        self.log, self.start, self.end = log, start, end
        vs = [self._f(v) for v in values]
        lo, hi = min(vs), max(vs)
        span = (hi - lo) or (abs(hi) or 1.0)
        self.lo, self.hi = lo - span * pad, hi + span * pad

    def _f(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        return self.start + (self._f(v) - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def contains(self, v: float) -> bool:
        return self.lo <= self._f(v) <= self.hi

    def ticks(self, candidates=None) -> list[float]:
        """The given candidates inside the range, or: decades x 1-2-5 (log), round steps (linear)."""
        if candidates is None:
            if self.log:
                candidates = [m * 10.0 ** e for e in range(math.floor(self.lo) - 1, math.ceil(self.hi) + 1) for m in (1, 2, 5)]
            else:
                step = 10 ** math.floor(math.log10((self.hi - self.lo) / 4 or 1))
                step *= next(m for m in (1, 2, 5, 10) if (self.hi - self.lo) / (step * m) <= 6)
                candidates = [step * i for i in range(math.ceil(self.lo / step), math.floor(self.hi / step) + 1)]
        inside = [t for t in candidates if (t > 0 or not self.log) and self.contains(t)]
        if self.log and len(inside) > 8:  # too many 1-2-5 ticks: keep the decades
            inside = [t for t in inside if abs(math.log10(t) - round(math.log10(t))) < 1e-9] or inside
        return inside


def _number(v: float) -> str:
    return f"{v:.3g}"


def pareto_front(points: list[tuple[float, float, str]]) -> list[int]:
    """Indices of the points no other point beats: none at most as large (x) is at least as accurate (y)
    while differing in either; in order of x. Ties in both keep the first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _place_labels(points: list[tuple[float, float, str]], area: tuple[float, float, float, float], radius: float):
    """A position for each point's label that overlaps no other label, no marker and stays inside
    `area`: the nearest free spot among 8 directions at growing distances (a leader line drawn when
    it is not beside its point). None where nothing is free; the chart's key lists those."""
    markers = [(x - radius, y - radius, x + radius, y + radius) for x, y, _ in points]
    placed, result = [], [None] * len(points)
    # beside the point first (right, left, half a line up or down), then above / below, then diagonals
    directions = [(1, 0), (-1, 0), (1, -0.5), (1, 0.5), (-1, -0.5), (-1, 0.5), (0, -1), (0, 1),
                  (1, -1), (1, 1), (-1, -1), (-1, 1)]
    # the most crowded points choose first, while room near them is still free
    crowd = [sum(abs(x - u) < 60 and abs(y - v) < 20 for u, v, _ in points) for x, y, _ in points]
    for i in sorted(range(len(points)), key=lambda i: (-crowd[i], i)):
        x, y, label = points[i]
        w, h = text_width(label), FONT
        spot = None
        for step in (1, 2, 3, 4, 6):
            gap = radius + 3 + (step - 1) * (h + 2)
            for dx, dy in directions:
                left = x + gap if dx > 0 else (x - gap - w if dx < 0 else x - w / 2)
                base = y + 0.3 * h + dy * (gap + 0.3 * h)
                box = text_box(left, base, label)
                if not (area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]):
                    continue
                if any(overlaps(box, b) for b in placed) or any(overlaps(box, m, 0) for j, m in enumerate(markers) if j != i):
                    continue
                spot = (left, base, step > 1)
                break
            if spot:
                break
        if spot:
            placed.append(text_box(spot[0], spot[1], label))
        result[i] = spot
    return result


def scatter(points: list[tuple[float, float, str]], xlabel: str, ylabel: str, title: str, *, log_x: bool = False,
            log_y: bool = False, x_ticks=None, kinds: list[str] | None = None, front: bool = False) -> str:
    """A scatter chart as inline SVG: `points` (x, y, label); `kinds` colour the markers (METHOD_COLORS);
    `front` draws the Pareto front (smallest x for the highest y: the points worth choosing)."""
    xa = Axis([p[0] for p in points], LEFT, W - RIGHT, log_x)
    ya = Axis([p[1] for p in points], H - BOTTOM, TOP, log_y)
    xy = [(xa(x), ya(y), label) for x, y, label in points]
    items = [f'<text x="{W / 2}" y="16" text-anchor="middle" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#888"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#888"/>',
             f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
             f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{html.escape(ylabel)}</text>']
    for t in xa.ticks(x_ticks):
        items.append(f'<line class="grid" x1="{xa(t):.1f}" y1="{TOP}" x2="{xa(t):.1f}" y2="{H - BOTTOM}" stroke="#eee"/>'
                     f'<text class="tick" x="{xa(t):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" font-size="{FONT}">{_number(t)}</text>')
    for t in ya.ticks():
        items.append(f'<line class="grid" x1="{LEFT}" y1="{ya(t):.1f}" x2="{W - RIGHT}" y2="{ya(t):.1f}" stroke="#eee"/>'
                     f'<text class="tick" x="{LEFT - 4}" y="{ya(t) + 3:.1f}" text-anchor="end" font-size="{FONT}">{_number(t)}</text>')
    on_front = set(pareto_front(points)) if front else set()
    if front and len(on_front) > 1:
        line = " ".join(f"{xy[i][0]:.1f},{xy[i][1]:.1f}" for i in pareto_front(points))
        items.append(f'<polyline class="pareto" points="{line}" fill="none" stroke="#2e7d32" stroke-width="1.5" '
                     f'stroke-dasharray="5 3"/>')
    radius = 4
    for i, (x, y, label) in enumerate(xy):
        color = METHOD_COLORS.get((kinds or [None] * len(xy))[i], "#1a73e8")
        ring = ' stroke="#2e7d32" stroke-width="2"' if i in on_front else ""
        items.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{color}"{ring} data-preset="{html.escape(label)}">'
                     f"<title>{html.escape(label)}: {_number(points[i][0])}, {_number(points[i][1])}</title></circle>")
    spots = _place_labels(xy, (LEFT + 2, TOP, W - RIGHT, H - BOTTOM - 2), radius)
    unplaced = []
    for (x, y, label), spot in zip(xy, spots):
        if spot is None:
            unplaced.append(label)
            continue
        left, base, far = spot
        if far:
            items.append(f'<line class="leader" x1="{x:.1f}" y1="{y:.1f}" x2="{left + text_width(label) / 2:.1f}" '
                         f'y2="{base - 0.3 * FONT:.1f}" stroke="#bbb"/>')
        items.append(f'<text class="label" x="{left:.1f}" y="{base:.1f}" font-size="{FONT}">{html.escape(label)}</text>')
    items.append(_key(kinds, front and len(on_front) > 1, unplaced))
    return f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">{"".join(items)}</svg>'


def _key(kinds, front: bool, unplaced: list[str]) -> str:
    """The key above the plot: marker colours, the front's line, and points whose label found no room."""
    entries = [(METHOD_COLORS[k], "●", {"rtn": "round to nearest", "gptq": "GPTQ", "mixed": "planner + GPTQ"}[k])
               for k in METHOD_COLORS if k in (kinds or [])]
    if front:
        entries.append(("#2e7d32", "- -", "Pareto front"))
    if unplaced:
        entries.append(("#555", "", "unlabelled: " + ", ".join(unplaced)))
    x, parts = LEFT, []
    for color, mark, text in entries:
        label = f"{mark} {text}".strip()
        parts.append(f'<text class="key" x="{x:.1f}" y="32" font-size="{FONT}" fill="{color}">{html.escape(label)}</text>')
        x += text_width(label) + 12
    return "".join(parts)


def bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str, unit: str = "ms") -> str:
    """Grouped bars on a logarithmic value axis (runs differ by orders of magnitude between paths),
    ticks and label in `unit`; each group's slot is wide enough for its label."""
    values = [v for vs in series.values() for v in vs if v] or [1.0]
    base = 10.0 ** math.floor(math.log10(min(values) / 2))  # a decade well below the fastest: every bar visible
    ya = Axis([base, *values], H - BOTTOM, TOP + 14, log=True, pad=0.04)
    ticks = [(t, f"{t:,.0f} {unit}" if t >= 1 else f"{t:.3g} {unit}") for t in ya.ticks()]
    left = max([LEFT] + [text_width(label) + 30 for _, label in ticks])  # tick labels clear of the axis title
    slot = max(max((text_width(g) for g in groups), default=0) + 10, 14 * max(len(series), 1) + 10)
    width = max(W, left + RIGHT + slot * len(groups))
    floor = H - BOTTOM
    bar = (slot - 10) / max(len(series), 1)
    items = [f'<text x="{width / 2}" y="16" text-anchor="middle" font-weight="600">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{floor}" x2="{width - RIGHT}" y2="{floor}" stroke="#888"/>',
             f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{floor}" stroke="#888"/>',
             f'<text x="14" y="{(TOP + floor) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(TOP + floor) / 2})">{html.escape(ylabel)}</text>']
    for t, label in ticks:
        items.append(f'<line class="grid" x1="{left}" y1="{ya(t):.1f}" x2="{width - RIGHT}" y2="{ya(t):.1f}" stroke="#eee"/>'
                     f'<text class="tick" x="{left - 4}" y="{ya(t) + 3:.1f}" text-anchor="end" font-size="{FONT}">'
                     f"{html.escape(label)}</text>")
    for gi, group in enumerate(groups):
        x0 = left + gi * slot + 5
        for si, (name, vs) in enumerate(series.items()):
            v = vs[gi]
            if not v:
                continue
            top = ya(v)
            items.append(f'<rect x="{x0 + si * bar:.1f}" y="{top:.1f}" width="{bar * 0.9:.1f}" height="{floor - top:.1f}" '
                         f'fill="{COLORS.get(name.split()[0], "#888")}" data-value="{v}"><title>{html.escape(name)}: '
                         f"{v:.1f} {html.escape(unit)}</title></rect>")
        items.append(f'<text class="label" x="{x0 + (slot - 10) / 2:.1f}" y="{floor + 14}" text-anchor="middle" '
                     f'font-size="{FONT}">{html.escape(group)}</text>')
    x = left
    for name in series:
        label = f"■ {name}"
        items.append(f'<text class="key" x="{x:.1f}" y="32" font-size="{FONT}" fill="{COLORS.get(name.split()[0], "#888")}">'
                     f"{html.escape(label)}</text>")
        x += text_width(label) + 12
    return f'<svg width="{width:.0f}" height="{H}" viewBox="0 0 {width:.0f} {H}" font-family="sans-serif" font-size="12">{"".join(items)}</svg>'


def write_report(result: dict, path: Path) -> None:
    rows = result["rows"]
    metric = rows[0]["accuracy"]["metric"] if rows else "accuracy"
    kinds = ["mixed" if r["format"] == "mixed" else r.get("method", "rtn") for r in rows]
    bits = [(r["bits_per_weight"], r["accuracy"]["ratio"], r["preset"]) for r in rows]
    size = [(r["weight_bytes"] / 1e6, r["accuracy"]["ratio"], r["preset"]) for r in rows]
    charts = [
        scatter([(r["bits_per_weight"], r["weight_bytes"] / 1e6, r["preset"]) for r in rows], "bits per weight (log scale)",
                "MB of weights (log scale)", "Bytes vs bits", log_x=True, log_y=True, x_ticks=BITS_TICKS, kinds=kinds),
        scatter(bits, "bits per weight (log scale)", f"{metric}, % of float32", "Accuracy vs bits", log_x=True,
                x_ticks=BITS_TICKS, kinds=kinds, front=True),
        scatter(size, "MB of weights (log scale)", f"{metric}, % of float32", "Accuracy vs size", log_x=True, kinds=kinds,
                front=True),
    ]
    series: dict[str, list] = {}
    for gi, r in enumerate(rows):
        for b in r["browsers"]:
            series.setdefault(f"{b['browser']} {b.get('path') or 'error'}", [None] * len(rows))[gi] = b.get("median_ms")
    if series:
        charts.append(bars([r["preset"] for r in rows], series, "median time per run, ms (log scale)",
                           "Latency per browser and path (fixed input)"))
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
              "<th>JS heap MB</th><th>decode tokens/s</th></tr>"]
    fmt = lambda v, d=0: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in rows:
        for b in r["browsers"]:
            btable.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in [
                r["preset"], b["browser"], b.get("path") or "-", b.get("variant") or "-",
                f"{b.get('metric', '')} {fmt(b.get('value'), 6)}" if b.get("value") is not None else (b.get("error") or "-"),
                "yes" if b.get("passed") else "NO", fmt(b.get("load_ms")), fmt(b.get("init_ms")), fmt(b.get("first_ms")),
                fmt(b.get("median_ms")), fmt(b["downloaded_bytes"] / 1e6, 2) if b.get("downloaded_bytes") else "-",
                fmt((b.get("gpu_buffer_bytes") or 0) / 1e6, 2) if b.get("gpu_buffer_bytes") else "-",
                fmt((b.get("js_heap_bytes") or 0) / 1e6, 1) if b.get("js_heap_bytes") else "-",
                fmt(b.get("decode_tokens_per_second"), 1)]) + "</tr>")
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
                speed = f", {b['decode_tokens_per_second']:.1f} tokens/s" if b.get("decode_tokens_per_second") else ""
                cells.append(f"{b['path']}, {'pass' if b['passed'] else 'FAIL'}, {ms:.0f}{ratio}{speed}")
            downloaded = max((b.get("downloaded_bytes") or 0 for b in r["browsers"]), default=0)
            out.append(f"| {r['preset']} | " + " | ".join(cells) + f" | {downloaded / 1e6:.2f} |" if downloaded else
                       f"| {r['preset']} | " + " | ".join(cells) + " | - |")
    return "\n".join(out)
