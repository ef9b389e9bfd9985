"""The default bundle is int4 by GPTQ for text models, calibrated on text that ships inside the
package (ulpq_build/data/calibration_text*.txt, written for this project) and never on the Lee
corpus that bench evaluates on; formats the user names keep round-to-nearest unless --method gptq."""

import re
from pathlib import Path

import numpy as np
import pytest

from ulpq_build import calibration, evaluation
from ulpq_build.architectures import describe_model
from ulpq_build.architectures.registry import PLANNER_PASSAGES, CalibrationInputs
from ulpq_build.model_source import open_model, resolve_model
from ulpq_build.strategy import choose_method


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def shingles(text: str, n: int = 6) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_calibration_text_ships_in_the_package_and_is_varied():
    lines = []
    for path in calibration.CALIBRATION_TEXTS:
        assert path.is_relative_to(Path(calibration.__file__).parent)  # inside the wheel's package
        lines += calibration.calibration_lines(path)
    assert len(lines) >= 1700 and len(set(lines)) == len(lines)
    lengths = sorted(len(words(line)) for line in lines)
    assert lengths[0] <= 3 and lengths[-1] >= 40  # short and long
    assert sum(line.endswith("?") for line in lines) >= 40  # questions too
    passages = calibration.calibration_text()
    assert " ".join(passages) == " ".join(lines)  # every line, in order, once
    per_file = [len(calibration.calibration_lines(path)) for path in calibration.CALIBRATION_TEXTS]
    assert len(passages) == sum(-(-n // calibration.PASSAGE_SENTENCES) for n in per_file)  # no passage spans two files


def test_calibration_text_shares_nothing_with_the_evaluation_corpus():
    docs, _ = evaluation.lee_corpus()  # what bench scores (gensim's test data, installed by scripts/setup.sh)
    background = (evaluation._gensim_data() / "lee_background.cor").read_text(encoding="latin-1")
    for path in calibration.CALIBRATION_TEXTS:
        ours = shingles(path.read_text(encoding="utf-8"))
        assert ours  # the check below compares something
        assert not ours & shingles(" ".join(docs)), f"{path.name} repeats the Lee evaluation documents"
        assert not ours & shingles(background), f"{path.name} repeats the Lee background corpus"


@pytest.mark.parametrize("passages, kept", [(298, list(range(0, 298, 20))), (58, list(range(0, 58, 4))), (9, list(range(9)))])
def test_the_planner_sees_at_most_a_bounded_subset_spread_over_all_passages(passages, kept):
    """The planner's time is its subset's size: at most PLANNER_PASSAGES passages, evenly spaced, so
    the second calibration file's topics are in it too (58 passages: every 4th, as before it came)."""
    ids = np.arange(passages)[:, None] * np.ones((1, 5), np.int64)
    mask = np.ones_like(ids)
    mask[:, 3:] = 0  # trailing padding in every row: the subset is trimmed to its longest passage
    inputs = CalibrationInputs.of_tokens(evaluation.TextBatch(ids, mask), "tokenizer.json", "table")
    assert inputs.subset.ids[:, 0].tolist() == kept and len(kept) <= PLANNER_PASSAGES
    assert inputs.subset.ids.shape[1] == 3 and inputs.full.ids.shape == (passages, 5)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("models")
    found = {}
    for name in ("builtin:minilm", "builtin:vit", "builtin:mlp"):
        source = open_model(resolve_model(name, scratch)[0])
        found[name] = (describe_model(source), source)
    return found


def test_auto_is_gptq_for_the_default_text_bundle_only(models):
    bert, source = models["builtin:minilm"]
    assert choose_method("auto", bert, source, default_formats=True) == "gptq"
    assert choose_method("auto", bert, source, default_formats=False) == "rtn"  # --format / --config / a budget
    assert choose_method("rtn", bert, source, default_formats=True) == "rtn"
    assert choose_method("gptq", bert, source, default_formats=False) == "gptq"
    for name in ("builtin:vit", "builtin:mlp"):  # no calibration inside the package: round to nearest
        model, src = models[name]
        assert choose_method("auto", model, src, default_formats=True) == "rtn"


def test_text_calibration_reads_the_shipped_text(models, monkeypatch):
    """Calibrating MiniLM tokenizes the shipped passages, and needs nothing of gensim's."""
    monkeypatch.setattr(evaluation, "_gensim_data", lambda: pytest.fail("calibration read gensim's corpus"))
    seen = []
    real = evaluation.tokenize
    monkeypatch.setattr(evaluation, "tokenize", lambda f, texts, n: seen.append(list(texts)) or real(f, texts, n))
    bert, source = models["builtin:minilm"]
    cal = calibration.calibration_for(bert, source.folder)
    assert seen == [calibration.calibration_text()]
    assert cal.model is bert


@pytest.mark.parametrize("tokenizer", ["unreadable", "too-large-a-vocabulary"])
def test_auto_rounds_to_nearest_where_calibration_cannot_run(tmp_path, capsys, models, tokenizer):
    """A BERT whose tokenizer.json the tokenizers package cannot read, or whose ids overflow the word
    table, gets the rounding default (as before GPTQ was), and an explicit --method gptq one line."""
    import json
    import shutil

    from support import tiny_bert
    from ulpq_build import cli

    folder = tiny_bert(tmp_path / "bert")
    if tokenizer == "unreadable":
        (folder / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')
    else:  # MiniLM's 30522-token vocabulary over a 40-row word table
        shutil.copy(models["builtin:minilm"][1].folder / "tokenizer.json", folder / "tokenizer.json")
    assert cli.main(["bundle", "--model", str(folder), "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["quantization"]["method"] == "rtn"
    capsys.readouterr()
    assert cli.main(["bundle", "--model", str(folder), "--method", "gptq", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = ("tokenizer.json: the tokenizers package cannot read it" if tokenizer == "unreadable"
                else "this tokenizer is not the model's")
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "g").exists()
