"""Local task files: TSV / CSV (header row) and JSONL, validated into a `TaskSpec` with
one-line `file:line` errors, and read into a dataset of `{text keys, label}` rows."""

from __future__ import annotations

import csv
import io
import json

import tensorflow as tf

from tinybert_tf.data.task_spec import TaskSpec


def read_rows(path):
    """(line_number, dict) rows of a .tsv/.csv (header row) or .jsonl file."""
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    lower = path.lower()
    if lower.endswith((".jsonl", ".json")):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg}); one object per line.") from None
        return
    if lower.endswith(".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    elif lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
    else:
        raise ValueError(f"{path}: unknown file type; use .tsv, .csv or .jsonl.")
    for row in reader:
        yield reader.line_num, row


def parse_file(path, columns, label_column, label_required):
    """Reads `columns` (+ label) of every row; a missing value -> one-line ValueError."""
    texts = [[] for _ in columns]
    labels, lines = [], []
    for line, row in read_rows(path):
        lines.append(line)
        for values, col in zip(texts, columns, strict=True):
            if row.get(col) is None:
                raise ValueError(f"{path}:{line}: missing column {col!r}; found {sorted(row)}.")
            values.append(str(row[col]))
        value = row.get(label_column)
        if value is None and label_required:
            raise ValueError(
                f"{path}:{line}: missing label column {label_column!r}; found {sorted(row)}."
            )
        labels.append(None if value is None else str(value).strip())
    if not labels:
        raise ValueError(f"{path}: no rows; the file needs a header and at least one example.")
    return texts, labels, lines


def encode_labels(path, labels, lines, spec):
    if spec.kind == "regression":
        out = []
        for line, v in zip(lines, labels, strict=True):
            try:
                out.append(float("nan") if v is None else float(v))
            except ValueError:
                raise ValueError(f"{path}:{line}: label {v!r} is not a number.") from None
        return out
    index = {name: i for i, name in enumerate(spec.label_names)}
    for line, v in zip(lines, labels, strict=True):
        if v is not None and v not in index:
            raise ValueError(
                f"{path}:{line}: label {v!r} not in training labels {list(spec.label_names)}."
            )
    return [-1 if v is None else index[v] for v in labels]


def load_file_task(
    train_file, eval_file=None, test_file=None, *, name="custom", text_column="text",
    text_b_column=None, label_column="label", regression=False,
):
    """Validates local TSV/CSV/JSONL files and returns a TaskSpec for `task_dataset`.

    Labels are the sorted set of training labels (or floats with `regression=True`); eval and
    test labels must be in that set (test files may omit the label column -> y = -1 / NaN).
    """
    columns = (text_column,) + ((text_b_column,) if text_b_column else ())
    _, train_labels, train_lines = parse_file(train_file, columns, label_column, True)
    names = () if regression else tuple(sorted(set(train_labels)))
    kind = "regression" if regression else "classification"
    if regression:
        metrics = ("pearson", "spearman")
    else:
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
    files = (("train", train_file),)
    files += (("validation", eval_file),) if eval_file else ()
    files += (("test", test_file),) if test_file else ()
    spec = TaskSpec(
        name=name, text_keys=columns, label_key=label_column,
        num_classes=1 if regression else len(names), kind=kind, metrics=metrics,
        train_split="train", eval_splits=("validation",) if eval_file else (), label_names=names,
        test_splits=("test",) if test_file else (), files=files,
    )
    encode_labels(train_file, train_labels, train_lines, spec)
    for split, path in files[1:]:
        _, labels, lines = parse_file(path, columns, label_column, split != "test")
        encode_labels(path, labels, lines, spec)
    return spec


def file_split_dataset(spec, split):
    """Dataset of {text keys..., label key} for one split of a file task."""
    paths = dict(spec.files)
    if split not in paths:
        raise ValueError(f"Task {spec.name!r} has no {split!r} file; it has {sorted(paths)}.")
    path = paths[split]
    texts, labels, lines = parse_file(path, spec.text_keys, spec.label_key, split != "test")
    y = encode_labels(path, labels, lines, spec)
    features = {k: tf.constant(v, tf.string) for k, v in zip(spec.text_keys, texts, strict=True)}
    features[spec.label_key] = tf.constant(y, tf.float32 if spec.kind == "regression" else tf.int32)
    return tf.data.Dataset.from_tensor_slices(features)
