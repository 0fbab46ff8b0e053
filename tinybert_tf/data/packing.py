"""The one packer that turns tokenised text segments into keras-hub encoder inputs.

Training data (`data.tasks`), the exported text signatures (`export_serving`) and the export
parity checks (`export_checks`) must pack identically, so they all take it from here. The data
pipelines tokenise through `tokenize_fn`: one traced tokenizer graph per tokenizer.
"""

from __future__ import annotations

import weakref

_TRACED = weakref.WeakKeyDictionary()  # tokenizer -> its `tokenize_fn`


def segment_packer(tokenizer, seq_len):
    """`[CLS] a [SEP] (b [SEP])` packed to `seq_len`, round-robin truncation, `[PAD]` after."""
    import keras_hub

    return keras_hub.layers.MultiSegmentPacker(
        sequence_length=seq_len,
        start_value=tokenizer.start_token_id,
        end_value=tokenizer.end_token_id,
        pad_value=tokenizer.pad_token_id,
        truncate="round_robin",
    )


def tokenize_fn(tokenizer):
    """`tokenizer` on a `[None]` string batch as one `tf.function`, the same one for every call
    with this tokenizer: every pipeline of a run (each split, the truncation counts, the corpus
    scan) calls its one trace instead of tracing the tokenizer's graph again (a few tenths of a
    second each). The ids are the tokenizer's own (a RaggedTensor `[batch, None]` int32)."""
    import tensorflow as tf

    fn = _TRACED.get(tokenizer)
    if fn is None:
        ref = weakref.ref(tokenizer)  # the cache must not keep the tokenizer alive

        def tokenize(texts):
            pieces = ref()(texts)
            return pieces if isinstance(pieces, tf.RaggedTensor) else \
                tf.RaggedTensor.from_tensor(pieces)

        fn = tf.function(tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
        _TRACED[tokenizer] = fn
    return fn
