"""The stall check: one warning when the loss stays flat over the first logs of a run (a model
that trains nothing: learning rate ~0, frozen or low-precision weights), none when it learns."""

import numpy as np
import pytest
import tensorflow as tf

from tinybert_tf.launch import train


def _data():
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(16).repeat()


def _model(lr):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def test_stalled_is_a_relative_band():
    assert train.stalled([2.79, 2.80, 2.78, 2.79], 0.01)
    assert not train.stalled([2.79, 2.60, 2.40], 0.01)
    assert train.stalled([0.0, 0.0], 0.01)


@pytest.mark.parametrize("lr,intervals,warned", [(0.0, 4, True), (0.05, 4, False),
                                                  (0.0, 0, False)])
def test_a_run_that_trains_nothing_is_called_out(tmp_path, capsys, lr, intervals, warned):
    model = _model(lr)
    train.run(model, _data(), str(tmp_path), 40, log_every=5, checkpoint_every=40,
              stall_intervals=intervals)
    out = capsys.readouterr().out
    assert ("Warning: the loss has not moved over the first 4 logs (steps 5-20" in out) == warned
    assert out.count("Warning: the loss has not moved") <= 1
