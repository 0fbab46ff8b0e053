"""Pre-tokenised corpus shards (written by tinybert-tf-prepare-corpus, e.g. for a TPU bucket).

`write_pretokenized_corpus` tokenises and packs once; `pretokenized_dataset` reads the shards back
into the same batches `corpus.corpus_dataset` makes from text, without tokenising again.
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from tinybert_tf.data.corpus import (
    CorpusError,
    document_sequences,
    documents_dataset,
    expand_patterns,
    finish_sequences,
    shuffled_files,
)
from tinybert_tf.data.corpus_scan import require_documents, scan_corpus

META_FILE = "corpus_meta.json"


def _shard_example(token_ids) -> bytes:
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=token_ids))
    return tf.train.Example(
        features=tf.train.Features(feature={"token_ids": feature})
    ).SerializeToString()


def write_pretokenized_corpus(
    patterns, output_dir, tokenizer, seq_len=128, num_shards=8, doc_format="line",
    progress=True, prefix="corpus",
):
    """Tokenises and packs a corpus into `num_shards` TFRecord shards -> CorpusStats.

    Each tf.train.Example holds one unpadded `token_ids` int64 list `[CLS] ... [SEP]`;
    sequences go round-robin to `{prefix}-00000-of-0000N.tfrecord`. `corpus_meta.json` records
    seq_len, pad id and the counts, which `pretokenized_dataset` checks. A corpus without
    documents is a CorpusError before anything is written.
    """
    if num_shards < 1:
        raise CorpusError(f"num_shards={num_shards} must be >= 1.")
    stats = require_documents(scan_corpus(patterns, doc_format), patterns)

    def flag_split(rows):  # each row, and on a document's first row whether it was split
        n = rows.nrows(out_type=tf.int32)
        return rows, tf.logical_and(tf.range(n) == 0, n > 1)

    docs = document_sequences(documents_dataset(patterns, doc_format), tokenizer, seq_len)
    seqs = docs.map(flag_split).unbatch()
    tf.io.gfile.makedirs(output_dir)
    names = [
        os.path.join(output_dir, f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord")
        for i in range(num_shards)
    ]
    _write_shards(seqs, names, stats, progress)
    meta = {
        "seq_len": seq_len, "pad_id": int(tokenizer.pad_token_id),
        "vocabulary_size": int(tokenizer.vocabulary_size()), "shards": [os.path.basename(n) for n in names],
        "stats": dataclasses.asdict(stats),
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return stats


def _write_shards(seqs, names, stats, progress):
    """Writes the `(row, split)` sequences round-robin to the TFRecord files `names`, counting
    sequences, tokens and split documents in `stats`."""
    writers = [tf.io.TFRecordWriter(n) for n in names]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="seq", desc="prepare_corpus")
    try:
        for batch, split in seqs.ragged_batch(256).prefetch(2).as_numpy_iterator():
            for row in batch:
                writers[stats.sequences % len(names)].write(_shard_example(row.tolist()))
                stats.sequences += 1
                stats.tokens += len(row) - 2
            stats.split_documents += int(split.sum())
            if bar is not None:
                bar.update(len(batch))
    finally:
        for w in writers:
            w.close()
        if bar is not None:
            bar.close()


def read_corpus_meta(shard_dir):
    """The `corpus_meta.json` dict of a shard directory, or None when absent."""
    path = os.path.join(shard_dir, META_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def pretokenized_dataset(
    patterns, seq_len=None, batch_size=32, pad_id=None, shuffle_buffer=10000, seed=0,
    repeat=True, drop_remainder=False, bucket_boundaries=None, deterministic=True,
):
    """Reads shards from `write_pretokenized_corpus` -> same batches as `corpus_dataset`.

    `seq_len`/`pad_id` default to the values in the shards' `corpus_meta.json`. Epoch e reads
    the shards in an order drawn from `(seed, e)`, as `corpus_dataset` does.
    """
    files = [f for f in expand_patterns(patterns) if not f.endswith(".json")]
    meta = read_corpus_meta(os.path.dirname(files[0])) or {}
    written = meta.get("seq_len")
    seq_len = seq_len or written
    if seq_len is None:
        raise CorpusError("seq_len unknown: pass seq_len= (no corpus_meta.json beside the shards).")
    if written and written > seq_len:
        raise CorpusError(f"Shards were packed to seq_len={written} > {seq_len}; re-run "
                          "tinybert-tf-prepare-corpus with that --seq_len.")
    pad_id = meta.get("pad_id", 0) if pad_id is None else pad_id
    spec = {"token_ids": tf.io.RaggedFeature(tf.int64)}

    def one_pass(s):
        ds = shuffled_files(files, s) if shuffle_buffer else tf.data.Dataset.from_tensor_slices(files)
        ds = ds.interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic,
        )
        return ds.map(lambda r: tf.cast(tf.io.parse_single_example(r, spec)["token_ids"],
                                        tf.int32))

    return finish_sequences(
        one_pass, seq_len, batch_size, pad_id=pad_id, shuffle_buffer=shuffle_buffer, seed=seed,
        repeat=repeat, drop_remainder=drop_remainder, bucket_boundaries=bucket_boundaries,
        deterministic=deterministic,
    )
