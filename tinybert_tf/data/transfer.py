"""Transfer sets: unlabelled in-domain text that the teacher labels for task distillation.

A transfer set is one or more local files of task-shaped text with no labels:

  * ``.txt`` / ``.txt.gz``: one example per line (single-sentence tasks only);
  * ``.tsv`` / ``.csv`` (header row) / ``.jsonl``: the task's text columns are read, every other
    column (e.g. the label column of ``tools/augment.py`` output) is ignored. They are parsed by
    the task-file reader (``task_files.read_rows``: quoting, field counts, BOM): a malformed row
    (a stray tab, bad quoting, a bad JSONL line) is an error, or skipped and counted as
    ``bad_rows`` with ``skip_bad_rows=True``.

``read_transfer`` drops rows that would leak evaluation data into training (their key is one of
an eval / test split's, see ``split_keys``) and rows that add nothing (a key of the labelled train
split, or seen earlier in the transfer set), and counts why each row was dropped.
``transfer_examples`` does all of that for a task and returns the ``extra_examples`` columns for
``tasks.task_dataset``, whose transfer rows get label -1 / NaN and sample weight 0.
"""

from __future__ import annotations

import gzip
import io

import tensorflow as tf

from tinybert_tf.data.task_files import BAD_REASONS, parse_file, read_rows
from tinybert_tf.data.task_spec import TaskFileError, get_task

COUNT_NAMES = ("files", "read", "used", "leaked", "duplicate", "empty", "bad_rows")
_TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
_TEXT_SUFFIXES = (".txt", ".txt.gz")


def text_key(texts) -> tuple[str, ...]:
    """The identity of an example for leakage / duplicate checks.

    `texts` is the example's text fields in task order (a str is one field). The key is the tuple
    of those fields with every run of whitespace (spaces, tabs, newlines) collapsed to one space
    and the ends stripped; case and punctuation are kept, so ``"A  dog\\t"`` and ``"A dog"`` are
    the same example but ``"a dog"`` is not.
    """
    if isinstance(texts, str | bytes):
        texts = (texts,)
    return tuple(
        " ".join((t.decode("utf-8") if isinstance(t, bytes) else str(t)).split()) for t in texts
    )


def split_keys(spec, split, data_dir=None) -> set:
    """The `text_key` of every example of one split of a task (a TaskSpec or a TASKS name).

    Local-file tasks read the split's file with the same reader as `tasks.task_dataset`; TFDS
    tasks iterate ``tfds.load(spec.tfds_name, split=split, data_dir=data_dir)``.
    """
    spec = get_task(spec)
    if spec.kind == "token_classification":
        raise TaskFileError(f"Task {spec.name!r}: transfer sets are for sentence and sentence-pair "
                            "tasks, not token classification.")
    if spec.files:
        paths = dict(spec.files)
        if split not in paths:
            raise TaskFileError(
                f"Task {spec.name!r} has no {split!r} file; it has {sorted(paths)}.")
        columns = parse_file(paths[split], spec.text_keys, spec.label_key, False,
                             spec.skip_bad_rows).texts
        return {text_key(texts) for texts in zip(*columns, strict=True)}
    import tensorflow_datasets as tfds

    ds = tfds.load(spec.tfds_name, split=split, data_dir=data_dir)
    return {text_key([ex[k] for k in spec.text_keys]) for ex in tfds.as_numpy(ds)}


def _expand(paths) -> list[str]:
    """Files of a comma-separated string or a list of paths / globs, in order, each once."""
    patterns = paths.split(",") if isinstance(paths, str) else list(paths)
    patterns = [str(p).strip() for p in patterns if str(p).strip()]
    if not patterns:
        raise TaskFileError(f"transfer set {paths!r} names no file; pass paths or globs.")
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise TaskFileError(f"transfer set pattern {pattern!r} matches no file.")
        files += [m for m in matches if m not in files]
    return files


def _text_rows(path):
    """(line_number, text) of a one-example-per-line .txt / .txt.gz file."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if path.lower().endswith(".gz"):
        data = gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    lines = data.decode("utf-8").split("\n")  # not splitlines(): U+2028 etc. stay in a text
    if lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines, 1):
        yield i, line.removesuffix("\r")


def _file_rows(path, text_columns, skip_bad_rows=False, counts=None):
    """(line_number, (text, ...)) of one transfer file; a missing column is a one-line error, a
    malformed row too (or, with `skip_bad_rows`, skipped and counted in `counts`)."""
    lower = path.lower()
    if lower.endswith(_TEXT_SUFFIXES):
        if len(text_columns) != 1:
            raise TaskFileError(
                f"{path}: a .txt transfer file holds one text per line, but this task needs "
                f"{len(text_columns)} columns {list(text_columns)}; use .tsv/.csv/.jsonl with "
                "both columns."
            )
        for line, text in _text_rows(path):
            yield line, (text,)
        return
    if not lower.endswith(_TABLE_SUFFIXES):
        raise TaskFileError(f"{path}: unknown transfer file type; use .txt, .tsv, .csv or .jsonl.")
    for line, texts, _ in read_rows(path, text_columns, skip_bad_rows=skip_bad_rows,
                                    counts=counts):
        yield line, texts


def read_transfer(paths, text_columns, exclude_keys=(), known_keys=(), skip_bad_rows=False):
    """Reads a transfer set -> ``(columns, counts)``.

    paths: a comma-separated string or a list of paths / globs (``tf.io.gfile.glob``; a pattern
    matching nothing is an error); files are read in order (each pattern's matches sorted), rows
    in line order. text_columns: the column names to read, e.g. ``("text",)`` or
    ``("sentence1", "sentence2")``; ``.txt`` files only serve one-column tasks.
    skip_bad_rows: a malformed .tsv/.csv/.jsonl row is skipped and counted, not a TaskFileError.

    Every row read is counted in exactly one of: ``bad_rows`` (malformed, with skip_bad_rows),
    ``empty`` (all text fields blank), ``leaked``
    (its `text_key` is in `exclude_keys`, the eval / test splits' keys), ``duplicate`` (its key
    is in `known_keys`, the labelled train split's keys, or an earlier transfer row had it) or
    ``used``. Returns ``columns = {column: [text, ...]}`` (the used rows, texts as read) and
    ``counts = {"files", "read", "used", "leaked", "duplicate", "empty", "bad_rows"}``. Zero used
    rows is an
    error naming the paths and the counts.
    """
    text_columns = (text_columns,) if isinstance(text_columns, str) else tuple(text_columns)
    exclude, known = set(exclude_keys), set(known_keys)
    seen: set[tuple[str, ...]] = set()
    files = _expand(paths)
    counts = dict.fromkeys(COUNT_NAMES, 0)
    counts["files"] = len(files)
    columns: dict[str, list[str]] = {c: [] for c in text_columns}
    for path in files:
        bad: dict[str, int] = {}
        for _, texts in _file_rows(path, text_columns, skip_bad_rows, bad):
            counts["read"] += 1
            key = text_key(texts)
            if not any(key):
                counts["empty"] += 1
            elif key in exclude:
                counts["leaked"] += 1
            elif key in known or key in seen:
                counts["duplicate"] += 1
            else:
                seen.add(key)
                counts["used"] += 1
                for col, text in zip(text_columns, texts, strict=True):
                    columns[col].append(text)
        skipped = sum(bad.get(reason, 0) for reason in BAD_REASONS)
        counts["bad_rows"] += skipped
        counts["read"] += skipped
    if not counts["used"]:
        raise TaskFileError(f"transfer set {paths!r} has no usable rows: {counts}.")
    return columns, counts


def transfer_examples(task, paths, data_dir=None, text_columns=None, dedupe_train=True,
                      skip_bad_rows=False):
    """`read_transfer` for a task: the eval and test splits' keys are excluded (leakage), the
    train split's keys count as duplicates (unless ``dedupe_train=False``). Returns
    ``(extra_examples, counts)`` with ``extra_examples`` keyed by the task's text keys, ready for
    ``tasks.task_dataset(..., extra_examples=...)``. text_columns: the transfer files' column
    names when they differ from the task's text keys (same number and order). skip_bad_rows:
    see `read_transfer` (a file task's own splits follow ``spec.skip_bad_rows``)."""
    spec = get_task(task)
    text_columns = tuple(text_columns or spec.text_keys)
    if len(text_columns) != len(spec.text_keys):
        raise TaskFileError(f"text_columns {list(text_columns)} must name {len(spec.text_keys)} "
                            f"columns, one per text key {list(spec.text_keys)}.")
    exclude: set = set()
    for split in (*spec.eval_splits, *spec.test_splits):
        exclude |= split_keys(spec, split, data_dir)
    known = split_keys(spec, spec.train_split, data_dir) if dedupe_train and spec.train_split \
        else set()
    columns, counts = read_transfer(paths, text_columns, exclude, known, skip_bad_rows)
    extra = {k: columns[c] for k, c in zip(spec.text_keys, text_columns, strict=True)}
    return extra, counts
