"""The Distiller's train/test step on the Keras TensorFlow backend (the default).

`Distiller` picks this module (or `jax_step`) once, by backend, as Keras picks its trainer. The
step wraps the backend-neutral `Distiller.compute_terms`: the teacher's forward pass runs outside
the gradient tape, the student's (and the projections') inside. Under a `tf.distribute` strategy
each replica's loss is divided by the replica count, so the summed gradient is the global-batch
mean; with several replicas a `global_clipnorm` is applied to that summed gradient here, and
under loss scaling the replicas agree on whether the step's gradients are finite.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tinybert_tf.distill import optim


def num_replicas():
    """Replicas that each see a slice of the global batch (TF distribution strategies)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def clip_across_replicas(grads, clipnorm):
    """Scale every replica's gradients by the clipping factor of their cross-replica sum."""
    total = tf.distribute.get_replica_context().all_reduce("sum", grads)
    norm = tf.linalg.global_norm(total)
    scale = tf.minimum(1.0, clipnorm / tf.maximum(norm, 1e-12))
    return [g * tf.cast(scale, g.dtype) for g in grads]


def agree_on_finite(grads):
    """Every replica's gradients made non-finite when any replica's are. Keras'
    LossScaleOptimizer decides to apply or skip a step from the first replica's gradients alone
    (it expects them summed already; the sum happens later, in the update): a float16 overflow
    on another replica would be summed into the weights and turn them to NaN."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
    bad = tf.distribute.get_replica_context().all_reduce("sum", 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(bad > 0, float("nan"), 0.0)
    return [g + tf.cast(poison, g.dtype) for g in grads]


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    t_feats = model.teacher_outputs(x)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        s_feats = model.student_features(x, training=True)
        terms = model.compute_terms(x, y, sample_weight, t_feats, s_feats)
        loss = model.optimizer.scale_loss(terms["loss"] / num_replicas())
    grads = tape.gradient(loss, variables)
    # Variables no term reaches (e.g. the pooler under intermediate-layer terms) keep still.
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    grads, variables = optim.densify([g for g, _ in pairs]), [v for _, v in pairs]
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if scaled and num_replicas() > 1:
        grads = agree_on_finite(grads)
    clipnorm = model.replica_clipnorm
    if clipnorm:  # the gradients are still multiplied by the loss scale here
        scale = model.optimizer.dynamic_scale if scaled else 1.0
        grads = clip_across_replicas(grads, clipnorm * scale)
    model.optimizer.apply(grads, variables)
    return model.update_metrics(terms)


def test_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    t_feats = model.teacher_outputs(x)
    s_feats = model.student_features(x, training=False)
    return model.update_metrics(model.compute_terms(x, y, sample_weight, t_feats, s_feats))
