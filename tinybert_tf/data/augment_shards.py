"""Augmenting a whole TSV file: sharded, resumable, originals always kept (see `augment`).

``augment_file`` writes ``aug-0000i-of-0000N.tsv`` shards with a ``.done`` marker each, so a
restart skips finished shards; the seed makes every shard's copies the same on a re-run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from tinybert_tf.data.augment import Augmenter

def _read_tsv(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a TSV, read with the task files' dialect (tab separated, quoting on,
    strict): a row whose field count differs from the header is a one-line TaskFileError."""
    from tinybert_tf.data.task_spec import TaskFileError

    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", strict=True)
        try:
            lines = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
        except csv.Error as err:
            raise TaskFileError(f"{path}:{reader.line_num}: bad quoting ({err}).") from None
    if not lines:
        raise TaskFileError(f"{path} is empty; pass a TSV with a header row")
    header = lines[0][1]
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise TaskFileError(f"{path}:{line}: {len(row)} fields, the header has "
                                f"{len(header)} ({', '.join(header)}); quote a field that "
                                "contains a tab.")
    return header, [row for _, row in lines[1:]]


def _tsv_lines(rows) -> str:
    """Rows as TSV text the task-file reader reads back unchanged (fields quoted when needed)."""
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows)
    return out.getvalue()


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
) -> dict:
    """Augment the rows of ``in_tsv`` into ``out_dir/aug-SSSSS-of-NNNNN.tsv`` shards.

    Each shard is a TSV with the input's header; per input row it holds the original row, then
    ``n_aug`` copies with ``text_column`` (and ``text_b_column``) augmented and every other
    column (the label) copied. A shard is written to ``.tmp``, renamed, then marked with a
    ``.done`` file holding its counts, so a rerun skips finished shards; seeds depend only on
    the global row index, so a resumed run is byte-identical to an uninterrupted one. Finally
    all shards are concatenated into ``out_dir/augmented.tsv`` (one header). ``num_shards``
    overrides ``shard_size``. Returns counts: examples_in, copies_written, word_slots,
    words_replaced, shards, shards_skipped.
    """
    header, rows = _read_tsv(in_tsv)
    columns = [text_column] + ([text_b_column] if text_b_column else [])
    for col in columns + ([label_column] if label_column else []):
        if col not in header:
            raise ValueError(f"column {col!r} not in {in_tsv} header {header}; "
                             "pass the right text/label column names")
    idx = [header.index(c) for c in columns]
    if num_shards:
        shard_size = max(1, math.ceil(len(rows) / num_shards))
    num = max(1, math.ceil(len(rows) / shard_size))
    with open(in_tsv, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    config = {"input_sha1": digest, "n_aug": n_aug, "p": augmenter.p, "m": augmenter.m,
              "seed": augmenter.seed, "shard_size": shard_size, "columns": columns,
              "pair_context": augmenter.pair_context, "vocab_size": len(augmenter.vocab)}
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
    totals = {"examples_in": 0, "copies_written": 0, "word_slots": 0, "words_replaced": 0,
              "shards": num, "shards_skipped": 0}
    bar = tqdm(total=len(rows), desc="augment shards", unit="ex", disable=not augmenter.verbose)
    verbose, augmenter.verbose = augmenter.verbose, False  # one bar (over rows) is enough
    paths = []
    try:
        for s in range(num):
            path = os.path.join(out_dir, f"aug-{s:05d}-of-{num:05d}.tsv")
            paths.append(path)
            part = rows[s * shard_size : (s + 1) * shard_size]
            if os.path.exists(path + ".done") and os.path.exists(path):
                with open(path + ".done") as f:
                    counts = json.load(f)
                totals["shards_skipped"] += 1
            else:
                before = dict(augmenter.stats)
                groups = augmenter.augment_examples(
                    [[r[i] for i in idx] for r in part], n_aug, start_index=s * shard_size)
                lines = [header]
                for row, group in zip(part, groups, strict=True):
                    lines.append(row)
                    for ex in group[1:]:
                        new = list(row)
                        for i, text in zip(idx, ex, strict=True):
                            new[i] = " ".join(text.split())
                        lines.append(new)
                with open(path + ".tmp", "w", encoding="utf-8") as f:
                    f.write(_tsv_lines(lines))
                os.replace(path + ".tmp", path)
                delta = {k: augmenter.stats[k] - before[k] for k in before}
                counts = {"examples_in": len(part), "copies_written": len(part) * n_aug,
                          "word_slots": delta["word_slots"], "words_replaced": delta["replaced"]}
                with open(path + ".done", "w") as f:
                    json.dump(counts, f)
            for k, v in counts.items():
                totals[k] += v
            bar.update(len(part))
    finally:
        augmenter.verbose = verbose
        bar.close()
    with open(os.path.join(out_dir, "augmented.tsv.tmp"), "w", encoding="utf-8") as out:
        out.write(_tsv_lines([header]))
        for path in paths:
            with open(path, encoding="utf-8") as f:
                next(f)
                out.writelines(f)
    os.replace(os.path.join(out_dir, "augmented.tsv.tmp"), os.path.join(out_dir, "augmented.tsv"))
    if verbose:
        print(f"augment: {totals['examples_in']} examples in, {totals['copies_written']} copies "
              f"written, {totals['words_replaced']}/{totals['word_slots']} words replaced, "
              f"{totals['shards_skipped']}/{num} shards skipped (already done)")
    return totals
