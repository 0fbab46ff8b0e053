"""The label names a task preset carries: `labels.txt` beside it (what the package writes for
every task model) or, for a Hugging Face directory, its config's `id2label`."""

from __future__ import annotations

import os

LABELS_FILE = "labels.txt"  # a task preset's label names, one per line, in class order


def write_preset_labels(preset_dir, labels):
    """The label names beside a task preset the package writes (`LABELS_FILE`)."""
    import tensorflow as tf

    if labels:
        with tf.io.gfile.GFile(os.path.join(preset_dir, LABELS_FILE), "w") as f:
            f.write("".join(f"{label}\n" for label in labels))


def preset_labels(preset_dir):
    """A task preset's label names: its `LABELS_FILE`, or a Hugging Face dir's `id2label` (None
    for transformers' placeholders `LABEL_0`, `LABEL_1`, ...: no names given); None without."""
    import tensorflow as tf

    from tinybert_tf.export import hf_load

    preset_dir = os.fspath(preset_dir)
    if hf_load.is_hf_dir(preset_dir):
        names = hf_load.label_names(preset_dir)
        return None if names == [f"LABEL_{i}" for i in range(len(names or ()))] else names
    path = os.path.join(preset_dir, LABELS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f]
