"""Examples -> batches of keras-hub encoder inputs: seeded epochs, packing, and length buckets.

`x = {"token_ids","segment_ids","padding_mask"}` int32 `[B, S]`; S is `seq_len`, or with length
buckets the smallest bucket that holds the batch's longest row (examples of one bucket are
batched together, so little of a batch is padding).
"""

from __future__ import annotations

import weakref

import tensorflow as tf

from tinybert_tf.data.packing import segment_packer, tokenize_fn
from tinybert_tf.data.task_spec import IGNORE_LABEL

WEIGHT = "__sample_weight__"  # per-row sample weight carried by transfer-set rows
PACK_BATCH = 256  # rows tokenised and packed per call
# Splits up to this many rows pack (and are measured) in this process, batch by batch; larger
# ones through a tf.data map in parallel (a pipeline's set-up, ~0.3 s, is then a small part).
EAGER_ROWS = 4096


def _inputs(token_ids, segment_ids, pad_id):
    token_ids = tf.cast(token_ids, tf.int32)
    return {
        "token_ids": token_ids,
        "segment_ids": tf.cast(segment_ids, tf.int32),
        "padding_mask": tf.cast(token_ids != pad_id, tf.int32),
    }


def in_process(ds, spec):
    """Whether a split is packed (and measured) here batch by batch: a sentence task's split of
    a known size of at most EAGER_ROWS rows; others go through a tf.data map."""
    return spec.kind != "token_classification" and 0 <= int(ds.cardinality()) <= EAGER_ROWS


_PACKERS = weakref.WeakKeyDictionary()  # tokenizer -> {packing: its `pack_fn`}


def pack_fn(spec, tokenizer, seq_len, label_key="label"):
    """A batch of example dicts ({text keys, `label_key`[, weight]}, `[B]` each) -> `(x, y[,
    sample_weight])` packed to seq_len, as one `tf.function` per tokenizer and packing: every
    split of a run (its tf.data map or `packed_in_memory`) calls the same trace. Holds the
    tokenizer weakly (through `tokenize_fn`)."""
    key = (int(seq_len), tuple(spec.text_keys), spec.is_pair, spec.kind, label_key)
    cache = _PACKERS.setdefault(tokenizer, {})
    if key not in cache:
        packer, tokenize = segment_packer(tokenizer, seq_len), tokenize_fn(tokenizer)
        y_dtype = tf.float32 if spec.kind == "regression" else tf.int32
        keys, pair, pad_id = tuple(spec.text_keys), spec.is_pair, tokenizer.pad_token_id

        def pack(ex):
            segments = tuple(tokenize(ex[k]) for k in keys)
            token_ids, segment_ids = packer(segments if pair else segments[0])
            out = _inputs(token_ids, segment_ids, pad_id), tf.cast(ex[label_key], y_dtype)
            return (*out, ex[WEIGHT]) if WEIGHT in ex else out

        cache[key] = tf.function(pack)
    return cache[key]


def sentence_examples(ds, spec, tokenizer, seq_len, label_key="label"):
    """{text keys, `label_key`[, weight]} rows -> `(x, y[, sample_weight])` rows packed to
    seq_len; tokenises and packs 256 rows at a time (TF Text is faster on batches)."""
    batches, pack = _batched(ds, spec, tokenizer, seq_len, label_key)
    return batches.map(pack, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def packed_in_memory(ds, spec, tokenizer, seq_len, label_key="label"):
    """`sentence_examples` read into memory without a tf.data map: its pack function called on
    each batch of 256 rows here, the batches concatenated (the same rows, bit for bit; a split of
    a few thousand rows packs in milliseconds instead of paying a pipeline's set-up)."""
    batches, pack = _batched(ds, spec, tokenizer, seq_len, label_key)
    parts = [pack(batch) for batch in batches]
    if not parts:
        return sentence_examples(ds, spec, tokenizer, seq_len, label_key)
    whole = tf.nest.map_structure(lambda *t: tf.concat(t, 0), *parts)
    return tf.data.Dataset.from_tensor_slices(whole)


def _batched(ds, spec, tokenizer, seq_len, label_key):
    """`ds` in batches of PACK_BATCH rows and `pack_fn`'s trace for them."""
    batches = ds.batch(PACK_BATCH)
    return batches, pack_fn(spec, tokenizer, seq_len, label_key).get_concrete_function(
        batches.element_spec)


def bucket_lengths(buckets, seq_len):
    """The bucket lengths in use: those below `seq_len`, then `seq_len` itself (sorted)."""
    return tuple(sorted({int(b) for b in buckets if 0 < int(b) < seq_len} | {int(seq_len)}))


def batch_rows(ds, batch_size, drop_remainder, buckets=None):
    """`(x, y[, w])` rows packed to `seq_len` -> batches; with `buckets` (sorted lengths ending
    at seq_len), rows go to the smallest bucket that holds them, each batch holds rows of one
    bucket and is cut to the smallest bucket length that holds its longest row, so shapes stay
    few (one per bucket). Row order within a bucket is kept; every row lands in one batch
    (remainders are emitted at the end of the pass unless `drop_remainder`)."""
    if not buckets or len(buckets) == 1:
        return ds.batch(batch_size, drop_remainder=drop_remainder)
    lengths = tf.constant(buckets, tf.int32)

    def length(x, *_):
        return tf.reduce_sum(x["padding_mask"])

    ds = ds.bucket_by_sequence_length(
        length, bucket_boundaries=[b + 1 for b in buckets[:-1]],
        bucket_batch_sizes=[batch_size] * len(buckets), drop_remainder=drop_remainder)

    def cut(x, *rest):
        longest = tf.reduce_max(tf.reduce_sum(x["padding_mask"], axis=1))
        keep = tf.reduce_min(tf.boolean_mask(lengths, lengths >= longest))
        seq_keys = ("token_ids", "segment_ids", "padding_mask")
        x = {k: v[:, :keep] if k in seq_keys else v for k, v in x.items()}
        rest = tuple(r[:, :keep] if len(r.shape) == 2 else r for r in rest)  # NER y, w [B, S]
        return (x, *rest)

    return ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)


def ner_example(tokens, tags, tokenizer, seq_len):
    """One sentence (words `[W]`, tag ids `[W]`) -> (x, y, sample_weight), first-piece labels."""
    n = tf.minimum(tf.size(tokens), tf.size(tags))  # TFDS mock data may disagree in length
    pieces = tokenize_fn(tokenizer)(tokens[:n])
    # A word that tokenises to nothing (e.g. only control characters) becomes [UNK] so its
    # label is not lost.
    empty = tf.cast(tf.equal(pieces.row_lengths(), 0), tf.int64)
    unk = tf.fill([tf.reduce_sum(empty)], tf.cast(tokenizer.token_to_id("[UNK]"), pieces.dtype))
    pieces = tf.concat([pieces, tf.RaggedTensor.from_row_lengths(unk, empty)], axis=1)
    ids = tf.cast(pieces.flat_values, tf.int32)
    first = tf.equal(tf.range(tf.size(ids), dtype=tf.int64) - tf.gather(
        pieces.row_starts(), pieces.value_rowids()), 0)
    labels = tf.where(first, tf.cast(tf.gather(tags[:n], pieces.value_rowids()), tf.int32),
                      IGNORE_LABEL)
    token_ids, segment_ids = segment_packer(tokenizer, seq_len)(ids)
    x = _inputs(token_ids, segment_ids, tokenizer.pad_token_id)
    body = labels[: seq_len - 2]
    y = tf.concat([[IGNORE_LABEL], body, [IGNORE_LABEL]], 0)
    y = tf.pad(y, [[0, seq_len - tf.size(y)]], constant_values=IGNORE_LABEL)
    y = tf.ensure_shape(y, [seq_len])
    return x, y, tf.cast(y != IGNORE_LABEL, tf.float32)


def seeded_epochs(ds, shuffle, seed, repeat, batches=lambda d: d):
    """`ds` (finite) in epochs: epoch e is a full permutation drawn from the seed (seed, e),
    turned into batches by `batches(dataset) -> dataset` epoch by epoch (a batch never spans
    two epochs).

    The order is a function of the seed and the epoch alone, not of how many iterators were made
    before: Keras' TF `fit` peeks a batch and then starts a new iterator, which advances a
    `reshuffle_each_iteration` shuffle's seed, so a resumed run (whose iterator skipped past an
    epoch end) would see other batches than an uninterrupted one. The split is held in memory
    (task splits are small: GLUE's largest, MNLI, is ~400 k sentence pairs).
    """
    if not shuffle and not repeat:
        return batches(ds)
    columns = unfused(ds.ragged_batch(2**31 - 1)).get_single_element() if shuffle else None
    if columns is not None:
        n = tf.shape(tf.nest.flatten(columns)[0])[0]

    def epoch(e):
        if not shuffle:
            return batches(ds)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return batches(tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: tf.nest.map_structure(lambda col: tf.gather(col, i), columns)))

    if not repeat:
        return epoch(tf.constant(0, tf.int64))
    return tf.data.Dataset.counter().flat_map(epoch)


def unfused(ds):
    """`ds` (one batch of every row, `batch(2**31 - 1)`) without tf.data's map-and-batch
    fusion, which would allocate all 2**31 - 1 rows of it up front."""
    options = tf.data.Options()
    options.experimental_optimization.map_and_batch_fusion = False
    return ds.with_options(options)


def count_batches(ds):
    """The batches of a finite dataset: its cardinality where tf.data knows it, else one pass."""
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda acc, _: acc + 1))
