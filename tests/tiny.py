"""Tiny models and inputs for tests: 2 layers, hidden 32, a word-list vocabulary written here;
the steps of a JAX run's orbax checkpoints; a launch killed once its checkpoint is written."""

import os

import keras_hub
import numpy as np

WORDS = (
    "the a of and to in is it that for on with as was he she they we you this are be by at "
    "from or an have not but what all were when there can more if no out so said one about up "
    "model student teacher layer attention hidden small fast distil text data train test"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ing", "##ed", "##er"]


def tokenizer():
    return keras_hub.tokenizers.BertTokenizer(vocabulary=list(VOCAB), lowercase=True)


def backbone(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64, seed=0, dtype=None,
             max_sequence_length=16, dropout=0.1, vocabulary_size=None):
    import keras

    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size or len(VOCAB),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        dropout=dropout,
        max_sequence_length=max_sequence_length,
        dtype=dtype,
    )


def classifier(encoder, num_classes=3):
    """A keras-hub text classifier (no preprocessor) on the backbone `encoder`."""
    return keras_hub.models.BertTextClassifier(encoder, num_classes=num_classes, preprocessor=None)


def inputs(batch=4, seq=12, seed=0, pad_from=None):
    """Random token ids with trailing padding: row b has `seq - b` real tokens (at least 3)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(VOCAB), size=(batch, seq)).astype("int32")
    mask = np.zeros((batch, seq), "int32")
    for b in range(batch):
        n = max(3, seq - b * 2) if pad_from is None else pad_from
        mask[b, :n] = 1
    ids[:, 0] = 2
    ids = ids * mask
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}


def write_teacher(path, num_layers=4, max_sequence_length=32, num_classes=None, seed=0):
    """A tiny teacher preset dir (backbone, or a classifier with `num_classes`) + tokenizer."""
    model = backbone(num_layers=num_layers, max_sequence_length=max_sequence_length, seed=seed)
    if num_classes is not None:
        model = classifier(model, num_classes)
    model.save_to_preset(str(path))
    tokenizer().save_to_preset(str(path))
    return str(path)


def write_corpus(path, docs=200, seed=0):
    """One document per line of vocabulary words, 5-40 words each."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for _ in range(docs):
            words = rng.choice(WORDS, size=rng.integers(5, 40))
            f.write(" ".join(words) + ".\n")
    return str(path)


def write_task(path, n, seed):
    """A TSV task: label 'pos' iff the sentence contains 'teacher' (learnable from tokens alone)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i in range(n):
            words = list(rng.choice(WORDS[:30], size=rng.integers(4, 12)))
            if i % 2:
                words.insert(int(rng.integers(0, len(words))), "teacher")
            f.write(" ".join(words) + "\t" + ("pos" if i % 2 else "neg") + "\n")
    return str(path)


def dataset(batch=4, steps=1, seed=0, extra=None):
    """A tf.data pipeline of `steps` batches of `inputs(...)`; `extra(x)` adds (y, ...)."""
    import tensorflow as tf

    xs = [inputs(batch=batch, seed=seed + i) for i in range(steps)]
    x = {k: np.concatenate([b[k] for b in xs]) for k in xs[0]}
    if extra is not None:
        return tf.data.Dataset.from_tensor_slices((x, *extra(x))).batch(batch)
    return tf.data.Dataset.from_tensor_slices(x).batch(batch)


def dense_model(seed=0):
    """A small compiled Keras regressor with dropout (seed state checkpointed): the training-loop
    tests' model (signals, checkpoint fallback)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def orbax_steps(checkpoints):
    """The steps of the orbax checkpoints in `checkpoints` (a JAX run's), oldest first; [] when
    the directory does not exist yet."""
    if not os.path.isdir(checkpoints):
        return []
    return sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())


def sigkill_once_written(proc, path, timeout=600):
    """SIGKILL `proc` as soon as `path` exists (a checkpoint's state file), or at `timeout`
    seconds, or not at all when it has exited; returns its exit code."""
    import signal
    import time

    deadline = time.time() + timeout
    while not os.path.exists(path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait()
