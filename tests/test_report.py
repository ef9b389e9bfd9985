"""The bench report's charts read at a glance: checked on the SVG the page holds, from a synthetic
result set shaped like MiniLM's (presets crowded between 2 and 8 bits, float32 at 32, two with the
same size and accuracy), with every expectation computed here independently of report.py:
x positions logarithmic in bits and in MB, the Pareto front of accuracy against size, point labels
that overlap neither each other nor any marker, and a latency chart in ms on a log axis."""

import math
import re
import xml.etree.ElementTree as ET

import pytest

from ulpq_build.bench import Row, evaluate_goals
from ulpq_build.report import write_report

# preset, format, method, bits per weight, accuracy % of float32 (bytes follow the bits, as in a real bench)
PRESETS = [("float32", "float32", "rtn", 32.0, 100.0), ("default", "int4", "gptq", 4.074, 101.65),
           ("int8", "int8", "rtn", 8.073, 100.24), ("int4", "int4", "rtn", 4.074, 98.9),
           ("int3", "int3", "rtn", 3.317, 97.56), ("int2", "int2", "rtn", 2.074, 47.21),
           ("int2-optimal", "int2-optimal", "rtn", 2.074, 74.62), ("int4-gptq", "int4", "gptq", 4.074, 101.65),
           ("int3-gptq", "int3", "gptq", 3.317, 99.24), ("int2-gptq", "int2", "gptq", 2.5, 89.42),
           ("mixed-2.5", "mixed", "gptq", 2.499, 99.85), ("mixed-3", "mixed", "gptq", 2.999, 102.17),
           ("mixed-3.32", "mixed", "gptq", 3.319, 100.59)]
PARAMS = 22_700_000
MEDIAN_MS = {"chromium": 20000.0, "firefox": 6800.0, "webkit": 1250.0}
SVG = "{http://www.w3.org/2000/svg}"
CHAR_EM = 0.6  # this test's own (smaller) estimate of an average glyph's advance: the report may only be more generous


def synthetic_result() -> dict:
    rows = []
    for i, (name, fmt, method, bpw, ratio) in enumerate(PRESETS):
        row = Row(name, fmt, method, bpw, int(bpw * PARAMS / 8), int(bpw * PARAMS / 8 * 1.05),
                  {"metric": "Lee Pearson", "value": round(0.6564 * ratio / 100, 4), "ratio": ratio, "float32": 0.6564,
                   "mean_cosine_to_float32": 0.9})
        row.browsers = [{"browser": b, "path": "cpu" if b == "webkit" else "webgpu", "passed": True,
                         "median_ms": ms * (1 + 0.03 * i)} for b, ms in MEDIAN_MS.items()]
        rows.append(row)
    return {"model": "synthetic", "architecture": "bert", "date": "2026-11-29", "machine": "test", "browsers": list(MEDIAN_MS),
            "float32": 0.6564, "float32_weight_bytes": rows[0].weight_bytes, "rows": [r.__dict__ for r in rows],
            "goals": evaluate_goals("bert", rows), "screenshots": {}}


@pytest.fixture(scope="module")
def charts(tmp_path_factory):
    page = tmp_path_factory.mktemp("report") / "report.html"
    write_report(synthetic_result(), page)
    text = page.read_text()
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # one offline file
    svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    parsed = {}
    for svg in svgs:
        root = ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))
        title = next(t for t in root.iter(f"{SVG}text") if t.get("font-weight") == "600")
        parsed["".join(title.itertext())] = root
    return parsed


def circles(root) -> dict[str, tuple[float, float]]:
    return {c.get("data-preset"): (float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")}


def affine_in(values: dict[str, float], positions: dict[str, float]) -> float:
    """Largest deviation (px) of `positions` from the best straight line through (values, positions)."""
    names = sorted(values)
    xs = [values[n] for n in names]
    ys = [positions[n] for n in names]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return max(abs(my + slope * (x - mx) - y) for x, y in zip(xs, ys))


def test_bits_and_bytes_are_on_log_axes(charts):
    bits = {name: bpw for name, _, _, bpw, _ in PRESETS}
    for title in ("Bytes vs bits", "Accuracy vs bits"):
        cx = {n: p[0] for n, p in circles(charts[title]).items()}
        assert affine_in({n: math.log(b) for n, b in bits.items()}, cx) < 0.2, title
        assert affine_in(bits, cx) > 20, title  # and not linear: the check can tell them apart
    cx = {n: p[0] for n, p in circles(charts["Accuracy vs size"]).items()}
    assert affine_in({n: math.log(int(b * PARAMS / 8)) for n, b in bits.items()}, cx) < 0.2
    # accuracy stays linear
    cy = {n: p[1] for n, p in circles(charts["Accuracy vs bits"]).items()}
    assert affine_in({name: ratio for name, _, _, _, ratio in PRESETS}, cy) < 0.2


def expected_front() -> set[str]:
    """Presets no other preset beats: none at most as large is at least as accurate (and better in one)."""
    front = set()
    for name, _, _, bpw, ratio in PRESETS:
        size = int(bpw * PARAMS / 8)
        beaten = any(int(b * PARAMS / 8) <= size and r >= ratio and (int(b * PARAMS / 8), r) != (size, ratio)
                     for n, _, _, b, r in PRESETS if n != name)
        if not beaten:
            front.add(name)
    return front


def test_the_pareto_front_is_drawn(charts):
    front = expected_front()
    assert front == {"int2-optimal", "mixed-2.5", "mixed-3"}  # what the data above gives, by hand
    for title in ("Accuracy vs size", "Accuracy vs bits"):
        root = charts[title]
        (line,) = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "pareto"]
        vertices = [tuple(map(float, v.split(","))) for v in line.get("points").split()]
        at = circles(root)
        on_line = [[n for n, (x, y) in at.items() if abs(x - vx) < 0.06 and abs(y - vy) < 0.06] for vx, vy in vertices]
        assert sorted(n for names in on_line for n in names) == sorted(front), (title, on_line)
        assert [v[0] for v in vertices] == sorted(v[0] for v in vertices)  # drawn left to right


def label_boxes(root, classes=("label",)) -> list[tuple[str, tuple[float, float, float, float]]]:
    boxes = []
    for t in root.iter(f"{SVG}text"):
        if t.get("class") not in classes:
            continue
        text, size = "".join(t.itertext()), float(t.get("font-size"))
        x, y = float(t.get("x")), float(t.get("y"))
        w = len(text) * size * CHAR_EM
        left = {"start": x, "middle": x - w / 2, "end": x - w}[t.get("text-anchor", "start")]
        boxes.append((text, (left, y - 0.8 * size, left + w, y + 0.2 * size)))
    return boxes


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_overlap_nothing(charts):
    for title, root in charts.items():
        boxes = label_boxes(root, ("label", "key"))
        placed = {t for t, _ in label_boxes(root)}
        for i, (ta, a) in enumerate(boxes):
            for tb, b in boxes[i + 1:]:
                assert not overlap(a, b), (title, ta, tb)
        if title.startswith("Latency"):
            assert placed == {p[0] for p in PRESETS}
            continue
        keyed = "".join("".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("class") == "key")
        for name, (cx, cy) in circles(root).items():  # every preset is labelled at its point or named in the key
            assert name in placed or name in keyed, (title, name)
            marker = (cx - 4, cy - 4, cx + 4, cy + 4)
            for text, box in label_boxes(root):
                if text != name:
                    assert not overlap(box, marker), (title, text, "covers the marker of", name)
        assert len(placed) >= len(PRESETS) - 2, (title, "labels should mostly fit at their points")


def test_latency_chart_has_its_unit_and_a_log_axis(charts):
    (title,) = [t for t in charts if t.startswith("Latency")]
    root = charts[title]
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert any("ms" in t and "log" in t for t in texts), texts  # the axis names unit and scale
    ticks = [t for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert ticks and all("".join(t.itertext()).endswith(" ms") for t in ticks)
    tick_at = {float("".join(t.itertext()).removesuffix(" ms").replace(",", "")): float(t.get("y")) - 3 for t in ticks}
    assert affine_in({v: math.log(v) for v in tick_at}, tick_at) < 0.2 and len(tick_at) >= 2
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("data-value")]
    assert len(bars) == len(PRESETS) * len(MEDIAN_MS)
    tops = {i: float(r.get("y")) for i, r in enumerate(bars)}
    assert affine_in({i: math.log(float(r.get("data-value"))) for i, r in enumerate(bars)}, tops) < 0.2
    # the bars' tops agree with the tick labels' scale
    a, b = max(tick_at), min(tick_at)
    per_log = (tick_at[a] - tick_at[b]) / math.log(a / b)
    r0, r1 = bars[0], bars[1]
    assert float(r1.get("y")) - float(r0.get("y")) == pytest.approx(
        per_log * math.log(float(r1.get("data-value")) / float(r0.get("data-value"))), abs=0.2)
