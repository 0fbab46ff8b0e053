"""Augmenting a whole TSV file: sharded, resumable, originals always kept (see `augment`).

``augment_file`` writes ``aug-0000i-of-0000N.tsv`` shards with a ``.done`` marker each, so a
restart skips finished shards; the seed makes every shard's copies the same on a re-run. The
input is read by the task-file reader (`task_files.read_table`, ``tsv_quoting`` as for task
files) and every output is written in the default dialect, plain TSV (`task_files.tsv_text`),
so the task-file reader reads it back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from tinybert_tf.data import task_files

if TYPE_CHECKING:
    from tinybert_tf.data.augment import Augmenter


def _shard_lines(augmenter, header, part, idx, n_aug, start_index):
    """The rows of one shard: the header, then per input row the row itself and ``n_aug``
    copies with the text columns (`idx`) augmented (whitespace runs -> one space)."""
    groups = augmenter.augment_examples([[r[i] for i in idx] for r in part], n_aug,
                                        start_index=start_index)
    lines = [header]
    for row, group in zip(part, groups, strict=True):
        lines.append(row)
        for ex in group[1:]:
            new = list(row)
            for i, text in zip(idx, ex, strict=True):
                new[i] = " ".join(text.split())
            lines.append(new)
    return lines


def _column_indices(in_tsv, header, columns, label_column):
    """Header positions of the text `columns`; a column (or label column) the header lacks is a
    ValueError naming it."""
    for col in columns + ([label_column] if label_column else []):
        if col not in header:
            raise ValueError(f"column {col!r} not in {in_tsv} header {header}; "
                             "pass the right text/label column names")
    return [header.index(c) for c in columns]


def _write_shard(augmenter, path, header, part, idx, n_aug, start_index):
    """Writes one shard (``.tmp``, renamed, then its ``.done`` marker holding the counts) in the
    default dialect (`task_files.tsv_text`); returns its counts."""
    before = dict(augmenter.stats)
    text, flattened = task_files.tsv_text(
        _shard_lines(augmenter, header, part, idx, n_aug, start_index))
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    delta = {k: augmenter.stats[k] - before[k] for k in before}
    counts = {"examples_in": len(part), "copies_written": len(part) * n_aug,
              "word_slots": delta["word_slots"], "words_replaced": delta["replaced"],
              "flattened_fields": flattened}
    with open(path + ".done", "w") as f:
        json.dump(counts, f)
    return counts


def _claim(out_dir, in_tsv, augmenter, settings):
    """Records the run's settings (input digest, augmenter's, `settings`, output dialect) in
    ``out_dir/augment_config.json``, or refuses a directory whose shards were made with other
    settings (a resume must not mix two kinds of shards)."""
    with open(in_tsv, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    config = {"input_sha1": digest, "n_aug": settings["n_aug"], "p": augmenter.p,
              "m": augmenter.m, "seed": augmenter.seed, "shard_size": settings["shard_size"],
              "columns": settings["columns"], "pair_context": augmenter.pair_context,
              "vocab_size": len(augmenter.vocab), "tsv_quoting": settings["tsv_quoting"],
              "output": "plain_tsv"}
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, "augment_config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            old = json.load(f)
        if old != config:
            raise ValueError(f"{out_dir} holds shards made with other settings ({old}); "
                             "use a new output_dir or delete it")
    else:
        with open(config_path, "w") as f:
            json.dump(config, f)


def _concatenate(out_dir, header, paths):
    """``out_dir/augmented.tsv``: one header, then every shard's rows in shard order."""
    with open(os.path.join(out_dir, "augmented.tsv.tmp"), "w", encoding="utf-8",
              newline="") as out:
        out.write(task_files.tsv_text([header])[0])
        for path in paths:
            with open(path, encoding="utf-8", newline="") as f:
                next(f)
                out.writelines(f)
    os.replace(os.path.join(out_dir, "augmented.tsv.tmp"), os.path.join(out_dir, "augmented.tsv"))


def augment_file(
    augmenter: Augmenter,
    in_tsv: str,
    out_dir: str,
    n_aug: int = 20,
    shard_size: int = 1000,
    num_shards: int | None = None,
    text_column: str = "text",
    text_b_column: str | None = None,
    label_column: str | None = "label",
    tsv_quoting: str = "none",
) -> dict:
    """Augment the rows of ``in_tsv`` into ``out_dir/aug-SSSSS-of-NNNNN.tsv`` shards.

    Each shard is a TSV with the input's header; per input row the original row, then ``n_aug``
    copies with ``text_column`` (and ``text_b_column``) augmented, other columns (the label)
    copied. A shard is written to ``.tmp``, renamed, then marked with a ``.done`` file holding
    its counts, so a rerun skips finished shards; seeds depend only on the global row index, so
    a resumed run is byte-identical to an uninterrupted one. Finally the shards are concatenated
    into ``out_dir/augmented.tsv`` (one header). ``num_shards`` overrides ``shard_size``.
    ``tsv_quoting``: how ``in_tsv`` is read (`task_files.TSV_QUOTING`). Output is plain TSV: a
    tab / line break inside a field is written as a space. Returns counts: examples_in,
    copies_written, word_slots, words_replaced, flattened_fields (fields so changed), shards,
    shards_skipped."""
    header, rows = task_files.read_table(in_tsv, tsv_quoting)
    columns = [text_column] + ([text_b_column] if text_b_column else [])
    idx = _column_indices(in_tsv, header, columns, label_column)
    if num_shards:
        shard_size = max(1, math.ceil(len(rows) / num_shards))
    num = max(1, math.ceil(len(rows) / shard_size))
    _claim(out_dir, in_tsv, augmenter, {"n_aug": n_aug, "shard_size": shard_size,
                                         "columns": columns, "tsv_quoting": tsv_quoting})
    verbose = augmenter.verbose
    paths = [os.path.join(out_dir, f"aug-{s:05d}-of-{num:05d}.tsv") for s in range(num)]
    totals = _write_shards(augmenter, paths, header, rows, idx, n_aug, shard_size)
    _concatenate(out_dir, header, paths)
    if verbose:
        print(_summary(totals))
    return totals


def _write_shards(augmenter, paths, header, rows, idx, n_aug, shard_size):
    """Writes shard ``s`` of ``rows`` to ``paths[s]`` unless a finished one is there (its
    ``.done`` counts are reused); returns the summed counts. One progress bar, over rows."""
    totals = {"examples_in": 0, "copies_written": 0, "word_slots": 0, "words_replaced": 0,
              "flattened_fields": 0, "shards": len(paths), "shards_skipped": 0}
    bar = tqdm(total=len(rows), desc="augment shards", unit="ex", disable=not augmenter.verbose)
    verbose, augmenter.verbose = augmenter.verbose, False  # one bar (over rows) is enough
    try:
        for s, path in enumerate(paths):
            part = rows[s * shard_size : (s + 1) * shard_size]
            if os.path.exists(path + ".done") and os.path.exists(path):
                with open(path + ".done") as f:
                    counts = json.load(f)
                totals["shards_skipped"] += 1
            else:
                counts = _write_shard(augmenter, path, header, part, idx, n_aug, s * shard_size)
            for k, v in counts.items():
                totals[k] += v
            bar.update(len(part))
    finally:
        augmenter.verbose = verbose
        bar.close()
    return totals


def _summary(totals):
    """The one line `augment_file` prints with ``verbose``."""
    return (f"augment: {totals['examples_in']} examples in, {totals['copies_written']} copies "
            f"written, {totals['words_replaced']}/{totals['word_slots']} words replaced, "
            f"{totals['shards_skipped']}/{totals['shards']} shards skipped (already done), "
            f"{totals['flattened_fields']} fields had a tab / line break written as a space")
