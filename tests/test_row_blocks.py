"""Word tables planned in row blocks (ulpq_build/row_blocks.py): the planner gives blocks of a BERT
word table's rows formats of their own, checkpoints and bundles store each block as a tensor, every
reader puts the table back together, and every runtime path gathers block by block
(web_runtime/graphs.js embedTable) with the numpy reference's numbers."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from support import ROOT, node_json, run_cli, tiny_bert

from ulpq_build import row_blocks
from ulpq_build.checkpoint import PART_SEPARATOR
from ulpq_build.errors import UserError
from ulpq_build.plan import PlanEntry
from ulpq_build.quantspec import QuantSpec

WORD = "embeddings.word_embeddings.weight"
VOCAB = 30522  # MiniLM's tokenizer: the calibration text and the checks gather real, frequency-ordered ids
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A small random BERT behind MiniLM's tokenizer, bundled at 2.5 bits per weight by the planner
    with GPTQ (as `bundle --target-bpw 2.5 --method gptq`)."""
    from ulpq_build.model_source import resolve_model

    root = tmp_path_factory.mktemp("row-blocks")
    model = tiny_bert(root / "bert", hidden=32, inter=64, heads=2, layers=2, vocab=VOCAB, positions=128)
    minilm, _ = resolve_model("builtin:minilm", root)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(minilm / name, model / name)
    out = root / "b25"
    run_cli("bundle", "--model", model, "--out", out, "--target-bpw", "2.5", "--method", "gptq", check=0)
    return root, model, out


def test_row_ranges_cover_the_table_finer_at_the_front():
    assert row_blocks.row_ranges(row_blocks.MIN_TABLE_ROWS - 1) == [(0, row_blocks.MIN_TABLE_ROWS - 1)]
    ranges = row_blocks.row_ranges(VOCAB)
    assert ranges[0][0] == 0 and ranges[-1][1] == VOCAB and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert sizes[2:4] == sorted(sizes[2:4]) and sizes[0] < sizes[3] and len(ranges) == len(row_blocks.BLOCK_EDGES) + 1
    name = row_blocks.block_name(WORD, 1908, 3815)
    assert row_blocks.parse(name) == (WORD, 1908, 3815) and row_blocks.parse(WORD) is None
    assert row_blocks.table_of(name) == WORD == row_blocks.table_of(WORD)
    tensors = row_blocks.expand([(WORD, (VOCAB, 32), "float32"), ("other", (VOCAB, 32), "float32")], {WORD})
    assert [n for n, _, _ in tensors][-1] == "other" and sum(s[0] for n, s, _ in tensors[:-1]) == VOCAB


def test_merge_joins_runs_of_one_spec_and_restores_a_whole_table():
    a, b = QuantSpec("e8p"), QuantSpec("e81b")
    ranges = row_blocks.row_ranges(VOCAB)

    def entries(specs):
        return [PlanEntry(row_blocks.block_name(WORD, lo, hi), (hi - lo, 32), "float32", s, "planner")
                for (lo, hi), s in zip(ranges, specs)] + [PlanEntry("x", (4, 4), "float32", a, "planner")]

    make = lambda name, shape, e: replace(e, name=name, shape=shape)
    merged = row_blocks.merge(entries([a, a, b, b, b, a]), make)
    assert [(e.name, e.shape[0], e.spec) for e in merged] == [
        (row_blocks.block_name(WORD, 0, ranges[1][1]), ranges[1][1], a),
        (row_blocks.block_name(WORD, ranges[2][0], ranges[4][1]), ranges[4][1] - ranges[2][0], b),
        (row_blocks.block_name(WORD, *ranges[5]), ranges[5][1] - ranges[5][0], a), ("x", 4, a)]
    whole = row_blocks.merge(entries([b] * 6), make)
    assert [(e.name, e.shape) for e in whole] == [(WORD, (VOCAB, 32)), ("x", (4, 4))]


def test_blocks_that_leave_a_gap_are_refused_and_put_copies():
    with pytest.raises(ValueError, match="do not cover"):
        row_blocks.groups([row_blocks.block_name(WORD, 0, 10), row_blocks.block_name(WORD, 11, 20)])
    with pytest.raises(ValueError, match="do not cover"):
        row_blocks.groups([row_blocks.block_name(WORD, 5, 10)])
    original = np.arange(12, dtype=np.float32).reshape(6, 2)
    weights = {WORD: original}
    row_blocks.put(weights, row_blocks.block_name(WORD, 2, 4), np.full((2, 2), -1, np.float32))
    assert np.array_equal(original, np.arange(12, dtype=np.float32).reshape(6, 2))  # never written in place
    assert weights[WORD][2:4].tolist() == [[-1, -1], [-1, -1]] and weights[WORD][4, 0] == 8
    got = row_blocks.tensor(weights.__getitem__, row_blocks.block_name(WORD, 4, 6))
    assert got.tolist() == [[8, 9], [10, 11]]


def test_the_planned_bundle_stores_the_word_table_in_blocks(planned):
    """Several blocks in at least two formats (the frequent rows more bits than the rare ones), each
    a tensor of the manifest; the graph's word node lists them; load_bundle puts the table together,
    equal to each block's dequantization."""
    from ulpq_build.bundle_reader import load_bundle

    _, _, out = planned
    bundle = load_bundle(out)
    word = bundle.model["embeddings"]["word"]
    parts = word["parts"]
    assert word["table"] == WORD and "kernels" not in word and len(parts) >= 3
    by_name = {t["name"]: t for t in bundle.manifest["tensors"]}
    formats = [by_name[p["table"]]["format"] for p in parts]
    assert len(set(formats)) >= 2, formats
    bits = [by_name[p["table"]]["bits_per_weight"] for p in parts]
    assert bits[-1] < max(bits), bits  # the rarest rows are not the costliest
    assert [p["first"] for p in parts] == [row_blocks.parse(p["table"])[1] for p in parts]
    assert WORD not in by_name and all(set(p["kernels"]) == set(bundle.manifest["model"]["op_kernels"]) for p in parts)
    table = bundle.weights[WORD]
    assert table.shape == (VOCAB, 32) and not any(p["table"] in bundle.weights for p in parts)
    from ulpq_build.bundle_reader import _tensor_parts, verify_files
    from ulpq_build.quantize import dequantize_parts

    shards = verify_files(out, bundle.manifest)
    for p in parts:
        entry = by_name[p["table"]]
        spec, stored = _tensor_parts(entry, shards, p["table"])
        first, end = row_blocks.parse(p["table"])[1:]
        assert np.array_equal(dequantize_parts(stored, spec, tuple(entry["shape"]), source=""), table[first:end])


def test_quantize_writes_the_blocks_and_dequantize_restores_the_table(planned, tmp_path):
    """`quantize --target-bpw` plans the same blocks as `bundle`; `dequantize` gives back one table of
    the original name and shape, equal to the bundle's."""
    from ulpq_build.bundle_reader import load_bundle
    from ulpq_build.safetensors_io import SafetensorsFile

    _, model, out = planned
    run_cli("quantize", model, "--out", tmp_path / "q.safetensors", "--target-bpw", "2.5", "--method", "gptq", check=0)
    stored = SafetensorsFile(tmp_path / "q.safetensors")
    names = {n.rsplit(PART_SEPARATOR, 1)[0] for n in stored.names if n.startswith(WORD + "[") and n.endswith(PART_SEPARATOR + "codes")}
    parts = load_bundle(out).model["embeddings"]["word"]["parts"]
    assert names == {p["table"] for p in parts}
    run_cli("dequantize", tmp_path / "q.safetensors", "--out", tmp_path / "d.safetensors", check=0)
    restored = SafetensorsFile(tmp_path / "d.safetensors")
    assert WORD in restored.names and not any("[" in n for n in restored.names)
    assert np.array_equal(np.asarray(restored.tensor(WORD)), load_bundle(out).weights[WORD])


def test_a_manifest_whose_blocks_leave_a_gap_is_refused(planned, tmp_path):
    from ulpq_build.bundle_reader import load_bundle

    _, _, out = planned
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    first = next(t for t in manifest["tensors"] if t["name"].startswith(WORD + "["))
    first["name"] = row_blocks.block_name(WORD, 1, row_blocks.parse(first["name"])[2])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="do not cover its rows"):
        load_bundle(copy)


def test_parts_that_do_not_add_up_to_the_table_are_refused(planned, tmp_path):
    """A graph node whose blocks hold fewer rows than it says (its last block gone from the tensors
    and the parts alike), parts that name another table or the wrong first row: each one line. In a
    bundle, the node's `rows` edited: load_bundle refuses it, no traceback."""
    from ulpq_build.bundle_reader import load_bundle

    _, _, out = planned
    bundle = load_bundle(out)
    node = json.loads(json.dumps(bundle.model["embeddings"]["word"]))
    blocks = {p["table"]: bundle.weights[WORD][p["first"]:row_blocks.parse(p["table"])[2]] for p in node["parts"]}
    assert row_blocks.check_parts([node], row_blocks.assemble(blocks)) is None
    last = node["parts"].pop()["table"]
    short = row_blocks.assemble({n: b for n, b in blocks.items() if n != last})
    assert "hold 15261 rows, its graph node says 30522" in row_blocks.check_parts([node], short)
    node["parts"][0]["first"] = 5
    assert "first row" in row_blocks.check_parts([node], short)
    node["parts"][0] = {"table": "other[0:10]", "first": 0}
    assert "not row blocks of it" in row_blocks.check_parts([node], short)
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["embeddings"]["word"]["rows"] = VOCAB + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"its blocks hold {VOCAB} rows, its graph node says {VOCAB + 1}"):
        load_bundle(copy)


def block_sentences(out) -> tuple[list[str], list[dict]]:
    """Sentences whose tokens fall in every block of the bundle's word table: a whole word of the
    vocabulary from each block (the blocks' rows are token ids)."""
    from ulpq_build.bundle_reader import load_bundle

    parts = load_bundle(out).model["embeddings"]["word"]["parts"]
    vocab = (out / "tokenizer.json").read_text()
    words = json.loads(vocab)["model"]["vocab"]
    by_id = {i: w for w, i in words.items()}
    chosen = []
    for p in parts:
        end = row_blocks.parse(p["table"])[2]
        picks = [by_id[i] for i in range(max(p["first"], 1000), end) if by_id[i].isalpha() and by_id[i].isascii()][:3]
        chosen.append(picks)
    sentences = [" ".join(w[i] for w in chosen if len(w) > i) + "." for i in range(3)]
    return sentences, parts


def expected_embeddings(out, sentences):
    from ulpq_build import evaluation as ev
    from ulpq_build.architectures import architecture_of
    from ulpq_build.bundle_reader import load_bundle

    bundle = load_bundle(out)
    batch = ev.tokenize(out / "tokenizer.json", sentences, bundle.model["tokenizer"]["max_length"])
    return bundle, batch, architecture_of(bundle.model).reference_forward(bundle.model, bundle.weights, batch)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("cpu", ["js", "wasm"])
def test_the_cpu_paths_gather_every_block(planned, cpu, tmp_path):
    _, _, out = planned
    sentences, parts = block_sentences(out)
    bundle, batch, expected = expected_embeddings(out, sentences)
    ids = batch.ids.ravel()
    for p in parts:  # the sentences reach every block
        assert ((ids >= p["first"]) & (ids < row_blocks.parse(p["table"])[2])).any(), p["table"]
    got = node_json(ROOT / "tests/js/run_cpu_backend.mjs", out, request={"options": {"cpu": cpu}, "sentences": sentences},
                    tmp_path=tmp_path)
    assert cosines(np.array(got["output"]).reshape(len(sentences), -1), expected).min() >= MIN_COSINE


@pytest.mark.browser
@pytest.mark.parametrize("browser", ["chromium", "firefox", "node"])
def test_browsers_gather_every_block_on_webgpu_and_the_cpu_path(planned, browser):
    """WebGPU (one gather dispatch per block, the ids shifted per block) and the CPU path, poisoned
    outputs, against the numpy reference over the bundle's weights. A browser that does not start
    fails the test."""
    from ulpq_build.browser_check import check_in_browser
    from ulpq_build.browsers import launch
    from ulpq_build.serve import BundleServer

    root, _, out = planned
    sentences, parts = block_sentences(out)
    bundle, _, expected = expected_embeddings(out, sentences)
    prepared = ("texts", sentences, expected, lambda got: ("min cosine", float(cosines(got, expected).min())))
    server = BundleServer(root, 0).start_in_background()
    session = launch(browser)
    try:
        for query, path in (("", "webgpu"), ("&hardware=cpu", "cpu")):
            result = check_in_browser(session, f"{server.url}{out.name}/index.html", bundle, browser, query=query,
                                      prepared=prepared)
            assert result.error is None and result.passed and result.path == path, result
            assert result.value >= MIN_COSINE, result
    finally:
        session.close()
        server.shutdown()
        server.server_close()
