"""Task metrics as plain NumPy functions on predictions and labels (no sklearn/scipy/seqeval).

Names match `TaskSpec.metrics`: accuracy, macro_f1 (the mean of every class's F1), f1 (binary F1
of one class: the TaskSpec's `positive_label`, else class 1), matthews_corr, pearson, spearman,
entity_f1 (CoNLL/seqeval-style chunk F1 over IOB1/IOB2 tags).

Decision: these stay hand-written rather than calling scikit-learn / scipy / seqeval, so a
TF-only install needs no extra runtime dependency. Those libraries are test-only
dependencies (the `test` extra): tests/test_data_metrics.py checks every metric against
`sklearn.metrics` (accuracy_score, f1_score binary and macro, matthews_corrcoef),
`scipy.stats` (pearsonr, spearmanr) and `seqeval` (get_entities, f1_score in its default
conlleval mode) on many random seeds and edge cases. Where a reference is undefined (NaN from scipy for a constant
input, zero-division in sklearn/seqeval) ours return 0.0; empty inputs also give 0.0.
Tags: IOB1 and IOB2 (`B-X` / `I-X` / `O`), as seqeval's default mode reads them, bare `B` /
`I` being an entity of type `_` as in seqeval; a bare name `X` is read as `I-X` (seqeval
only warns there). IOBES (`E-`/`S-`) is not supported.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = -100


def accuracy(predictions, labels) -> float:
    """Fraction of equal entries; predictions and labels `[N]` class ids."""
    p, y = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    return float(np.mean(p == y)) if y.size else 0.0


def f1(predictions, labels, positive=1) -> float:
    """Binary F1 of class `positive`; 0.0 when there are no true or predicted positives."""
    p, y = np.asarray(predictions).ravel() == positive, np.asarray(labels).ravel() == positive
    tp = np.sum(p & y)
    denom = np.sum(p) + np.sum(y)
    return float(2 * tp / denom) if denom else 0.0


def macro_f1(predictions, labels) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in `labels` or
    `predictions` (sklearn's ``f1_score(average="macro")``); a class never predicted scores 0."""
    p, y = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    classes = np.union1d(p, y)
    return float(np.mean([f1(p, y, k) for k in classes])) if classes.size else 0.0


def matthews_corr(predictions, labels) -> float:
    """Matthews correlation (multi-class R_K form; the usual binary MCC for 2 classes)."""
    p, y = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    classes = np.union1d(p, y)
    cm = (y[:, None] == classes)[:, :, None] & (p[:, None] == classes)[:, None, :]
    c = cm.sum(0).astype(np.float64)  # confusion matrix [true, pred]
    t_k, p_k, n, correct = c.sum(1), c.sum(0), c.sum(), np.trace(c)
    denom = np.sqrt((n**2 - p_k @ p_k) * (n**2 - t_k @ t_k))
    return float((correct * n - t_k @ p_k) / denom) if denom else 0.0


def pearson(predictions, labels) -> float:
    """Pearson correlation of two `[N]` float arrays; 0.0 if either is constant."""
    p = np.asarray(predictions, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    p, y = p - p.mean(), y - y.mean()
    denom = np.sqrt((p @ p) * (y @ y))
    return float(p @ y / denom) if denom else 0.0


def _average_ranks(x):
    """Ranks 1..N with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(predictions, labels) -> float:
    """Spearman rank correlation: Pearson of tie-averaged ranks."""
    return pearson(_average_ranks(predictions), _average_ranks(labels))


def _split_tag(tag):
    if tag in ("O", "", None):
        return "O", None
    if tag in ("B", "I"):  # untyped chunk tag: seqeval's type "_"
        return tag, "_"
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind else ("I", prefix)


def get_chunks(tags):
    """Entity chunks `(type, start, end_inclusive)` of one IOB1/IOB2 tag sequence.

    A chunk starts at B-X, or at I-X after O / another type; it ends before O, B-*, or a
    type change (conlleval/seqeval default semantics).
    """
    chunks, start, kind = [], None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split_tag(tag)
        if kind is not None and (prefix in ("O", "B") or t != kind):
            chunks.append((kind, start, i - 1))
            kind = None
        if prefix in ("B", "I") and kind is None:
            start, kind = i, t
    return chunks


def entity_f1(pred_tag_seqs, true_tag_seqs, label_names=None) -> float:
    """Micro entity-level F1 over sentences; tags are strings or ids into `label_names`."""
    def names(seq):
        return [label_names[int(t)] if label_names is not None else t for t in seq]

    n_pred = n_true = n_ok = 0
    for pred, true in zip(pred_tag_seqs, true_tag_seqs, strict=True):
        p, t = set(get_chunks(names(pred))), set(get_chunks(names(true)))
        n_pred, n_true, n_ok = n_pred + len(p), n_true + len(t), n_ok + len(p & t)
    return float(2 * n_ok / (n_pred + n_true)) if n_pred + n_true else 0.0


def token_tag_sequences(predictions, labels, ignore=IGNORE_LABEL):
    """Per-sentence (pred ids, true ids) lists, keeping positions where labels != ignore.

    predictions: ids `[B, L]` or logits `[B, L, C]`; labels `[B, L]` (-100 = not a word start).
    """
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.ndim == y.ndim + 1:
        p = p.argmax(-1)
    keep = y != ignore
    return [list(pi[k]) for pi, k in zip(p, keep, strict=True)], [
        list(yi[k]) for yi, k in zip(y, keep, strict=True)
    ]


METRICS = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "f1": f1,
    "matthews_corr": matthews_corr,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(task_or_metric_names, predictions, labels) -> dict[str, float]:
    """{metric: value} for a TaskSpec (or a list of metric names) from model outputs.

    Classification: predictions are ids `[N]` or logits `[N, C]`; regression: `[N]` or `[N, 1]`;
    entity_f1: ids `[B, L]` or logits `[B, L, C]` with labels `[B, L]` (-100 ignored),
    the tag names coming from the TaskSpec's `label_names`; f1: the F1 of `positive_class`.
    """
    names = getattr(task_or_metric_names, "metrics", task_or_metric_names)
    if isinstance(names, str):
        names = (names,)
    label_names = getattr(task_or_metric_names, "label_names", None) or None
    kind = getattr(task_or_metric_names, "kind", None)
    p, y = np.asarray(predictions), np.asarray(labels)
    out = {}
    for name in names:
        if name == "entity_f1":
            preds, trues = token_tag_sequences(p, y)
            out[name] = entity_f1(preds, trues, label_names)
            continue
        if name not in METRICS:
            raise ValueError(f"Unknown metric {name!r}; use one of {sorted(METRICS)} or entity_f1.")
        regression = kind == "regression" or name in ("pearson", "spearman")
        if regression:
            values = p.reshape(len(y), -1)[:, 0] if p.size == y.size else p
        else:
            values = p.argmax(-1) if p.ndim == y.ndim + 1 else p
        extra = {"positive": positive_class(task_or_metric_names)} if name == "f1" else {}
        out[name] = METRICS[name](values, y, **extra)
    return out


def positive_class(spec) -> int:
    """The class id binary F1 counts as positive: the index of the TaskSpec's `positive_label`
    among its `label_names`, else 1 (GLUE's convention: MRPC's "equivalent")."""
    name = getattr(spec, "positive_label", "")
    return list(spec.label_names).index(name) if name else 1


def chance_level(spec, metric):
    """What guessing scores on `metric` for the task `spec`: accuracy 1/num_classes (uniform
    guesses), correlations (matthews_corr, pearson, spearman) 0; None where no one number is
    chance (F1 scores, macro_f1 included, depend on the label balance)."""
    if metric == "accuracy" and getattr(spec, "num_classes", 0):
        return 1.0 / spec.num_classes
    if metric in ("matthews_corr", "pearson", "spearman"):
        return 0.0
    return None
