"""Local task files: TSV / CSV (header row) and JSONL, validated into a `TaskSpec` with
one-line `file:line` errors, and read into a dataset of `{text keys, label}` rows.

One reader (`read_rows`) serves task files, transfer files and augmented train files:
  * UTF-8 (a leading BOM is dropped), read through `tf.io.gfile` so gs:// paths work;
  * .tsv is tab-separated and .csv comma-separated, both with CSV quoting (``"a<TAB>b"`` is one
    field, ``""`` a quote inside a quoted field; a field that starts with ``"`` must be quoted
    whole). Every row must have the header's number of fields: a stray tab or comma is an error
    naming the file, line and counts, never a shifted column (and so never a changed label);
  * .jsonl holds one JSON object per line with the columns.
A malformed row (field count, quoting, a JSONL line that is not an object or lacks a column) is
a `TaskFileError`; with ``skip_bad_rows=True`` (``--config.data.skip_bad_rows=True``) it is
skipped and counted instead. Task files also skip and count rows with a blank text in any text
column; a blank label is an error (skipped with skip_bad_rows) in a labelled split and means
"no label" in a test split. `load_file_task` prints one count line per file.
"""

from __future__ import annotations

import csv
import io
import json
from typing import NamedTuple

import tensorflow as tf

from tinybert_tf.data.task_spec import TaskFileError, TaskSpec

# Count name -> words in the summary line, in print order. The bad_* ones are skip_bad_rows'.
SKIP_REASONS = {
    "empty_text": "empty text",
    "empty_label": "empty label",
    "bad_fields": "bad field count",
    "bad_quoting": "bad quoting",
    "bad_json": "bad JSON line",
}
BAD_REASONS = ("empty_label", "bad_fields", "bad_quoting", "bad_json")
_SKIP_HINT = "pass --config.data.skip_bad_rows=True to skip such rows."


class _BadRow(NamedTuple):
    line: str  # "3", or "3-5" for a quoted record over several lines
    reason: str  # a BAD_REASONS name
    message: str


class Parsed(NamedTuple):
    """One file read by `parse_file`: the used rows' texts (one list per column), labels (str,
    or None where a test split has none), line numbers, and the counts (`SKIP_REASONS` names
    plus "read", "used")."""

    texts: list
    labels: list
    lines: list
    counts: dict


def _decode(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")  # drops a leading BOM
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskFileError(
            f"{path}:{line}: not UTF-8 text ({e.reason}); save it as UTF-8.") from None


def _span(start, end):
    return str(start) if end <= start else f"{start}-{end}"


def _check_header(path, line, header, columns, label_column, label_required):
    found = sorted(header)
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise TaskFileError(f"{path}:{line}: column {twice[0]!r} appears twice in the header "
                            f"{header}; give every column its own name.")
    for col in columns:
        if col not in header:
            raise TaskFileError(f"{path}:{line}: missing column {col!r}; found {found}.")
    if label_required and label_column not in header:
        raise TaskFileError(
            f"{path}:{line}: missing label column {label_column!r}; found {found}.")


def _table_rows(path, text, delimiter, columns, label_column, label_required):
    """(line, {column: str}) of a header-row table, or a _BadRow per malformed record."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    sep = "a tab" if delimiter == "\t" else "a comma"
    header, end = None, 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            end = reader.line_num
            if header is None:
                raise TaskFileError(f"{path}:{_span(start, end)}: bad quoting in the header "
                                    f"({e}).") from None
            yield _BadRow(_span(start, end), "bad_quoting",
                          f"bad quoting ({e}); a field that starts with '\"' must end with '\"' "
                          "(a quote inside it doubled: \"\"), or")
            continue
        end = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        if header is None:
            header = [h.strip() for h in fields]
            _check_header(path, start, header, columns, label_column, label_required)
            continue
        if len(fields) != len(header):
            yield _BadRow(_span(start, end), "bad_fields",
                          f"{len(fields)} field{'s' if len(fields) != 1 else ''}, the header has "
                          f"{len(header)} ({', '.join(header)}); quote a field that contains "
                          f"{sep}, or")
            continue
        yield start, dict(zip(header, fields, strict=True))


def _json_rows(path, text, columns, label_column, label_required):
    """(line, {column: str}) of a JSONL file, or a _BadRow per malformed line."""
    # split("\n"), not splitlines(): U+2028 and friends may sit raw inside a JSON string.
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield _BadRow(str(i), "bad_json", f"invalid JSON ({e.msg}); one object per line, or")
            continue
        if not isinstance(row, dict):
            yield _BadRow(str(i), "bad_json", f"expected a JSON object with {list(columns)}, got "
                          f"a {type(row).__name__}; one object per line, or")
            continue
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            yield _BadRow(str(i), "bad_json", f"missing column {missing[0]!r}; found "
                          f"{sorted(row)}; add it, or")
            continue
        if label_required and row.get(label_column) is None:
            yield _BadRow(str(i), "bad_json", f"missing label column {label_column!r}; found "
                          f"{sorted(row)}; add it, or")
            continue
        yield i, {k: str(v) for k, v in row.items() if v is not None}


def read_rows(path, columns, label_column=None, label_required=False, skip_bad_rows=False,
              counts=None):
    """(line, (text, ...), label) of every well-formed row of a .tsv/.csv (header row) or .jsonl
    file; label is None where `label_column` is None or absent. A table's header must hold every
    column of `columns` (and `label_column` if `label_required`): else a TaskFileError. A
    malformed row is a TaskFileError, or with `skip_bad_rows` skipped and counted in
    `counts[reason]`; `counts["read"]` counts every row, well-formed or not."""
    counts = {} if counts is None else counts
    lower, columns = path.lower(), tuple(columns)
    if lower.endswith((".jsonl", ".json")):
        rows = _json_rows(path, _decode(path), columns, label_column, label_required)
    elif lower.endswith((".tsv", ".csv")):
        delimiter = "\t" if lower.endswith(".tsv") else ","
        rows = _table_rows(path, _decode(path), delimiter, columns, label_column, label_required)
    else:
        raise TaskFileError(f"{path}: unknown file type; use .tsv, .csv or .jsonl.")
    for item in rows:
        counts["read"] = counts.get("read", 0) + 1
        if isinstance(item, _BadRow):
            if not skip_bad_rows:
                raise TaskFileError(f"{path}:{item.line}: {item.message} {_SKIP_HINT}")
            counts[item.reason] = counts.get(item.reason, 0) + 1
            continue
        line, row = item
        label = row.get(label_column) if label_column else None
        yield line, tuple(row[c] for c in columns), label


def summary(path, counts):
    """The count line `load_file_task` prints, e.g. ``train.tsv: 120 rows read, 117 used,
    skipped: 2 empty text, 1 bad field count.``"""
    return f"{path}: {_count_text(counts)}."


def _count_text(counts):
    skipped = [f"{counts[k]} {words}" for k, words in SKIP_REASONS.items() if counts.get(k)]
    tail = f", skipped: {', '.join(skipped)}" if skipped else ""
    read = counts.get("read", 0)
    return f"{read} row{'s' if read != 1 else ''} read, {counts.get('used', 0)} used{tail}"


def parse_file(path, columns, label_column, label_required, skip_bad_rows=False):
    """Reads `columns` (+ label) of every row -> `Parsed`; a malformed row -> one-line
    TaskFileError (skipped and counted with `skip_bad_rows`); blank texts skipped and counted."""
    counts = dict.fromkeys(("read", "used", *SKIP_REASONS), 0)
    texts = [[] for _ in columns]
    labels, lines = [], []
    for line, values, label in read_rows(path, columns, label_column, label_required,
                                         skip_bad_rows, counts):
        if not all(v.strip() for v in values):
            counts["empty_text"] += 1
            continue
        label = None if label is None or not label.strip() else label.strip()
        if label is None and label_required:
            if not skip_bad_rows:
                raise TaskFileError(f"{path}:{line}: empty label in column {label_column!r}; "
                                    f"fill it in, or {_SKIP_HINT}")
            counts["empty_label"] += 1
            continue
        for column, value in zip(texts, values, strict=True):
            column.append(value)
        labels.append(label)
        lines.append(line)
    counts["used"] = len(labels)
    if not counts["read"]:
        raise TaskFileError(f"{path}: no rows; the file needs a header and at least one example.")
    if not labels:
        raise TaskFileError(f"{path}: no usable rows ({_count_text(counts)}); every row was "
                            "skipped.")
    return Parsed(texts, labels, lines, counts)


def encode_labels(path, labels, lines, spec):
    if spec.kind == "regression":
        out = []
        for line, v in zip(lines, labels, strict=True):
            try:
                out.append(float("nan") if v is None else float(v))
            except ValueError:
                raise TaskFileError(f"{path}:{line}: label {v!r} is not a number.") from None
        return out
    index = {name: i for i, name in enumerate(spec.label_names)}
    for line, v in zip(lines, labels, strict=True):
        if v is not None and v not in index:
            raise TaskFileError(
                f"{path}:{line}: label {v!r} not in training labels {list(spec.label_names)}."
            )
    return [-1 if v is None else index[v] for v in labels]


def load_file_task(
    train_file, eval_file=None, test_file=None, *, name="custom", text_column="text",
    text_b_column=None, label_column="label", regression=False, skip_bad_rows=False,
):
    """Validates local TSV/CSV/JSONL files and returns a TaskSpec for `task_dataset`.

    Labels are the sorted set of the used training rows' labels (or floats with
    `regression=True`); eval and test labels must be in that set (test files may omit the label
    column -> y = -1 / NaN). Prints one `summary` line per file; `spec.counts(split)` holds them.
    skip_bad_rows: skip and count malformed rows instead of raising (see the module doc).
    """
    columns = (text_column,) + ((text_b_column,) if text_b_column else ())
    files = (("train", train_file),)
    files += (("validation", eval_file),) if eval_file else ()
    files += (("test", test_file),) if test_file else ()
    parsed = {split: parse_file(path, columns, label_column, split != "test", skip_bad_rows)
              for split, path in files}
    names = () if regression else tuple(sorted(set(parsed["train"].labels)))
    kind = "regression" if regression else "classification"
    if regression:
        metrics = ("pearson", "spearman")
    else:
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
    spec = TaskSpec(
        name=name, text_keys=columns, label_key=label_column,
        num_classes=1 if regression else len(names), kind=kind, metrics=metrics,
        train_split="train", eval_splits=("validation",) if eval_file else (), label_names=names,
        test_splits=("test",) if test_file else (), files=files, skip_bad_rows=skip_bad_rows,
        row_counts=tuple((s, tuple(p.counts.items())) for s, p in parsed.items()),
    )
    for split, path in files:
        encode_labels(path, parsed[split].labels, parsed[split].lines, spec)
        print(summary(path, parsed[split].counts))
    return spec


def file_split_dataset(spec, split):
    """Dataset of {text keys..., label key} for one split of a file task."""
    paths = dict(spec.files)
    if split not in paths:
        raise TaskFileError(f"Task {spec.name!r} has no {split!r} file; it has {sorted(paths)}.")
    path = paths[split]
    texts, labels, lines, _ = parse_file(path, spec.text_keys, spec.label_key, split != "test",
                                         spec.skip_bad_rows)
    y = encode_labels(path, labels, lines, spec)
    features = {k: tf.constant(v, tf.string) for k, v in zip(spec.text_keys, texts, strict=True)}
    features[spec.label_key] = tf.constant(y, tf.float32 if spec.kind == "regression" else tf.int32)
    return tf.data.Dataset.from_tensor_slices(features)
