"""How many texts of a split the packer cuts at `seq_len`: counted, never silent.

The packer (`packing.segment_packer`) truncates `[CLS] a [SEP] (b [SEP])` to `seq_len` tokens
(round robin over the segments); a token task's sentence is cut after its first `seq_len - 2`
word pieces. `count` tokenises a split's examples once more, the way the packer sees them, and
returns `{"texts": M, "cut": N, "longest": K}` (K in tokens, the special tokens included), which
`line` prints as "N of M texts cut at seq_len tokens (longest K)"; `count_splits` measures every
split of a run in one pipeline.
"""

from __future__ import annotations

import tensorflow as tf

from tinybert_tf.data.packing import tokenize_fn


def _lengths(spec, tokenizer):
    """examples batch -> `[B]` packed lengths before truncation (special tokens included)."""
    specials = 3 if spec.is_pair else 2
    tokenize = tokenize_fn(tokenizer)

    def sentence(ex):
        total = 0
        for key in spec.text_keys:
            pieces = tokenize(ex[key])
            total += tf.cast(pieces.row_lengths(), tf.int32)
        return total + specials

    def words(ex):  # one example: words [W] -> word pieces of every word
        pieces = tokenize(ex[spec.text_keys[0]])
        return tf.cast(tf.size(pieces.flat_values), tf.int32) + 2

    return words if spec.kind == "token_classification" else sentence


def count(examples, spec, tokenizer, seq_len):
    """{"texts", "cut", "longest"} of an examples dataset (`spec`'s text keys) at `seq_len`."""
    return count_splits({"split": examples}, spec, tokenizer, seq_len)["split"]


def count_splits(examples, spec, tokenizer, seq_len):
    """{split: `count` record} of {split: examples dataset}, the splits measured in one pipeline
    (one tokenizer graph for all of them, not one per split)."""
    measure = _lengths(spec, tokenizer)
    names = list(examples)

    def tagged(k):
        return examples[names[k]].map(lambda ex: ({key: ex[key] for key in spec.text_keys}, k))

    together = tagged(0)
    for k in range(1, len(names)):
        together = together.concatenate(tagged(k))
    if spec.kind == "token_classification":
        lengths = together.map(lambda ex, k: (measure(ex), k),
                               num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
    else:
        lengths = together.batch(256).map(lambda ex, k: (measure(ex), k),
                                          num_parallel_calls=tf.data.AUTOTUNE)
    records = {name: {"texts": 0, "cut": 0, "longest": 0, "seq_len": int(seq_len)}
               for name in names}
    for batch, ks in lengths.as_numpy_iterator():
        for k in set(ks.tolist()):
            part, record = batch[ks == k], records[names[k]]
            record["texts"] += int(part.size)
            record["cut"] += int((part > seq_len).sum())
            record["longest"] = max(record["longest"], int(part.max(initial=0)))
    return records


def line(split, record):
    """The console line of a split's `count` record."""
    return (f"{split}: {record['cut']} of {record['texts']} texts cut at {record['seq_len']} "
            f"tokens (longest {record['longest']})")
