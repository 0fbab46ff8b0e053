"""Metrics against hand-computed / NumPy references (no sklearn, scipy or seqeval)."""

import numpy as np
import pytest

from tinybert_tf.data import metrics, tasks


def test_accuracy_and_binary_f1():
    p, y = np.array([1, 0, 1, 1, 0, 0]), np.array([1, 0, 0, 1, 1, 0])
    assert metrics.accuracy(p, y) == pytest.approx(4 / 6)
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3 -> F1 2/3
    assert metrics.f1(p, y) == pytest.approx(2 / 3)
    assert metrics.f1([0, 0], [0, 0]) == 0.0


def test_matthews_matches_hand_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    tp = np.sum((p == 1) & (y == 1))
    tn = np.sum((p == 0) & (y == 0))
    fp = np.sum((p == 1) & (y == 0))
    fn = np.sum((p == 0) & (y == 1))
    ref = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert metrics.matthews_corr(p, y) == pytest.approx(ref)
    assert metrics.matthews_corr(y, y) == pytest.approx(1.0)
    assert metrics.matthews_corr(np.ones(5), y[:5]) == 0.0  # constant prediction


def test_pearson_and_spearman():
    rng = np.random.default_rng(1)
    y = rng.normal(size=100)
    p = y + rng.normal(size=100)
    assert metrics.pearson(p, y) == pytest.approx(np.corrcoef(p, y)[0, 1])
    # Spearman = Pearson of ranks; with ties the ranks are averaged.
    assert metrics.spearman(p, y) == pytest.approx(
        np.corrcoef(np.argsort(np.argsort(p)), np.argsort(np.argsort(y)))[0, 1])
    assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert metrics.spearman([1, 2, 3], [10, 20, 1000]) == pytest.approx(1.0)
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_entity_chunks_and_f1():
    assert metrics.get_chunks(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 5, 5)]
    # IOB1: I- after O starts a chunk; a type change ends one.
    assert metrics.get_chunks(["I-PER", "I-PER", "I-LOC", "O"]) == [("PER", 0, 1), ("LOC", 2, 2)]
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # 3 true chunks, 3 predicted, 2 correct -> P = R = 2/3
    assert metrics.entity_f1(pred, true) == pytest.approx(2 / 3)
    names = tasks.CONLL_NER_TAGS
    ids = [[names.index(t) for t in s] for s in pred]
    assert metrics.entity_f1(ids, [[names.index(t) for t in s] for s in true], names) == (
        pytest.approx(2 / 3))
    # A partly-found entity is wrong at entity level.
    assert metrics.entity_f1([["B-PER", "O"]], [["B-PER", "I-PER"]]) == 0.0


def test_compute_from_task_specs_and_model_outputs():
    logits = np.array([[2.0, 0.1], [0.1, 2.0], [0.3, 0.2], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    out = metrics.compute(tasks.TASKS["mrpc"], logits, y)
    assert out == pytest.approx({"accuracy": 0.75, "f1": 0.8})
    assert set(metrics.compute(tasks.TASKS["cola"], logits, y)) == {"matthews_corr"}
    scores = np.array([[0.1], [0.5], [0.4], [0.9]])
    out = metrics.compute(tasks.TASKS["stsb"], scores, np.array([0.0, 2.0, 1.0, 3.0]))
    assert out["pearson"] == pytest.approx(np.corrcoef(scores[:, 0], [0, 2, 1, 3])[0, 1])
    assert out["spearman"] == pytest.approx(1.0)
    # NER: -100 positions ([CLS], continuation pieces, padding) are dropped before chunking.
    labels = np.array([[-100, 1, -100, 2, 0, -100]])
    preds = np.array([[0, 1, 5, 2, 0, 0]])
    assert metrics.compute(tasks.TASKS["conll2003"], preds, labels) == {"entity_f1": 1.0}
    seqs = metrics.token_tag_sequences(np.eye(9)[preds], labels)
    assert seqs == ([[1, 2, 0]], [[1, 2, 0]])
    assert metrics.compute(["accuracy"], [1, 1], [1, 0]) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="Unknown metric"):
        metrics.compute("bleu", [1], [1])
