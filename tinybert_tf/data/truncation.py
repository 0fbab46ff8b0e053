"""How many texts of a split the packer cuts at `seq_len`: counted, never silent.

The packer (`packing.segment_packer`) truncates `[CLS] a [SEP] (b [SEP])` to `seq_len` tokens
(round robin over the segments); a token task's sentence is cut after its first `seq_len - 2`
word pieces. `count` tokenises a split's examples once more, the way the packer sees them, and
returns `{"texts": M, "cut": N, "longest": K}` (K in tokens, the special tokens included), which
`line` prints as "N of M texts cut at seq_len tokens (longest K)"; `count_splits` measures every
split of a run (small ones without a tf.data pipeline, as `tasks.packed_rows_in_memory` packs).
"""

from __future__ import annotations

import tensorflow as tf

from tinybert_tf.data import task_batches
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
    """{split: `count` record} of {split: examples dataset}. A sentence split of at most
    `task_batches.EAGER_ROWS` rows is measured batch by batch in this process; the others in
    one pipeline (one tokenizer graph for all of them, not one per split)."""
    measure = _lengths(spec, tokenizer)
    records = {name: {"texts": 0, "cut": 0, "longest": 0, "seq_len": int(seq_len)}
               for name in examples}
    piped = {}
    for name, ds in examples.items():
        if task_batches.in_process(ds, spec):
            for batch in ds.batch(task_batches.PACK_BATCH):
                _add(records[name], measure(batch).numpy(), seq_len)
        else:
            piped[name] = ds
    if piped:
        _count_piped(piped, spec, measure, records, seq_len)
    return records


def _count_piped(examples, spec, measure, records, seq_len):
    """Add {split: examples} to `records` through one tf.data pipeline of every split."""
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
        lengths = together.batch(task_batches.PACK_BATCH).map(
            lambda ex, k: (measure(ex), k), num_parallel_calls=tf.data.AUTOTUNE)
    for batch, ks in lengths.as_numpy_iterator():
        for k in set(ks.tolist()):
            _add(records[names[k]], batch[ks == k], seq_len)


def _add(record, lengths, seq_len):
    """Count a batch of packed lengths (before truncation) into a split's record."""
    record["texts"] += int(lengths.size)
    record["cut"] += int((lengths > seq_len).sum())
    record["longest"] = max(record["longest"], int(lengths.max(initial=0)))


def line(split, record):
    """The console line of a split's `count` record."""
    return (f"{split}: {record['cut']} of {record['texts']} texts cut at {record['seq_len']} "
            f"tokens (longest {record['longest']})")
