"""Optimisers: schedule, no decay on LayerNorm/bias, dense updates for repeated embedding rows."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tinybert_tf.distill import optim


def test_warmup_linear_decay_schedule():
    s = optim.WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
    got = [float(s(step)) for step in (0, 5, 10, 55, 100, 120)]
    np.testing.assert_allclose(got, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    no_warmup = optim.WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=0)
    np.testing.assert_allclose([float(no_warmup(0)), float(no_warmup(50))], [1e-3, 5e-4], atol=1e-9)


def test_no_weight_decay_on_layernorm_and_bias():
    dense = keras.layers.Dense(3)
    norm = keras.layers.LayerNormalization()
    dense.build((None, 3))
    norm.build((None, 3))
    variables = dense.trainable_variables + norm.trainable_variables
    before = [v.numpy().copy() for v in variables]
    opt = optim.make_optimizer("adamw", 1e-2, total_steps=10, warmup_fraction=0.0,
                               weight_decay=0.5, clipnorm=0)
    opt.apply([tf.zeros_like(v) for v in variables], variables)  # zero grads: only decay moves
    moved = {v.path: not np.allclose(v.numpy(), b) for v, b in zip(variables, before)}
    assert [p for p, m in moved.items() if m] == [dense.kernel.path], moved


def test_repeated_tokens_get_the_dense_adam_update():
    # Token 1 occurs three times: Adam's second moment must see (sum g)^2, not sum(g^2).
    emb = keras.layers.Embedding(5, 2)
    emb.build((None,))
    ids = tf.constant([1, 1, 1, 2])
    upstream = tf.constant([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [1.0, 1.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(emb(ids) * upstream)
    (grad,) = tape.gradient(loss, emb.trainable_variables)
    assert isinstance(grad, tf.IndexedSlices)  # the case Keras gets wrong
    opt = optim.AdamW(0.1, weight_decay=0.0, beta_2=0.999)
    opt.apply([grad], emb.trainable_variables)
    dense_grad = np.zeros((5, 2), "float32")
    np.add.at(dense_grad, ids.numpy(), upstream.numpy())
    (velocity,) = [v.numpy() for v in opt.variables if "velocity" in v.path]
    np.testing.assert_allclose(velocity, 0.001 * dense_grad**2, rtol=1e-5)


class KerasAdamW(optim._DenseGradients, keras.optimizers.AdamW):
    """Keras' own AdamW update (per-variable scalars), on the same dense gradients."""


def _train(cls, strategy, steps=4):
    """(weights after `steps` tf.function steps of `cls` with the package's schedule, weight
    decay and clipping on random gradients, ops in the step's graph)."""
    import tiny

    with strategy.scope():
        keras.utils.set_random_seed(0)
        variables = tiny.backbone().trainable_variables
        opt = cls(optim.WarmupLinearDecay(0.3, 10, 2), weight_decay=0.3, epsilon=1e-6,
                  global_clipnorm=1.0)
        opt.exclude_from_weight_decay(var_names=optim.NO_DECAY)
        opt.build(variables)
    rng = np.random.default_rng(0)
    grads = [[tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
             for _ in range(steps)]

    @tf.function
    def step(g):
        strategy.run(lambda *g: opt.apply(list(g), variables), args=tuple(g))

    ops = len(step.get_concrete_function(grads[0]).graph.get_operations())
    for g in grads:
        step(g)
    return [v.numpy() for v in variables], ops


@pytest.mark.parametrize("name, devices", [("cpu", []), ("mirrored", ["/cpu:0", "/cpu:1"])],
                         ids=["one_device", "mirrored"])
def test_adamw_is_keras_adamw_bit_for_bit_from_a_smaller_graph(name, devices):
    from tinybert_tf.launch.devices import Device
    from tinybert_tf.launch.strategy import tf_strategy

    # The launcher's strategies (tf_strategy: one MirroredStrategy per device set and process).
    strategy = tf_strategy(name, devices=[Device("cpu", d) for d in devices])
    ours, ours_ops = _train(optim.AdamW, strategy)
    theirs, their_ops = _train(KerasAdamW, strategy)
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert ours_ops < 0.7 * their_ops, (ours_ops, their_ops)
