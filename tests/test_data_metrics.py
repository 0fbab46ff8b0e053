"""Metrics against hand-computed / NumPy references, and against the field's references:
scikit-learn and scipy (GLUE metrics) and seqeval (CoNLL entity F1), test-only dependencies.
"""

import warnings

import numpy as np
import pytest
from scipy import stats
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics.sequence_labeling import get_entities
from sklearn import metrics as skm

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


# --- Against scikit-learn / scipy / seqeval --------------------------------------------------
# Conventions: where a reference is undefined (scipy NaN for a constant input) ours give 0.0;
# sklearn and seqeval are called with zero_division=0, which is what ours do.

SEEDS = range(40)
TYPES = ("PER", "ORG", "LOC", "MISC")


def _ref(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-input / zero-division / not-a-NE-tag warnings
        v = fn(*args, **kw)
    return float(v[0] if isinstance(v, tuple) else getattr(v, "statistic", v))


def _classification_case(rng):
    """Random labels/predictions, sometimes with a constant prediction or a class absent."""
    n, k = int(rng.integers(1, 60)), int(rng.integers(2, 6))
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < rng.random(), y, rng.integers(0, k, n))
    mode = rng.integers(0, 4)
    if mode == 0:
        p = np.full(n, rng.integers(0, k))  # constant prediction
    elif mode == 1:
        p = np.where(p == k - 1, 0, p)  # a class present in labels is never predicted
    elif mode == 2:
        y = np.where(y == 1, 0, y)  # a class present in predictions is absent from labels
    return p, y


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn(seed):
    for i in range(10):
        p, y = _classification_case(np.random.default_rng([seed, i]))
        assert metrics.accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
        assert metrics.matthews_corr(p, y) == pytest.approx(
            _ref(skm.matthews_corrcoef, y, p), abs=1e-12)
        # Binary F1 (positive class 1), on the binarised case and one-vs-rest on k classes.
        pb, yb = p % 2, y % 2
        assert metrics.f1(pb, yb) == pytest.approx(skm.f1_score(yb, pb, zero_division=0.0))
        assert metrics.matthews_corr(pb, yb) == pytest.approx(
            _ref(skm.matthews_corrcoef, yb, pb), abs=1e-12)
        assert metrics.f1(p, y) == pytest.approx(
            skm.f1_score(y, p, labels=[1], average="macro", zero_division=0.0))


def test_classification_edge_cases_match_sklearn():
    cases = [
        ([1, 1, 1, 1], [1, 0, 1, 0]),  # constant prediction
        ([0, 0, 0, 0], [1, 0, 1, 0]),  # no predicted positive
        ([1, 0, 1, 0], [0, 0, 0, 0]),  # no true positive (class 1 absent)
        ([0, 0, 0], [0, 0, 0]),  # one class only, all correct
        ([1, 1, 1], [1, 1, 1]),
        ([0, 1, 0, 1], [1, 0, 1, 0]),  # all wrong -> MCC -1
        ([1], [0]),  # one sample
        ([2, 2, 0, 1], [0, 1, 2, 2]),  # multi-class, all wrong
        (["a", "b", "b"], ["a", "a", "b"]),  # string class labels
    ]
    for p, y in cases:
        assert metrics.accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
        assert metrics.matthews_corr(p, y) == pytest.approx(
            _ref(skm.matthews_corrcoef, y, p), abs=1e-12)
        if not isinstance(p[0], str):
            assert metrics.f1(p, y) == pytest.approx(
                skm.f1_score(y, p, labels=[1], average="macro", zero_division=0.0))
    assert metrics.matthews_corr([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # Empty inputs: 0.0 (sklearn's accuracy_score would give NaN on empty input).
    assert metrics.accuracy([], []) == 0.0
    assert metrics.f1([], []) == 0.0
    assert metrics.matthews_corr([], []) == 0.0


def _regression_case(rng):
    n = int(rng.integers(2, 80))

    def draw():
        kind = rng.integers(0, 3)
        if kind == 0:
            return rng.normal(size=n)
        if kind == 1:  # many ties (STS-B-like scores on a 0..5 grid)
            return rng.integers(0, 6, n) / 1.0
        return np.round(rng.normal(size=n), 1)  # some ties

    x, y = draw(), draw()
    if rng.random() < 0.3:
        y = 2.0 * x + rng.normal(scale=0.1, size=n)  # strongly correlated
    return x, y


@pytest.mark.parametrize("seed", SEEDS)
def test_pearson_spearman_match_scipy(seed):
    for i in range(10):
        x, y = _regression_case(np.random.default_rng([seed, i]))
        # A random draw can be constant (scipy: NaN); ours give 0.0 there.
        ref_p, ref_s = (np.nan_to_num(_ref(f, x, y)) for f in (stats.pearsonr, stats.spearmanr))
        assert metrics.pearson(x, y) == pytest.approx(ref_p, abs=1e-10)
        assert metrics.spearman(x, y) == pytest.approx(ref_s, abs=1e-10)
        np.testing.assert_allclose(metrics._average_ranks(x), stats.rankdata(x))


def test_pearson_spearman_edge_cases_match_scipy():
    cases = [
        ([1, 2, 2, 3], [1, 2, 3, 4]),  # ties in one
        ([1, 1, 2, 2], [3, 3, 4, 4]),  # ties in both, same grouping
        ([5, 5, 5, 1], [1, 2, 2, 2]),  # heavy ties
        ([1, 2], [2, 1]),  # two points
        ([1, 2, 3], [10, 20, 1000]),  # monotone, non-linear
        ([3, 2, 1, 0], [0, 1, 2, 3]),  # reversed
        ([1e8 + 1, 1e8 + 2, 1e8 + 3], [1, 2, 3]),  # large offset
    ]
    for x, y in cases:
        assert metrics.pearson(x, y) == pytest.approx(_ref(stats.pearsonr, x, y), abs=1e-9)
        assert metrics.spearman(x, y) == pytest.approx(_ref(stats.spearmanr, x, y), abs=1e-9)
    # Constant input: scipy gives NaN (with a warning); ours give 0.0.
    for x, y in (([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [4, 4, 4]), ([2, 2], [2, 2])):
        assert np.isnan(_ref(stats.pearsonr, x, y)) and np.isnan(_ref(stats.spearmanr, x, y))
        assert metrics.pearson(x, y) == 0.0 and metrics.spearman(x, y) == 0.0


def _spans(rng, n):
    """Random non-overlapping entity spans `(type, start, end)` over n tokens."""
    spans, i = [], 0
    while i < n:
        if rng.random() < 0.5:
            end = min(n - 1, i + int(rng.integers(0, 3)))
            spans.append((TYPES[rng.integers(0, len(TYPES))], i, end))
            i = end + 1
        else:
            i += int(rng.integers(1, 3))
    return spans


def _render(spans, n, scheme):
    """IOB2: every chunk starts with B-. IOB1: B- only right after a chunk of the same type."""
    tags, prev = ["O"] * n, None
    for kind, start, end in spans:
        adjacent_same = prev is not None and prev[0] == kind and prev[2] == start - 1
        first = "B" if scheme == "IOB2" or adjacent_same else "I"
        tags[start] = f"{first}-{kind}"
        for j in range(start + 1, end + 1):
            tags[j] = f"I-{kind}"
        prev = (kind, start, end)
    return tags


def _entities(tags):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [tuple(e) for e in get_entities(list(tags))]


def _seqeval_f1(pred, true):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(seqeval_f1(true, pred, zero_division=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_chunks_match_seqeval_on_iob1_and_iob2(seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        n = int(rng.integers(0, 12))
        spans = _spans(rng, n)
        iob1, iob2 = _render(spans, n, "IOB1"), _render(spans, n, "IOB2")
        # Both schemes decode to the same entities, which include ones at the sequence ends.
        assert metrics.get_chunks(iob1) == metrics.get_chunks(iob2) == spans
        assert _entities(iob1) == _entities(iob2) == spans
        # Arbitrary (also ill-formed) tag strings: I- after O or another type, B- inside.
        tags = [str(t) for t in rng.choice(
            ["O"] + [f"{b}-{t}" for b in "BI" for t in TYPES[:2]], n)]
        assert metrics.get_chunks(tags) == _entities(tags)


@pytest.mark.parametrize("seed", SEEDS)
def test_entity_f1_matches_seqeval(seed):
    rng = np.random.default_rng(seed)
    vocab = ["O"] + [f"{b}-{t}" for b in "BI" for t in TYPES[:3]]
    for _ in range(10):
        lens = rng.integers(0, 10, int(rng.integers(1, 5)))
        true = [[str(t) for t in rng.choice(vocab, n)] for n in lens]
        if rng.random() < 0.5:  # a noisy copy of the truth, so that some entities match
            pred = [[t if rng.random() < 0.8 else str(rng.choice(vocab)) for t in s]
                    for s in true]
        else:
            pred = [[str(t) for t in rng.choice(vocab, n)] for n in lens]
        assert metrics.entity_f1(pred, true) == pytest.approx(_seqeval_f1(pred, true))
        # The same through tag ids + label names, as compute() calls it.
        names = tasks.CONLL_NER_TAGS
        if all(t in names for s in true + pred for t in s):
            ids = [[names.index(t) for t in s] for s in pred]
            tids = [[names.index(t) for t in s] for s in true]
            assert metrics.entity_f1(ids, tids, names) == pytest.approx(_seqeval_f1(pred, true))


def test_entity_f1_edge_cases_match_seqeval():
    cases = [
        ([["O", "O"]], [["O", "O"]]),  # no entities anywhere
        ([["O", "O"]], [["B-PER", "O"]]),  # nothing predicted
        ([["B-PER", "O"]], [["O", "O"]]),  # nothing true
        ([["O", "I-LOC"]], [["O", "B-LOC"]]),  # entity at the end, IOB1 vs IOB2 spelling
        ([["I-LOC", "O"]], [["B-LOC", "O"]]),  # entity at the start
        ([["B-PER", "I-PER"]], [["B-PER", "I-PER"]]),  # one entity filling the sentence
        ([["B-PER"], ["I-PER"]], [["B-PER", ], ["B-PER"]]),  # one-token sentences
        # Entities never span sentences: PER ends sentence 1, I-PER starts sentence 2.
        ([["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]]),
        ([["B-PER", "I-LOC"]], [["B-PER", "B-LOC"]]),  # a type change ends the chunk
        ([["B-PER", "B-PER"]], [["B-PER", "I-PER"]]),  # B- after B- of same type splits
        ([["B", "I", "O", "I"]], [["B", "I", "O", "B"]]),  # untyped tags (seqeval type "_")
        ([[]], [[]]),  # empty sentence
    ]
    for pred, true in cases:
        assert metrics.entity_f1(pred, true) == pytest.approx(_seqeval_f1(pred, true))
        for s in pred + true:
            assert metrics.get_chunks(s) == _entities(s)
    assert metrics.entity_f1([["O"]], [["O"]]) == 0.0
    assert metrics.get_chunks(["B", "I", "B"]) == [("_", 0, 1), ("_", 2, 2)]


@pytest.mark.parametrize("seed", range(10))
def test_compute_from_logits_matches_references(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(50, 2))
    y = rng.integers(0, 2, 50)
    p = logits.argmax(-1)
    out = metrics.compute(["accuracy", "f1", "matthews_corr"], logits, y)
    assert out == pytest.approx({
        "accuracy": skm.accuracy_score(y, p),
        "f1": skm.f1_score(y, p, zero_division=0.0),
        "matthews_corr": _ref(skm.matthews_corrcoef, y, p),
    })
    scores, gold = rng.normal(size=(50, 1)), rng.integers(0, 6, 50) / 1.0
    out = metrics.compute(tasks.TASKS["stsb"], scores, gold)
    assert out["pearson"] == pytest.approx(_ref(stats.pearsonr, scores[:, 0], gold))
    assert out["spearman"] == pytest.approx(_ref(stats.spearmanr, scores[:, 0], gold))
    # NER from logits: -100 positions dropped, then entity F1 as seqeval computes it.
    names = tasks.CONLL_NER_TAGS
    labels = rng.integers(0, len(names), (4, 12))
    labels[rng.random(labels.shape) < 0.3] = -100
    ner_logits = rng.normal(size=(4, 12, len(names)))
    ner_logits[..., :] += 3.0 * np.eye(len(names))[np.maximum(labels, 0)] * (
        rng.random(labels.shape) < 0.7)[..., None]
    preds = ner_logits.argmax(-1)
    keep = labels != -100
    true = [[names[t] for t in row[k]] for row, k in zip(labels, keep, strict=True)]
    pred = [[names[t] for t in row[k]] for row, k in zip(preds, keep, strict=True)]
    out = metrics.compute(tasks.TASKS["conll2003"], ner_logits, labels)
    assert out["entity_f1"] == pytest.approx(_seqeval_f1(pred, true))


@pytest.mark.parametrize("seed", SEEDS)
def test_macro_f1_matches_sklearn(seed):
    for i in range(10):
        p, y = _classification_case(np.random.default_rng([seed, i]))
        assert metrics.macro_f1(p, y) == pytest.approx(
            skm.f1_score(y, p, average="macro", zero_division=0.0))
        pb, yb = p % 2, y % 2
        assert metrics.macro_f1(pb, yb) == pytest.approx(
            skm.f1_score(yb, pb, average="macro", zero_division=0.0))
    assert metrics.macro_f1([], []) == 0.0
    assert metrics.macro_f1(["a", "b", "b"], ["a", "a", "b"]) == pytest.approx(
        skm.f1_score(["a", "a", "b"], ["a", "b", "b"], average="macro"))


def _labelled(names, metric="", positive=""):
    spec = tasks.TaskSpec(name="file", text_keys=("text",), label_key="label",
                          num_classes=len(names), kind="classification", metrics=("accuracy",),
                          train_split="train", eval_splits=("validation",), label_names=names)
    return tasks.with_metric(spec, metric, positive)


@pytest.mark.parametrize("seed", range(10))
def test_f1_of_a_named_label_matches_sklearn(seed):
    """data.metric=f1 with positive_label: the F1 of that label, whichever class id it has
    (binary: sklearn's pos_label; several classes: that class against the rest)."""
    rng = np.random.default_rng(seed)
    for names in (("ham", "spam"), ("eggs", "ham", "spam")):
        y = rng.integers(0, len(names), 40)
        logits = rng.normal(size=(40, len(names))) + 2.0 * np.eye(len(names))[y]
        true, pred = np.array(names)[y], np.array(names)[logits.argmax(-1)]
        for positive in names:
            spec = _labelled(names, "f1", positive)
            out = metrics.compute(spec, logits, y)
            assert spec.metrics[0] == "f1" and list(out)[0] == "f1"
            assert out["f1"] == pytest.approx(skm.f1_score(
                true, pred, labels=[positive], average="macro", zero_division=0.0))
            if len(names) == 2:
                assert out["f1"] == pytest.approx(skm.f1_score(true, pred, pos_label=positive))
        spec = _labelled(names, "macro_f1")
        assert spec.metrics == ("macro_f1", "accuracy")
        assert metrics.compute(spec, logits, y)["macro_f1"] == pytest.approx(
            skm.f1_score(true, pred, average="macro"))
    # Without a named label binary f1 keeps class 1 (GLUE's MRPC/QQP convention).
    assert metrics.positive_class(tasks.TASKS["mrpc"]) == 1
