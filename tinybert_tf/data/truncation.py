"""How many texts of a split the packer cuts at `seq_len`: counted, never silent.

The packer (`packing.segment_packer`) truncates `[CLS] a [SEP] (b [SEP])` to `seq_len` tokens
(round robin over the segments); a token task's sentence is cut after its first `seq_len - 2`
word pieces. `count` tokenises a split's examples once more, the way the packer sees them, and
returns `{"texts": M, "cut": N, "longest": K}` (K in tokens, the special tokens included), which
`line` prints as "N of M texts cut at seq_len tokens (longest K)".
"""

from __future__ import annotations

import tensorflow as tf


def _lengths(spec, tokenizer):
    """examples batch -> `[B]` packed lengths before truncation (special tokens included)."""
    specials = 3 if spec.is_pair else 2

    def sentence(ex):
        total = 0
        for key in spec.text_keys:
            pieces = tokenizer(ex[key])
            pieces = pieces if isinstance(pieces, tf.RaggedTensor) else \
                tf.RaggedTensor.from_tensor(pieces)
            total += tf.cast(pieces.row_lengths(), tf.int32)
        return total + specials

    def words(ex):  # one example: words [W] -> word pieces of every word
        pieces = tokenizer(ex[spec.text_keys[0]])
        pieces = pieces if isinstance(pieces, tf.RaggedTensor) else \
            tf.RaggedTensor.from_tensor(pieces)
        return tf.cast(tf.size(pieces.flat_values), tf.int32) + 2

    return words if spec.kind == "token_classification" else sentence


def count(examples, spec, tokenizer, seq_len):
    """{"texts", "cut", "longest"} of an examples dataset (`spec`'s text keys) at `seq_len`."""
    measure = _lengths(spec, tokenizer)
    if spec.kind == "token_classification":
        lengths = examples.map(measure, num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    else:
        lengths = examples.batch(256).map(measure, num_parallel_calls=tf.data.AUTOTUNE)
    texts = cut = longest = 0
    for batch in lengths.as_numpy_iterator():
        texts += int(batch.size)
        cut += int((batch > seq_len).sum())
        longest = max(longest, int(batch.max(initial=0)))
    return {"texts": texts, "cut": cut, "longest": longest, "seq_len": int(seq_len)}


def line(split, record):
    """The console line of a split's `count` record."""
    return (f"{split}: {record['cut']} of {record['texts']} texts cut at {record['seq_len']} "
            f"tokens (longest {record['longest']})")
