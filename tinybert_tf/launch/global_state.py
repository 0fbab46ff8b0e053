"""What a run changes in the process, put back when it ends: `preserved()`.

A run sets the mixed-precision policy, the seeds (Python's, NumPy's, TensorFlow's and Keras'),
op determinism, TensorFlow's auto-clustering (jit_compile "fusible") and, on JAX, the Keras
distribution. From the command line the process ends with
the run; a notebook or a script calling `tinybert_tf.finetune(...)` twice keeps going, so each run
leaves these as it found them. (TensorFlow strategies are cached per device set for the process,
`strategy.tf_strategy`: a second MirroredStrategy over the same devices would clash with the
first's collective keys; no strategy scope stays entered.)
"""

from __future__ import annotations

import contextlib
import random

import keras
import numpy as np


def _tf_state():
    import tensorflow as tf
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    return (context.global_seed(), tf_config.is_op_determinism_enabled(),
            tf.random.get_global_generator().state.numpy().copy(), tf.config.optimizer.get_jit())


def _restore_tf(state):
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    seed, deterministic, generator, jit = state
    tf.random.set_seed(seed)
    tf.config.optimizer.set_jit(jit or False)
    if not deterministic and tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()
    tf.random.get_global_generator().state.assign(generator)


def _keras_seed():
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("global_seed_generator")


def _restore_keras_seed(generator):
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("global_seed_generator", generator)


@contextlib.contextmanager
def preserved():
    """Run the block, then restore the dtype policy, the seeds, op determinism, auto-clustering
    and the Keras distribution (JAX) to what they were before it, also when it raised."""
    policy = keras.mixed_precision.global_policy()
    py_state, np_state = random.getstate(), np.random.get_state()
    tf_state, keras_seed = _tf_state(), _keras_seed()
    distribution = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(py_state)
        np.random.set_state(np_state)
        _restore_tf(tf_state)
        _restore_keras_seed(keras_seed)
        if keras.backend.backend() == "jax":
            keras.distribution.set_distribution(distribution)
