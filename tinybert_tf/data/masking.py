"""Masked-LM inputs in keras-hub's MaskedLM convention, seeded and vectorised per batch.

Why not `keras_hub.layers.MaskedLMMaskGenerator`: it draws from TensorFlow Text's
`RandomItemSelector`, which uses stateful, unseeded `tf.random` ops, so a resumed run cannot
reproduce the masks, and it has no whole-word mode. Here every batch is masked with stateless
random ops keyed on `(seed, batch_index)`, so masks are a pure function of the seed and position
in the stream. Selection otherwise follows BERT/keras-hub: `mask_rate` of the real tokens
(never [CLS]/[SEP]/[PAD]), capped at `max_predictions`, replaced 80/10/10 by
[MASK]/random id/unchanged.
"""

from __future__ import annotations

import math

import tensorflow as tf


def default_max_predictions(seq_len, mask_rate=0.15):
    """BERT's usual cap: ceil(seq_len * mask_rate), e.g. 20 for 128 tokens."""
    return max(1, math.ceil(seq_len * mask_rate))


def continuation_table(tokenizer):
    """Bool `[vocab_size]` tensor: True for word pieces that continue a word (`##...`)."""
    vocab = tokenizer.get_vocabulary()
    return tf.constant([t.startswith("##") for t in vocab], tf.bool)


def _special_ids(tokenizer):
    ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    return sorted({int(i) for i in ids if i is not None})


def mask_batch(
    x,
    seed,
    *,
    vocab_size,
    mask_token_id,
    special_ids,
    max_predictions,
    mask_rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    continuation=None,
):
    """Masks one batch `x` (int32 dict, `[B, L]`) -> `(x_masked, y, sample_weight)`.

    `x_masked` adds `mask_positions` `[B, P]` (P = max_predictions, unused slots 0);
    `y` int32 `[B, P]` are the original ids there (0 in unused slots) and `sample_weight`
    float32 `[B, P]` is 1 for real predictions. `seed` is an int32/int64 `[2]` stateless seed.
    `continuation` (bool `[vocab]`, from `continuation_table`) turns on whole-word masking:
    all pieces of a chosen word are masked together, and words that would overflow the
    budget are left whole instead of being split.
    """
    ids = tf.cast(x["token_ids"], tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    special = tf.reduce_any(ids[..., None] == tf.constant(special_ids, tf.int32), axis=-1)
    selectable = tf.cast(x["padding_mask"], tf.bool) & ~special
    chosen = _choose_words(ids, selectable, seeds[0], max_predictions, mask_rate, continuation)
    mask_positions, labels, weight = _prediction_slots(ids, chosen, max_predictions)
    out = dict(x)
    out["token_ids"] = _replace_chosen(ids, chosen, seeds[1:], vocab_size, mask_token_id,
                                       mask_token_rate, random_token_rate)
    out["mask_positions"] = mask_positions
    return out, labels, tf.cast(weight, tf.float32)


def _choose_words(ids, selectable, seed, max_predictions, mask_rate, continuation):
    """Bool `[B, L]`: the tokens to predict, whole words (with `continuation`) in a random
    order, `mask_rate` of the selectable tokens (at least 1, at most `max_predictions`)."""
    batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
    if continuation is not None:
        is_cont = tf.gather(continuation, ids) & selectable
        prev_selectable = tf.pad(selectable[:, :-1], [[0, 0], [1, 0]])
        word_start = selectable & (~is_cont | ~prev_selectable)
    else:
        word_start = selectable
    # Word index of every selectable token; other tokens share the dummy word `length`.
    word_id = tf.cumsum(tf.cast(word_start, tf.int32), axis=1) - 1
    word_id = tf.where(selectable, word_id, length)
    # One random score per word; sorting by it (stable, so each word stays contiguous)
    # gives a random order of words, then a word is taken if it ends within the budget.
    word_score = tf.random.stateless_uniform([batch, length + 1], seed)
    score = tf.where(selectable, tf.gather(word_score, word_id, batch_dims=1), 2.0)
    order = tf.argsort(score, axis=1, stable=True)
    rank = tf.argsort(order, axis=1, stable=True)  # inverse permutation
    segments = tf.range(batch)[:, None] * (length + 1) + word_id
    word_end = tf.math.unsorted_segment_max(rank + 1, segments, batch * (length + 1))
    token_end = tf.gather(word_end, segments)
    n_selectable = tf.reduce_sum(tf.cast(selectable, tf.float32), axis=1)
    budget = tf.maximum(1, tf.cast(tf.round(n_selectable * mask_rate), tf.int32))
    budget = tf.minimum(budget, max_predictions)
    return selectable & (token_end <= budget[:, None])


def _prediction_slots(ids, chosen, max_predictions):
    """`(mask_positions, labels, weight)` `[B, P]`: the chosen positions in increasing order,
    their original ids and True for real slots (unused slots: position 0, label 0)."""
    batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
    positions = tf.range(length)[None, :] + tf.zeros_like(ids)
    key = tf.where(chosen, positions, length + positions)
    key = tf.concat([key, tf.fill([batch, max_predictions], 2 * length)], axis=1)
    key = tf.sort(key, axis=1)[:, :max_predictions]
    weight = key < length
    mask_positions = tf.where(weight, key, 0)
    labels = tf.where(weight, tf.gather(ids, mask_positions, batch_dims=1), 0)
    return mask_positions, labels, weight


def _replace_chosen(ids, chosen, seeds, vocab_size, mask_token_id, mask_token_rate,
                    random_token_rate):
    """`ids` with the chosen tokens replaced: [MASK] with `mask_token_rate`, a random id with
    `random_token_rate`, else unchanged (`seeds`: two stateless seeds)."""
    shape = tf.shape(ids)
    draw = tf.random.stateless_uniform(shape, seeds[0])
    random_ids = tf.random.stateless_uniform(
        shape, seeds[1], minval=0, maxval=vocab_size, dtype=tf.int32
    )
    masked = tf.where(chosen & (draw < mask_token_rate), mask_token_id, ids)
    use_random = chosen & (draw >= mask_token_rate) & (draw < mask_token_rate + random_token_rate)
    return tf.where(use_random, random_ids, masked)


def mask_dataset(
    ds,
    tokenizer,
    mask_rate=0.15,
    max_predictions=None,
    whole_word=False,
    seed=0,
    mask_token_rate=0.8,
    random_token_rate=0.1,
):
    """Maps a batched dataset of keras-hub input dicts to `(x, y, sample_weight)` MLM batches.

    Batch `i` is masked with stateless seed `(seed, i)`: the same seed and the same input order
    give the same masks, e.g. after resuming. `max_predictions` defaults to
    ceil(seq_len * mask_rate) and must be given when the length axis is not static.
    """
    if max_predictions is None:
        length = ds.element_spec["token_ids"].shape[-1]
        if length is None:
            raise ValueError("Sequence length is not static; pass max_predictions= explicitly.")
        max_predictions = default_max_predictions(length, mask_rate)
    if not 0.0 < mask_rate <= 1.0:
        raise ValueError(f"mask_rate={mask_rate} must be in (0, 1].")
    if mask_token_rate + random_token_rate > 1.0:
        raise ValueError("mask_token_rate + random_token_rate must be <= 1.")
    kwargs = dict(
        vocab_size=int(tokenizer.vocabulary_size()),
        mask_token_id=int(tokenizer.mask_token_id),
        special_ids=_special_ids(tokenizer),
        max_predictions=int(max_predictions),
        mask_rate=mask_rate,
        mask_token_rate=mask_token_rate,
        random_token_rate=random_token_rate,
        continuation=continuation_table(tokenizer) if whole_word else None,
    )

    def fn(index, x):
        return mask_batch(x, tf.stack([tf.cast(seed, tf.int64), index]), **kwargs)

    return ds.enumerate().map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
