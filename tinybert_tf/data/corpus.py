"""Unlabelled corpora for general distillation: text files / TFRecords -> packed BERT inputs.

Everything after file listing runs inside `tf.data` (TensorFlow Text ops via the teacher's
keras-hub tokenizer), so the same pipeline feeds CPU, GPU and Cloud TPU (`gs://` globs work
through `tf.io.gfile`). Output elements are int32 dicts
`{"token_ids", "segment_ids", "padding_mask"}` of shape `[batch, seq_len]`.

Epoch `e` of a repeated corpus is shuffled with a seed drawn from `(seed, e)` alone (files and
sequences), not with a `reshuffle_each_iteration` shuffle whose seed advances with every iterator
made (Keras' TF `fit` peeks a batch and then starts a new iterator), so a run resumed past an epoch
end sees the batches an uninterrupted run sees.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tinybert_tf.data.packing import tokenize_fn
from tinybert_tf.errors import UserError

_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_DOC_FORMATS = ("line", "blank_line")
# Sentence ends: Latin punctuation followed by whitespace, or CJK full stops (no space needed).
_LATIN_END = r"([.!?]+[\"')\]]*)\s+"
_CJK_END = "([。！？]+[」』”）]*)\\s*"


class CorpusError(UserError):
    """A corpus mistake the user fixes (no documents, an unknown doc_format, ...); one line."""


def expand_patterns(patterns) -> list[str]:
    """Sorted file list from a pattern, a comma-separated string or a list of globs/paths.

    Uses `tf.io.gfile`, so `gs://bucket/*.txt` works. A pattern matching nothing raises a
    one-line FileNotFoundError naming it; patterns matching only directories a CorpusError.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [p for p in str(patterns).split(",") if p.strip()]
    patterns = [str(p).strip() for p in patterns]
    if not patterns:
        raise CorpusError("No corpus input given; pass a file, a glob or a comma-separated list.")
    files = []
    for pattern in patterns:
        matched = sorted(tf.io.gfile.glob(pattern))
        if not matched:
            raise FileNotFoundError(f"No file matches corpus pattern {pattern!r}; check the path.")
        # Skip directories (checked locally only: one RPC per file would be slow on buckets).
        files.extend(m for m in matched if "://" in m or not tf.io.gfile.isdir(m))
    if not files:
        raise CorpusError(f"Corpus {','.join(patterns)!r} matches only directories; pass files "
                          "or a glob of files, e.g. 'corpus/*.txt'.")
    return sorted(dict.fromkeys(files))


def _pair(seed, salt):
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(salt, tf.int64)])


def epoch_seed(seed, epoch):
    """The int64 scalar seed of epoch `epoch` (tensor or int): a pure function of both."""
    return tf.random.stateless_uniform([], _pair(seed, epoch), minval=0, maxval=2**62,
                                       dtype=tf.int64)


# Stateless shuffles: `Dataset.shuffle` keeps seed state per dataset (and refuses a tensor seed
# when the global seed is 0), so the epoch-seeded pipeline permutes with stateless ops instead.


def shuffled_files(files, seed):
    """A dataset of `files` in an order drawn from `seed` (an int or an int64 tensor)."""
    order = tf.random.experimental.stateless_shuffle(tf.range(len(files)), _pair(seed, -1))
    return tf.data.Dataset.from_tensor_slices(tf.gather(tf.constant(files), order))


def window_shuffle(ds, size, seed):
    """1-D elements of `ds` shuffled within windows of `size` consecutive ones (window w in an
    order drawn from `(seed, w)`); like a shuffle buffer of `size`, without seed state."""

    def permute(w, rows):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(rows.nrows()), tf.random.experimental.stateless_fold_in(_pair(seed, -2), w))
        return tf.gather(rows, order)

    return ds.ragged_batch(size).enumerate().map(permute).unbatch()


def _to_inputs(token_ids, seq_len, pad_id):
    """Pads one 1-D sequence to `seq_len` (None: unpadded) -> keras-hub int32 input dict."""
    n = tf.shape(token_ids)[0]
    if seq_len is not None:
        token_ids = tf.pad(token_ids, [[0, seq_len - n]], constant_values=pad_id)
        token_ids = tf.ensure_shape(token_ids, [seq_len])
    mask = tf.cast(tf.range(tf.shape(token_ids)[0]) < n, tf.int32)
    return {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": mask}


def finish_sequences(
    seqs, seq_len, batch_size, pad_id=0, shuffle_buffer=10000, seed=0, repeat=True,
    drop_remainder=False, bucket_boundaries=None, deterministic=True,
):
    """Shuffle/repeat/batch/prefetch unpadded 1-D int32 sequences: a dataset, or a function
    `epoch_seed -> dataset` of one pass (its file order drawn from that seed).

    Batches are `{"token_ids","segment_ids","padding_mask"}` int32 `[B, seq_len]`; with
    `bucket_boundaries` they are padded only to the longest sequence of the batch instead. Epoch
    e (and without `repeat` the one pass, e = 0) is `seqs(epoch_seed(seed, e))` shuffled with
    that seed: its order depends on the seed and the epoch only.
    """
    if bucket_boundaries and max(bucket_boundaries) > seq_len:
        raise CorpusError(f"bucket_boundaries {bucket_boundaries} exceed seq_len={seq_len}.")
    make = seqs if callable(seqs) else (lambda _: seqs)
    if repeat and not any(True for _ in make(epoch_seed(seed, 0)).take(1)):
        # repeating an empty pass would loop for ever
        raise CorpusError("The corpus yields no sequences (no documents); pass files with text.")

    def one_pass(s):
        return window_shuffle(make(s), shuffle_buffer, s) if shuffle_buffer else make(s)

    if repeat:
        seqs = tf.data.Dataset.counter().flat_map(lambda e: one_pass(epoch_seed(seed, e)))
    else:
        seqs = one_pass(epoch_seed(seed, 0))
    if bucket_boundaries:
        ds = seqs.map(lambda s: _to_inputs(s, None, pad_id))
        ds = ds.bucket_by_sequence_length(
            lambda x: tf.shape(x["token_ids"])[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
            padding_values={"token_ids": pad_id, "segment_ids": 0, "padding_mask": 0},
            drop_remainder=drop_remainder,
        )
    else:
        ds = seqs.map(lambda s: _to_inputs(s, seq_len, pad_id), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def is_tfrecord(path: str) -> bool:
    """True for a TFRecord file name (`_TFRECORD_SUFFIXES`, optionally gzipped)."""
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith(_TFRECORD_SUFFIXES)


def _compression(path):
    """'GZIP' for `*.gz` paths, '' otherwise; works on a scalar string tensor."""
    return tf.where(tf.strings.regex_full_match(path, r".*\.gz"), "GZIP", "")


def text_lines(path, limit=-1):
    """Raw lines of one (optionally gzipped) text file, as a dataset of scalar strings (the
    first `limit` when limit >= 0)."""
    return tf.data.TextLineDataset(path, compression_type=_compression(path)).take(limit)


def tfrecord_texts(path, limit=-1):
    """The `text` feature of each tf.train.Example in one TFRecord file (the first `limit`)."""
    spec = {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
    records = tf.data.TFRecordDataset(path, compression_type=_compression(path)).take(limit)
    return records.map(lambda r: tf.io.parse_single_example(r, spec)["text"])


def _fix_utf8(text):
    """Replaces invalid UTF-8 by U+FFFD and strips surrounding whitespace."""
    fixed = tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    return tf.strings.strip(fixed)


def _blank_line_docs(lines):
    """Joins runs of non-blank lines into documents; a final '' sentinel flushes the last one."""
    lines = lines.concatenate(tf.data.Dataset.from_tensors(tf.constant("")))

    def step(acc, line):
        line = _fix_utf8(line)
        blank = tf.equal(line, "")
        joined = tf.where(tf.equal(acc, ""), line, tf.strings.join([acc, line], " "))
        return tf.where(blank, "", joined), tf.where(blank, acc, "")

    return lines.scan(tf.constant(""), step)


def file_documents(path, doc_format, tfrecord, limit=-1):
    """Documents (UTF-8-fixed, stripped, possibly empty) of one file (of its first `limit`
    lines or records when limit >= 0)."""
    if tfrecord:
        return tfrecord_texts(path, limit).map(_fix_utf8)
    if doc_format == "blank_line":
        return _blank_line_docs(text_lines(path, limit))
    return text_lines(path, limit).map(_fix_utf8)


def check_doc_format(doc_format):
    """A `doc_format` not in `_DOC_FORMATS` is a CorpusError naming the choices."""
    if doc_format not in _DOC_FORMATS:
        raise CorpusError(f"doc_format={doc_format!r} is not one of {_DOC_FORMATS}.")


def documents_dataset(patterns, doc_format="line", shuffle_files=False, seed=0, deterministic=True):
    """Non-empty documents (scalar tf.string) from text/.gz/TFRecord files, interleaved by file.

    `doc_format="line"`: one document per line; `"blank_line"`: documents separated by blank
    lines. TFRecords hold one document per tf.train.Example `text` feature. `seed` (an int or an
    int64 tensor, e.g. an `epoch_seed`) orders the files with `shuffle_files`.
    """
    check_doc_format(doc_format)
    files = expand_patterns(patterns)
    streams = []
    for tfrecord in (False, True):
        group = [f for f in files if is_tfrecord(f) == tfrecord]
        if not group:
            continue
        ds = shuffled_files(group, seed) if shuffle_files else \
            tf.data.Dataset.from_tensor_slices(group)
        streams.append(
            ds.interleave(
                lambda f, t=tfrecord: file_documents(f, doc_format, t),
                cycle_length=min(len(group), 8),
                block_length=1,
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic,
            )
        )
    ds = streams[0]
    if len(streams) == 2:  # text and TFRecord files: a fair coin (seeded) picks the next one
        coin = tf.data.Dataset.counter().map(lambda i: tf.random.stateless_uniform(
            [], _pair(seed, i), maxval=2, dtype=tf.int64))
        ds = tf.data.Dataset.choose_from_datasets(streams, coin, stop_on_empty_dataset=False)
    return ds.filter(lambda d: tf.strings.length(d) > 0)


def split_sentences(doc):
    """Splits one document (scalar string) into a 1-D tensor of non-empty sentences."""
    text = tf.strings.regex_replace(doc, _LATIN_END, "\\1\n")
    text = tf.strings.regex_replace(text, _CJK_END, "\\1\n")
    sents = tf.strings.strip(tf.strings.split(text, "\n"))
    return tf.boolean_mask(sents, tf.strings.length(sents) > 0)


def pack_document(doc, tokenizer, seq_len=128):
    """Tokenises one document and greedily packs consecutive sentences into rows.

    Returns a RaggedTensor `[num_sequences, None]` int32 of word-piece ids **without**
    [CLS]/[SEP], each row at most `seq_len - 2` long. Sentences longer than that are cut into
    several pieces; no token is dropped.
    """
    if tf.executing_eagerly():  # keras-hub tokenizers take their TF path only when traced
        return tf.function(lambda d: pack_document(d, tokenizer, seq_len))(doc)
    cap = seq_len - 2
    pieces = tokenize_fn(tokenizer)(split_sentences(doc))
    values = tf.cast(pieces.flat_values, tf.int32)
    lengths = tf.cast(pieces.row_lengths(), tf.int32)
    rowids = tf.cast(pieces.value_rowids(), tf.int32)
    # Cut long sentences into chunks of at most `cap` tokens.
    pos_in_row = tf.range(tf.size(values)) - tf.gather(tf.cumsum(lengths, exclusive=True), rowids)
    n_chunks = (lengths + cap - 1) // cap
    chunk_ids = tf.gather(tf.cumsum(n_chunks, exclusive=True), rowids) + pos_in_row // cap
    chunk_lens = tf.math.bincount(chunk_ids, minlength=tf.reduce_sum(n_chunks), dtype=tf.int32)

    # Greedy packing: start a new sequence when the next chunk does not fit.
    def step(state, n):
        used, group = state
        new = used + n > cap
        return tf.where(new, n, used + n), tf.where(new, group + 1, group)

    _, groups = tf.scan(step, chunk_lens, initializer=(tf.constant(0), tf.constant(0)))
    n_groups = tf.where(tf.size(groups) > 0, tf.reduce_max(tf.concat([groups, [0]], 0)) + 1, 0)
    token_groups = tf.gather(groups, chunk_ids)
    return tf.RaggedTensor.from_value_rowids(values, token_groups, nrows=n_groups)


def _special_ids(tokenizer):
    return tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id


def document_sequences(documents, tokenizer, seq_len=128, deterministic=True):
    """Documents -> one int32 `[n, None]` RaggedTensor per document: its rows `[CLS] pieces
    [SEP]` (each at most seq_len long; n > 1 for a document over seq_len - 2 pieces)."""
    if seq_len < 3:
        raise CorpusError(f"seq_len={seq_len} is too small; use at least 3.")
    cls_id, sep_id, _ = _special_ids(tokenizer)

    def to_rows(doc):
        rows = pack_document(doc, tokenizer, seq_len)
        n = rows.nrows(out_type=tf.int32)
        cls = tf.fill([n, 1], tf.constant(cls_id, tf.int32))
        sep = tf.fill([n, 1], tf.constant(sep_id, tf.int32))
        return tf.concat([cls, rows, sep], axis=1)

    return documents.map(to_rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def sequences_dataset(documents, tokenizer, seq_len=128, deterministic=True):
    """Documents -> unpadded 1-D int32 sequences `[CLS] pieces [SEP]` (length <= seq_len)."""
    return document_sequences(documents, tokenizer, seq_len, deterministic).unbatch()


def corpus_dataset(
    patterns, tokenizer, seq_len=128, batch_size=32, doc_format="line", shuffle_buffer=10000,
    seed=0, repeat=True, drop_remainder=False, bucket_boundaries=None, deterministic=True,
):
    """Batched, prefetched packed-text dataset for general distillation.

    Yields `{"token_ids", "segment_ids", "padding_mask"}` int32 `[batch_size, seq_len]` (with
    `bucket_boundaries`, the length axis is the batch's bucket length instead). Epoch e's order
    is a pure function of `(seed, e)` (files and sequences are shuffled with `epoch_seed`), which
    exact resume needs. Use `drop_remainder=True` for static shapes on TPU.
    """
    files = expand_patterns(patterns)
    check_doc_format(doc_format)

    def one_pass(s):
        docs = documents_dataset(files, doc_format, shuffle_files=shuffle_buffer > 0, seed=s,
                                 deterministic=deterministic)
        return sequences_dataset(docs, tokenizer, seq_len, deterministic=deterministic)

    return finish_sequences(
        one_pass, seq_len, batch_size, pad_id=tokenizer.pad_token_id,
        shuffle_buffer=shuffle_buffer, seed=seed, repeat=repeat, drop_remainder=drop_remainder,
        bucket_boundaries=bucket_boundaries, deterministic=deterministic,
    )
