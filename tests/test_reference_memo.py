"""reference.memoized (what the planner's sensitivity pass runs under): a forward that changes one
matrix reuses every operator before it and gives exactly the numbers of a forward without the memo;
what it hands back cannot be written into; the sensitivity pass gives the same table in one process
and in forked workers."""

import numpy as np
import pytest
from support import tiny_bert

from ulpq_build import planner
from ulpq_build.architectures import describe_model, model_tensors
from ulpq_build.architectures.bert import bert_forward
from ulpq_build.model_source import open_model
from ulpq_build.reference import layernorm, memoized


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tiny_bert(tmp_path_factory.mktemp("bert"), layers=3)
    source = open_model(folder)
    model = describe_model(source)
    weights = {n: np.asarray(source.weights.tensor(n), np.float32) for n in model_tensors(model)}
    rng = np.random.default_rng(4)
    ids = rng.integers(5, 40, size=(3, 9))
    mask = (np.arange(9)[None] < np.array([[9], [6], [4]])).astype(np.int64)
    return model, weights, ids, mask


def test_a_changed_matrix_reuses_what_comes_before_it_and_changes_nothing(bert):
    model, weights, ids, mask = bert
    name = "encoder.layer.1.intermediate.dense.weight"
    trial = dict(weights)
    trial[name] = weights[name] + np.float32(0.01) * np.sign(weights[name])
    plain = [bert_forward(model, w, ids, mask, dtype=np.float32) for w in (weights, trial, weights)]
    with memoized() as memo:
        base = bert_forward(model, weights, ids, mask, dtype=np.float32)
        first = memo.misses
        assert memo.hits == 0 and first > 0
        changed = bert_forward(model, trial, ids, mask, dtype=np.float32)
        # the embeddings' layernorm, layer 0 (6 products, attention, 2 layernorms) and layer 1 up to the
        # changed product (query, key, value, attention, output, layernorm) come back: 16 operators
        assert memo.hits == 16, memo.hits
        again = bert_forward(model, weights, ids, mask, dtype=np.float32)
    for memoized_run, plain_run in zip((base, changed, again), plain):
        np.testing.assert_array_equal(memoized_run, plain_run)
    assert not np.array_equal(plain[0], plain[1])  # the change reached the output


def test_a_reused_output_cannot_be_written_into(bert):
    model, weights, ids, mask = bert
    node = model["layers"][0]["attn_norm"]
    x = np.random.default_rng(1).standard_normal((5, weights[node["weight"]].shape[0])).astype(np.float32)
    with memoized() as memo:
        y = layernorm(x, node, weights, 1e-12)
        assert layernorm(x.copy(), node, weights, 1e-12) is y and memo.hits == 1  # equal input: reused
        with pytest.raises(ValueError):
            y += 1.0
        assert layernorm(x + 1, node, weights, 1e-12) is not y  # other input: computed again
    assert layernorm(x, node, weights, 1e-12) is not y  # outside the block nothing is kept


def test_sensitivities_are_the_same_in_one_process_and_in_forked_workers(bert, monkeypatch):
    model, weights, ids, mask = bert

    class Calibration:  # the planner's view of a calibration: the model and its subset run
        def __init__(self):
            self.model = model

        def run_subset(self, w):
            return bert_forward(model, w, ids, mask, dtype=np.float32)

    names = [n for n in model_tensors(model) if n.endswith(".weight") and "encoder" in n and "LayerNorm" not in n]
    matrices = [(n, weights[n].shape) for n in names]
    options = {n: [s for s in planner.candidates_for(weights[n].shape) if s.fmt.quantized][:3] for n in names}
    tables = {}
    for workers in (1, 3):
        monkeypatch.setattr(planner, "sensitivity_workers", lambda matrices, w=workers: w)
        lines = []
        tables[workers] = planner.sensitivities(matrices, options, weights, Calibration(), lines.append)
        assert [line.split(" (")[0] for line in lines] == [f"sensitivity {i + 1}/{len(names)} {n}" for i, n in enumerate(names)]
    assert tables[1] == tables[3] and all(c > 0 for costs in tables[1].values() for c in costs)
