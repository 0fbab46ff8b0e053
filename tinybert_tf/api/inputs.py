"""In-memory data given to the Python API, written once as files the launcher reads.

A run reads its data from files, so config.json names them and a resumed run reads the same
rows. `task_file` writes a task split given as a `tf.data.Dataset` or a list of rows to
`<workdir>/inputs/<split>.jsonl`; `text_file` writes texts (a corpus or a transfer set) one per
line to `<workdir>/inputs/<name>.txt`. A file with the same content is left as it is, so calling
the same function again resumes; other data for a workdir that holds a run is a one-line error
(`overwrite=True` replaces the file). A path (str or os.PathLike) passes through unchanged.
"""

from __future__ import annotations

import json
import os

from tinybert_tf.errors import UserError

INPUTS = "inputs"


def is_path(value):
    return isinstance(value, (str, os.PathLike))


def _plain(value):
    """A Python value from a tensor / NumPy element: bytes decoded, scalars unwrapped."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return value


def _elements(data):
    """The rows of a tf.data.Dataset (its elements as NumPy) or any iterable."""
    if hasattr(data, "as_numpy_iterator"):
        return data.as_numpy_iterator()
    return iter(data)


def task_rows(data, columns):
    """Dicts of `columns` (text, [text_b,] label) from rows that are dicts (keys as the columns)
    or tuples/lists in that order (a test split may leave the label out)."""
    for number, row in enumerate(_elements(data), 1):
        if isinstance(row, dict):
            missing = [c for c in columns[:-1] if c not in row]
            if missing:
                raise UserError(f"row {number} of the data has no {missing[0]!r} key (it has "
                                f"{', '.join(map(str, row))}); name the columns with data="
                                "{'text_column': ..., 'label_column': ...}.")
            yield {c: _plain(row[c]) for c in columns if c in row}
        elif isinstance(row, (tuple, list)) and len(row) in (len(columns) - 1, len(columns)):
            yield dict(zip(columns, (_plain(v) for v in row)))
        else:
            raise UserError(f"row {number} of the data is {type(row).__name__} {row!r:.80}; "
                            f"give dicts with the keys {', '.join(columns)} or tuples in that "
                            "order.")


def _names_files(value):
    """Whether `value` is a path or glob that names existing files (else it is a text)."""
    import tensorflow as tf

    if not is_path(value) or "\n" in str(value):
        return False
    try:
        return bool(tf.io.gfile.glob(os.fspath(value)))
    except (tf.errors.OpError, ValueError):
        return False


def _write_if_changed(path, text, workdir, overwrite=False):
    """Write `text` to `path` unless it holds exactly that already; returns `path`. Other data
    for a workdir that holds a run (its config.json) is a UserError unless `overwrite`: the
    run's config names the file, so it would resume on rows it did not start with."""
    import tensorflow as tf

    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "r") as f:
            if f.read() == text:
                return path
        if tf.io.gfile.exists(os.path.join(workdir, "config.json")) and not overwrite:
            raise UserError(f"these rows differ from {path}, which the run in {workdir} "
                            "trains on; pass a new workdir (overwrite=True replaces the file, "
                            "and the run resumes from its checkpoints on these rows).")
        tf.io.gfile.remove(path)  # ram:// would append
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return path


def task_file(data, workdir, split, columns, overwrite=False):
    """`data` (a path, a tf.data.Dataset or a list of rows) -> the path of a task file."""
    if data is None or is_path(data):
        return "" if data is None else os.fspath(data)
    rows = [json.dumps(r, ensure_ascii=False) for r in task_rows(data, columns)]
    if not rows:
        raise UserError(f"the {split} data has no rows; pass a non-empty dataset or a file.")
    return _write_if_changed(os.path.join(workdir, INPUTS, f"{split}.jsonl"),
                             "\n".join(rows) + "\n", workdir, overwrite)


def text_file(data, workdir, name, overwrite=False):
    """`data` (a path or glob, a list of paths, a tf.data.Dataset or list of texts) -> what the
    config takes: paths comma-joined, texts written one per line (a newline inside a text becomes
    a space: one document per line)."""
    if data is None or is_path(data):
        return "" if data is None else os.fspath(data)
    items = [_plain(v) for v in _elements(data)]
    if items and all(_names_files(v) for v in items):
        return ",".join(os.fspath(v) for v in items)  # a list of files
    texts = [" ".join(str(t).splitlines()) for t in items]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"the {name} data has no texts; pass a non-empty dataset or a file.")
    return _write_if_changed(os.path.join(workdir, INPUTS, f"{name}.txt"),
                             "\n".join(texts) + "\n", workdir, overwrite)
