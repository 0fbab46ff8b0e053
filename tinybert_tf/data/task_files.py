"""Local task files: TSV / CSV (header row) and JSONL, validated into a `TaskSpec` with
one-line `file:line` errors, and read into a dataset of `{text keys, label}` rows.

One reader (`read_rows`) serves task files, transfer files and augmented train files:
  * UTF-8 (a leading BOM is dropped), read through `tf.io.gfile` so gs:// paths work;
  * .tsv is plain tab-separated by default (``tsv_quoting="none"``, as GLUE's files, the
    TinyBERT / Hugging Face GLUE readers and most exports write it): every tab separates fields,
    a line ends at ``\\n``, ``\\r\\n`` or ``\\r``, and a quote is an ordinary character, so
    ``"Best film," says everyone`` is read as written. ``tsv_quoting="csv"``
    (``--config.data.tsv_quoting=csv``) reads a .tsv with CSV quoting instead;
  * .csv is comma-separated with CSV quoting (``"a,b"`` is one field, ``""`` a quote inside a
    quoted field; a field that starts with ``"`` must be quoted whole);
  * in every dialect each row must have the header's number of fields: a stray tab or comma is
    an error naming the file, line and counts, never a shifted column (and so never a changed
    label);
  * .jsonl holds one JSON object per line with the columns.
A malformed row (field count, quoting, a JSONL line that is not an object or lacks a column) is
a `TaskFileError`; with ``skip_bad_rows=True`` (``--config.data.skip_bad_rows=True``) it is
skipped and counted instead. Task files also skip and count rows with a blank text in any text
column; a blank label is an error (skipped with skip_bad_rows) in a labelled split and means
"no label" in a test split. `load_file_task` prints one count line per file. The package's TSV
writers use `tsv_text` (the default dialect), so `read_rows` reads back what they wrote;
`read_table` reads a whole file for tools that rewrite it.
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
# data.tsv_quoting: how a .tsv is read. "none": plain tab-separated, quotes are text (GLUE);
# "csv": CSV quoting with tabs. .csv files always use CSV quoting; .jsonl ignores it.
TSV_QUOTING = ("none", "csv")
# What to do about a row with the wrong field count / bad quoting, per dialect (see _records).
_FIELD_FIX = {
    "tsv": "every tab separates fields in plain TSV (a tab inside a text must be a space; a "
           "file with CSV-quoted fields needs tsv_quoting=csv)",
    "tsv_csv": "quote a field that contains a tab",
    "csv": "quote a field that contains a comma",
}
_QUOTE_FIX = "a field that starts with '\"' must end with '\"' (a quote inside it doubled: \"\")"
_QUOTE_FIXES = {"tsv_csv": _QUOTE_FIX + "; with quotes as plain text use tsv_quoting=none",
                "csv": _QUOTE_FIX}
_FLATTEN = str.maketrans("\t\n\r", "   ")  # what plain TSV cannot hold inside a field


class _BadRow(NamedTuple):
    line: str  # "3", or "3-5" for a quoted record over several lines
    reason: str  # a BAD_REASONS name
    message: str


class Parsed(NamedTuple):
    """One file read by `parse_file`: the used rows' texts (one list per column), labels (str,
    or None in a test split without), line numbers, counts (`SKIP_REASONS`, "read", "used")."""

    texts: list
    labels: list
    lines: list
    counts: dict


def read_text(path):
    """A file's text (UTF-8, a leading BOM dropped); not UTF-8: a one-line `file:line` error."""
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


def check_tsv_quoting(value):
    """`value` when it is one of `TSV_QUOTING`, else a one-line TaskFileError naming them: a
    mistyped dialect must not silently read a file some other way."""
    if value not in TSV_QUOTING:
        raise TaskFileError(
            f"tsv_quoting={value!r} is not one of {', '.join(map(repr, TSV_QUOTING))}: 'none' "
            "reads .tsv as plain tab-separated text (quotes are text), 'csv' with CSV quoting.")
    return value


def _plain_records(text):
    """(start, end, fields, None) per line of plain tab-separated text: every tab separates
    fields, a line ends at \\n, \\r\\n or \\r (so no \\r reaches a label), quotes are text."""
    for i, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        yield i, i, line.split("\t"), None


def _quoted_records(text, delimiter):
    """(start, end, fields, None) per CSV-quoted record (one may span lines), or
    (start, end, None, csv error text) for a record whose quoting is bad."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            end = reader.line_num
            yield start, end, None, str(e).replace("\t", "\\t")  # one readable line
            continue
        end = reader.line_num
        yield start, end, fields, None


def _records(path, text, tsv_quoting):
    """(dialect, records) of a .tsv / .csv: dialect "tsv" (plain), "tsv_csv" or "csv"."""
    if check_tsv_quoting(tsv_quoting) and path.lower().endswith(".csv"):
        return "csv", _quoted_records(text, ",")
    if tsv_quoting == "csv":
        return "tsv_csv", _quoted_records(text, "\t")
    return "tsv", _plain_records(text)


def _table_rows(path, dialect, records, on_header):
    """(line, fields) of each row of a header-row table, or a _BadRow per malformed record;
    blank lines are skipped and the header goes to `on_header(line, names)` first."""
    header = None
    for start, end, fields, error in records:
        if error is not None:
            if header is None:
                raise TaskFileError(f"{path}:{_span(start, end)}: bad quoting in the header "
                                    f"({error}).")
            yield _BadRow(_span(start, end), "bad_quoting",
                          f"bad quoting ({error}); {_QUOTE_FIXES[dialect]}")
            continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        if header is None:
            header = [h.strip() for h in fields]
            on_header(start, header)
            continue
        if len(fields) != len(header):
            yield _BadRow(_span(start, end), "bad_fields",
                          f"{len(fields)} field{'s' if len(fields) != 1 else ''}, the header has "
                          f"{len(header)} ({', '.join(header)}); {_FIELD_FIX[dialect]}")
            continue
        yield start, fields


def _json_rows(path, text, columns, label_column, label_required):
    """(line, {column: str}) of a JSONL file, or a _BadRow per malformed line."""
    # split("\n"), not splitlines(): U+2028 and friends may sit raw inside a JSON string.
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield _BadRow(str(i), "bad_json", f"invalid JSON ({e.msg}); one object per line")
            continue
        if not isinstance(row, dict):
            yield _BadRow(str(i), "bad_json", f"expected a JSON object with {list(columns)}, got "
                          f"a {type(row).__name__}; one object per line")
            continue
        missing = [c for c in columns if row.get(c) is None]
        if missing:
            yield _BadRow(str(i), "bad_json", f"missing column {missing[0]!r}; found "
                          f"{sorted(row)}; add it")
            continue
        if label_required and row.get(label_column) is None:
            yield _BadRow(str(i), "bad_json", f"missing label column {label_column!r}; found "
                          f"{sorted(row)}; add it")
            continue
        yield i, {k: str(v) for k, v in row.items() if v is not None}


def read_rows(path, columns, label_column=None, label_required=False, skip_bad_rows=False,
              counts=None, tsv_quoting="none"):
    """(line, (text, ...), label) of every well-formed row of a .tsv/.csv (header row) or .jsonl
    file; label is None where `label_column` is None or absent. A table's header must hold every
    column of `columns` (and `label_column` if `label_required`): else a TaskFileError. A
    malformed row is a TaskFileError, or with `skip_bad_rows` skipped and counted in
    `counts[reason]`; `counts["read"]` counts every row, well-formed or not. `tsv_quoting`: how a
    .tsv is read (`TSV_QUOTING`; see the module doc)."""
    counts = {} if counts is None else counts
    lower, columns = path.lower(), tuple(columns)
    check_tsv_quoting(tsv_quoting)
    header = []
    if lower.endswith((".jsonl", ".json")):
        rows = _json_rows(path, read_text(path), columns, label_column, label_required)
    elif lower.endswith((".tsv", ".csv")):
        def on_header(line, names):
            _check_header(path, line, names, columns, label_column, label_required)
            header.extend(names)

        dialect, records = _records(path, read_text(path), tsv_quoting)
        rows = _table_rows(path, dialect, records, on_header)
    else:
        raise TaskFileError(f"{path}: unknown file type; use .tsv, .csv or .jsonl (a CoNLL "
                            "file of tagged tokens: --config.data.format=conll).")
    for item in rows:
        counts["read"] = counts.get("read", 0) + 1
        if isinstance(item, _BadRow):
            if not skip_bad_rows:
                raise TaskFileError(f"{path}:{item.line}: {item.message}, or {_SKIP_HINT}")
            counts[item.reason] = counts.get(item.reason, 0) + 1
            continue
        line, row = item
        if header:  # a table row: its fields, named by the header
            row = dict(zip(header, row, strict=True))
        label = row.get(label_column) if label_column else None
        yield line, tuple(row[c] for c in columns), label


def read_table(path, tsv_quoting="none"):
    """``(header, rows)`` of a whole .tsv/.csv, every row a list of str in file order: for
    tools that rewrite a file (tinybert-tf-augment). Same dialects as `read_rows`; a malformed row
    is a one-line ``file:line`` TaskFileError (nothing skipped: a rewrite keeps every row)."""
    if not path.lower().endswith((".tsv", ".csv")):
        raise TaskFileError(f"{path}: unknown file type; use .tsv or .csv with a header row.")
    header = []
    dialect, records = _records(path, read_text(path), tsv_quoting)
    rows = []
    for item in _table_rows(path, dialect, records, lambda _, names: header.extend(names)):
        if isinstance(item, _BadRow):
            raise TaskFileError(f"{path}:{item.line}: {item.message}.")
        rows.append(item[1])
    if not header:
        raise TaskFileError(f"{path} is empty; pass a TSV with a header row.")
    return header, rows


def tsv_text(rows):
    """``(text, flattened)``: `rows` (sequences of str) as TSV in the default dialect (plain,
    ``tsv_quoting="none"``), one ``\\n``-ended line per row, fields joined by tabs, nothing
    quoted, so `read_rows` gives every field back unchanged. Plain TSV cannot hold a tab or line
    break inside a field: each tab, ``\\n`` or ``\\r`` there becomes a space, and `flattened`
    counts the fields so changed. (A row of one blank field is a blank line, which is skipped.)"""
    lines, flattened = [], 0
    for row in rows:
        fields = [str(field) for field in row]
        clean = [field.translate(_FLATTEN) for field in fields]
        flattened += sum(a != b for a, b in zip(fields, clean, strict=True))
        lines.append("\t".join(clean) + "\n")
    return "".join(lines), flattened


def summary(path, counts):
    """The count line `load_file_task` prints, e.g. ``train.tsv: 120 rows read, 117 used,
    skipped: 2 empty text, 1 bad field count.``"""
    return f"{path}: {_count_text(counts)}."


def _count_text(counts):
    skipped = [f"{counts[k]} {words}" for k, words in SKIP_REASONS.items() if counts.get(k)]
    tail = f", skipped: {', '.join(skipped)}" if skipped else ""
    read = counts.get("read", 0)
    return f"{read} row{'s' if read != 1 else ''} read, {counts.get('used', 0)} used{tail}"


def parse_file(path, columns, label_column, label_required, skip_bad_rows=False,
               tsv_quoting="none"):
    """Reads `columns` (+ label) of every row -> `Parsed`; a malformed row -> one-line
    TaskFileError (skipped and counted with `skip_bad_rows`); blank texts skipped and counted.
    `tsv_quoting`: how a .tsv is read (see the module doc)."""
    counts = dict.fromkeys(("read", "used", *SKIP_REASONS), 0)
    texts = [[] for _ in columns]
    labels, lines = [], []
    for line, values, label in read_rows(path, columns, label_column, label_required,
                                         skip_bad_rows, counts, tsv_quoting):
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
    tsv_quoting="none",
):
    """Validates local TSV/CSV/JSONL files and returns a TaskSpec for `task_dataset`.

    Labels are the sorted set of the used training rows' labels (or floats with
    `regression=True`); eval and test labels must be in that set (test files may omit the label
    column -> y = -1 / NaN). Prints one `summary` line per file; `spec.counts(split)` holds them.
    skip_bad_rows: skip and count malformed rows instead of raising (see the module doc).
    tsv_quoting: "none" reads .tsv files as plain tab-separated text, "csv" with CSV quoting.
    """
    check_tsv_quoting(tsv_quoting)
    columns = (text_column,) + ((text_b_column,) if text_b_column else ())
    files = (("train", train_file),)
    files += (("validation", eval_file),) if eval_file else ()
    files += (("test", test_file),) if test_file else ()
    parsed = {split: parse_file(path, columns, label_column, split != "test", skip_bad_rows,
                                tsv_quoting)
              for split, path in files}
    names = () if regression else tuple(sorted(set(parsed["train"].labels)))
    kind = "regression" if regression else "classification"
    metrics = ("pearson", "spearman") if regression else (
        ("accuracy", "f1") if len(names) == 2 else ("accuracy",))
    spec = TaskSpec(
        name=name, text_keys=columns, label_key=label_column,
        num_classes=1 if regression else len(names), kind=kind, metrics=metrics,
        train_split="train", eval_splits=("validation",) if eval_file else (), label_names=names,
        test_splits=("test",) if test_file else (), files=files, skip_bad_rows=skip_bad_rows,
        tsv_quoting=tsv_quoting,
        row_counts=tuple((s, tuple(p.counts.items())) for s, p in parsed.items()),
        parsed=tuple(parsed.items()),
    )
    for split, path in files:
        encode_labels(path, parsed[split].labels, parsed[split].lines, spec)
        print(summary(path, parsed[split].counts))
    return spec


def split_path(spec, split):
    """The file of one split of a file task (a one-line error naming the splits it has)."""
    paths = dict(spec.files)
    if split not in paths:
        raise TaskFileError(f"Task {spec.name!r} has no {split!r} file; it has {sorted(paths)}.")
    return paths[split]


def file_split_dataset(spec, split):
    """Dataset of {text keys..., label key} for one split of a file task: the rows the spec's
    loader read (`spec.parsed`), else the file parsed now."""
    path = split_path(spec, split)
    texts, labels, lines, _ = dict(spec.parsed).get(split) or parse_file(
        path, spec.text_keys, spec.label_key, split != "test", spec.skip_bad_rows,
        spec.tsv_quoting)
    y = encode_labels(path, labels, lines, spec)
    features = {k: tf.constant(v, tf.string) for k, v in zip(spec.text_keys, texts, strict=True)}
    features[spec.label_key] = tf.constant(y, tf.float32 if spec.kind == "regression" else tf.int32)
    return tf.data.Dataset.from_tensor_slices(features)
