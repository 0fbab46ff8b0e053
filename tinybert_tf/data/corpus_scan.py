"""Counting a corpus without training on it: files, lines, documents, empty lines skipped,
invalid UTF-8 replaced, word pieces and documents split (`scan_corpus` -> `CorpusStats`).

The launcher prints a scan before training (and refuses a corpus without documents);
`tinybert-tf-prepare-corpus` records one in `corpus_meta.json`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tinybert_tf.data.corpus import (
    CorpusError,
    check_doc_format,
    expand_patterns,
    file_documents,
    is_tfrecord,
    text_lines,
    tfrecord_texts,
)
from tinybert_tf.data.packing import tokenize_fn

_SCAN_BATCH = 4096  # lines per vectorised step


@dataclasses.dataclass
class CorpusStats:
    """Counts from one pass over a corpus; `lines` counts TFRecord records too."""

    files: int = 0
    lines: int = 0
    documents: int = 0
    empty_lines: int = 0  # whitespace-only lines/records (skipped, or doc separators)
    invalid_utf8_lines: int = 0  # lines with bad bytes (replaced by U+FFFD, kept)
    sequences: int = 0  # packed sequences (counted by the shard writer)
    tokens: int = 0  # word pieces, excluding [CLS]/[SEP] (only when a tokenizer was given)
    split_documents: int = 0  # documents over seq_len - 2 pieces, packed into several sequences
    complete: bool = True  # False: `scan_corpus(max_lines=...)` stopped before the end

    def summary(self) -> str:
        """One printable line, e.g. for the launcher's log."""
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


def _total(flags):
    return tf.reduce_sum(tf.cast(flags, tf.int64))


def _pieces(tokenizer, texts, cap):
    """int64 [word pieces, texts over `cap` pieces] of a batch of texts ('' has none)."""
    pieces = tokenize_fn(tokenizer)(texts)
    n = tf.cast(pieces.row_lengths(), tf.int64)
    return tf.stack([tf.reduce_sum(n), _total(n > cap)])


def _line_counts(lines, blank_line, tokenizer=None, cap=0):
    """int64 [lines, empty, invalid UTF-8, documents, word pieces, documents over `cap` pieces]
    of one file's raw lines, a batch a step (pieces only for one document a line, else 0)."""

    def step(acc, batch):
        counts, after_blank = acc
        fixed = tf.strings.unicode_transcode(batch, "UTF-8", "UTF-8", errors="replace",
                                             replacement_char=0xFFFD)
        text = tf.strings.strip(fixed)
        blank = tf.equal(text, "")
        starts = ~blank  # a document starts at each non-blank line (after a blank one)
        if blank_line:
            starts &= tf.concat([[after_blank], blank[:-1]], 0)
        pieces = tf.zeros([2], tf.int64) if tokenizer is None or blank_line else \
            _pieces(tokenizer, text, cap)
        new = tf.stack([tf.size(batch, tf.int64), _total(blank),
                        _total(tf.not_equal(fixed, batch)), _total(starts)])
        return counts + tf.concat([new, pieces], 0), blank[-1]

    init = (tf.zeros([6], tf.int64), tf.constant(True))
    return lines.batch(_SCAN_BATCH).reduce(init, step)[0]


def scan_corpus(patterns, doc_format="line", tokenizer=None, seq_len=128, max_lines=None):
    """Counts files, lines, documents, skipped empty lines and invalid UTF-8 (-> CorpusStats).

    One streaming pass per file, a batch of lines a step, files in parallel. With a tokenizer
    it also counts word pieces and the documents over `seq_len - 2` of them, which
    `corpus_dataset` packs into several sequences (never drops); `sequences` stays 0 (the shard
    writer counts them). `max_lines`: read about that many lines (files in sorted order, each
    cut at max_lines) and stop; `stats.complete` is then False and the counts are of that part.
    """
    check_doc_format(doc_format)
    files = expand_patterns(patterns)
    stats = CorpusStats(files=len(files))
    limit = -1 if max_lines is None else int(max_lines)
    totals = [0] * 6
    for tfrecord in (False, True):
        group = [f for f in files if is_tfrecord(f) == tfrecord]
        if not group:
            continue
        if limit >= 0 and totals[0] >= limit:  # the budget went to the text files
            stats.complete = False
            continue

        def count(path, t=tfrecord):
            raw = tfrecord_texts(path, limit) if t else text_lines(path, limit)
            blank_line = doc_format == "blank_line" and not t
            counts = _line_counts(raw, blank_line, tokenizer, seq_len - 2)
            if tokenizer is None or not blank_line:
                return counts
            docs = file_documents(path, doc_format, t, limit).filter(
                lambda d: tf.strings.length(d) > 0).batch(256)  # documents joined from lines
            pieces = docs.reduce(tf.zeros([2], tf.int64),
                                 lambda acc, batch: acc + _pieces(tokenizer, batch, seq_len - 2))
            return tf.concat([counts[:4], pieces], 0)

        per_file = tf.data.Dataset.from_tensor_slices(group).map(
            count, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        done = 0
        for counts in per_file.as_numpy_iterator():
            done += 1
            totals = [a + int(b) for a, b in zip(totals, counts, strict=True)]
            if limit >= 0 and (counts[0] >= limit or totals[0] >= limit):
                stats.complete = False  # this file was cut, or the budget is spent
                break
        stats.complete = stats.complete and done == len(group)
    (stats.lines, stats.empty_lines, stats.invalid_utf8_lines, stats.documents, stats.tokens,
     stats.split_documents) = totals
    return stats


def require_documents(stats, patterns, fix="pass files with text"):
    """A one-line CorpusError when a scan found no document (empty or whitespace-only input)."""
    if stats.documents == 0 and stats.complete:
        raise CorpusError(
            f"Corpus {patterns!r} has no documents: {stats.files} file(s), {stats.lines} lines, "
            f"all empty or whitespace-only; {fix}.")
    return stats
