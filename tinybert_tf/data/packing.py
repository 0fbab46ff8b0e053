"""The one packer that turns tokenised text segments into keras-hub encoder inputs.

Training data (`data.tasks`), the exported text signatures (`export_serving`) and the export
parity checks (`export_checks`) must pack identically, so they all take it from here.
"""

from __future__ import annotations


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
