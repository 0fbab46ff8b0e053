"""Teacher logits kept on disk between runs (`--config.prediction.logits_cache=DIR`).

The prediction step runs each frozen teacher once over the training data (`teacher_logits.
cached_logits_data`). Runs that share a teacher and training data (a temperature sweep, seeds,
students of several sizes) would compute the same logits again; with a cache directory each
teacher's logits are stored once and read back by the next run. The key holds everything the
logits depend on: the bytes of the teacher's preset files, the class order it is read in, the
teacher dtype, the precision policy and XLA setting, the number of replicas, the exact input
batches (token ids, masks and their order: data, tokenizer, `seq_len`, buckets and batch size
all show there), the Keras backend and the Keras and TensorFlow versions. A run that differs in
any of them gets another key, never another run's logits.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from tinybert_tf.launch import distribution

_CHUNK = 1 << 22


def batches_digest(batches):
    """sha256 of a sequence of input batches (dicts of arrays): keys, dtypes, shapes, bytes."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            value = np.ascontiguousarray(np.asarray(batch[name]))
            digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def preset_digest(path):
    """sha256 of every file in the preset directory `path` (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tf.io.gfile.listdir(path)):
        full = os.path.join(path, name)
        if tf.io.gfile.isdir(full):
            continue
        digest.update(f"{name};".encode())
        with tf.io.gfile.GFile(full, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def key(teacher_dir, inputs_digest, **settings):
    """The cache key of one teacher's logits over the inputs of `inputs_digest` under
    `settings` (JSON-serialisable: class order, teacher dtype, policy, replicas)."""
    import keras

    record = {"teacher": preset_digest(teacher_dir), "inputs": inputs_digest,
              "keras": keras.__version__, "backend": keras.backend.backend(),
              "tensorflow": tf.__version__, **settings}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _path(cache_dir, cache_key):
    return os.path.join(cache_dir, f"logits-{cache_key}.npy")


def load(cache_dir, cache_key):
    """The stored logits of `cache_key`, or None."""
    path = _path(cache_dir, cache_key)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        return np.load(f, allow_pickle=False)


def store(cache_dir, cache_key, logits):
    """Writes `logits` under `cache_key` (the chief only; a temporary file renamed into place,
    so a reader never sees half a file)."""
    if not distribution.is_chief():
        return
    tf.io.gfile.makedirs(cache_dir)
    path = _path(cache_dir, cache_key)
    partial = f"{path}.partial-{os.getpid()}"
    with tf.io.gfile.GFile(partial, "wb") as f:
        np.save(f, np.asarray(logits), allow_pickle=False)
    tf.io.gfile.rename(partial, path, overwrite=True)
