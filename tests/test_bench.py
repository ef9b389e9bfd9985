"""bench's pieces without browsers: preset names, the goals verdicts, the report page, and the
command's early errors. (The command itself runs in all three browsers in e2e/.)"""

import json

import pytest

from support import run_cli
from ulpq_build.bench import GOALS, Preset, Row, evaluate_goals, model_folders, write_index
from ulpq_build.errors import UserError
from ulpq_build.report import markdown_tables, write_report


def row(preset, fmt, bpw, ratio, method="rtn"):
    return Row(preset, fmt, method, bpw, int(bpw * 1e6), int(bpw * 1.1e6),
               {"metric": "Lee Pearson", "value": round(0.65 * ratio / 100, 4), "ratio": ratio, "float32": 0.65})


def test_preset_names():
    assert Preset.parse("int4", "bert").options == {"overrides": {"format": "int4"}, "method": "rtn"}
    gptq = Preset.parse("int3-gptq", "bert")
    assert gptq.format == "int3" and gptq.options["method"] == "gptq"
    two_bit = Preset.parse("int2-gptq", "bert")
    assert two_bit.options["overrides"] == {"format": "int2-ternary", "group_size": 32, "scale_dtype": "float16"}
    mixed = Preset.parse("mixed-2.5", "vit")
    assert mixed.format == "mixed" and mixed.options == {"target_bpw": 2.5, "method": "gptq"}
    for bad, words in [("int9", "unknown preset 'int9'"), ("mixed-two", "mixed-<bits per weight>"),
                       ("int9-gptq", "unknown preset")]:
        with pytest.raises(UserError, match=words):
            Preset.parse(bad, "bert")


def test_goals_pick_the_best_qualifying_preset_and_state_the_gap():
    rows = [row("float32", "float32", 32, 100), row("int4", "int4", 4.07, 98.9), row("int4-gptq", "int4", 4.07, 101.65, "gptq"),
            row("int3", "int3", 3.32, 97.56), row("int2", "int2", 2.07, 47.2), row("int2-gptq", "int2-ternary", 2.5, 89.42, "gptq"),
            row("mixed-2.5", "mixed", 2.49, 90.1, "gptq"), row("mixed-3.32", "mixed", 3.31, 99.9, "gptq")]
    goals = {g["goal"]: g for g in evaluate_goals("bert", rows)}
    assert [g.label for g in GOALS["bert"]] == list(goals)
    int4 = goals["int4 >= 99.5 %"]
    assert int4["best"] == "int4-gptq" and int4["met"] and int4["gap"] == 0
    int3 = goals["int3 >= 98 %"]
    assert int3["best"] == "int3" and not int3["met"] and int3["gap"] == pytest.approx(0.44)
    two = goals["best 2-bit method, <= 2.5 bits/weight, >= 92 %"]
    assert two["best"] == "mixed-2.5" and two["gap"] == pytest.approx(1.9)  # a mix within 2.5 bits qualifies
    mixed = goals["mixed precision, <= 3 bits/weight, >= 99 %"]
    assert mixed["best"] == "mixed-2.5" and mixed["gap"] == pytest.approx(8.9)  # mixed-3.32 is over the budget
    assert evaluate_goals("bert", rows[:4])[2]["best"] is None  # nothing at 2 bits measured


def test_an_over_budget_two_bit_format_does_not_qualify():
    goals = evaluate_goals("vit", [row("int2-g16", "int2", 3.1, 99.0), row("int2", "int2", 2.07, 93.0)])
    two = goals[1]
    assert two["best"] == "int2" and two["gap"] == pytest.approx(1.0)


def test_report_page(tmp_path):
    rows = [row("float32", "float32", 32, 100), row("int4", "int4", 4.07, 98.9), row("<mixed>", "mixed", 2.9, 99.2, "gptq")]
    rows[1].browsers = [{"browser": "chromium", "path": "webgpu", "variant": "chrome-256", "metric": "min cosine", "value": 0.99999,
                         "passed": True, "load_ms": 120.0, "init_ms": 30.0, "first_ms": 900.0, "median_ms": 800.0,
                         "downloaded_bytes": 4_200_000, "gpu_buffer_bytes": 4_100_000, "js_heap_bytes": None}]
    result = {"model": "m", "architecture": "bert", "date": "2026-11-28", "machine": "x86_64", "browsers": ["chromium"],
              "float32": 0.65, "float32_weight_bytes": 32_000_000, "rows": [r.__dict__ for r in rows],
              "goals": evaluate_goals("bert", rows), "screenshots": {"chromium": "screenshots/chromium.png"}}
    json.dumps(result)  # results.json holds exactly this
    page = tmp_path / "report.html"
    write_report(result, page)
    html = page.read_text()
    assert html.count("<svg") == 4  # bytes vs bits, accuracy vs bits, accuracy vs bytes, latency
    assert "missed by 0.6 points" in html  # int4 at 98.9 against 99.5
    assert "&lt;mixed&gt;" in html and "<mixed>" not in html
    assert "<td>7.86</td>" in html  # 32 MB / 4.07 MB: times smaller than float32
    assert "<td>4.20</td>" in html  # downloaded MB
    assert 'src="screenshots/chromium.png"' in html

    md = markdown_tables(result)
    assert "| int4 >= 99.5 % | int4 | 4.07 | 98.9 | missed by 0.6 points |" in md
    assert "| int4 | rtn | 4.070 | 4.07 | 7.86 | 0.6429 | 98.9 |" in md
    assert "| int4 | webgpu, pass, 800 | 4.20 |" in md  # no float32 run in this browser: no ratio
    assert "| float32 | FAIL: not run | - |" in md


@pytest.mark.parametrize("args, words", [
    (["--browsers", "chromium,lynx"], "unknown browser 'lynx'"),
    (["--formats", "int4,int9"], "unknown preset 'int9'"),
])
def test_bench_rejects_bad_options_at_once(tmp_path, args, words):
    out = tmp_path / "out"
    proc = run_cli("bench", "--model", "builtin:vit", "--out", out, *args, check=2)
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_several_models_get_a_folder_each_and_an_index(tmp_path):
    out = tmp_path / "bench"
    assert model_folders(["builtin:vit"], out) == [out]
    assert model_folders(["builtin:minilm", "builtin:vit"], out) == [out / "minilm", out / "vit"]
    with pytest.raises(UserError, match="share result folders"):
        model_folders(["builtin:vit", "builtin:vit"], out)
    with pytest.raises(UserError, match="unknown built-in model"):
        model_folders(["builtin:vit", "builtin:resnet"], out)
    rows = [row("int4", "int4", 4.07, 99.1)]
    results = [({"model": "vit-fashion-mnist", "goals": evaluate_goals("vit", rows)}, out / "vit")]
    out.mkdir()
    html = write_index(results, out).read_text()
    assert 'href="vit/report.html"' in html and "int4 &gt;= 99 %: int4 99.1% (met)" in html


def test_bench_checks_every_model_name_before_starting(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("bench", "--model", f"builtin:vit,{tmp_path / 'missing'}", "--browsers", "", "--out", out, check=2)
    assert "missing: no such file or folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()
