"""Optimisers for distillation: AdamW (no decay on LayerNorm and bias) or LAMB, linear warm-up + decay."""

from __future__ import annotations

import keras
from keras import ops

# Keras names LayerNorm weights gamma/beta; biases are "bias".
NO_DECAY = ["bias", "gamma", "beta"]


@keras.saving.register_keras_serializable(package="tinybert_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        # No warm-up means the peak from step 0 (as HF's linear schedule), not 0 at step 0.
        warm = step / self.warmup_steps if self.warmup_steps > 0 else 1.0
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * ops.clip(ops.minimum(warm, decay), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}


def densify(grads):
    """IndexedSlices (embedding-lookup gradients on TensorFlow) -> dense tensors; others as is.

    Keras' TensorFlow optimizers update Adam's moments slice by slice, so a token that occurs k
    times in a batch gets sum(g_i^2) in the second moment instead of (sum g_i)^2 (and gradient
    clipping measures the same wrong norm). A dense gradient gives the update JAX and PyTorch do.
    """
    if keras.backend.backend() != "tensorflow":
        return list(grads)
    import tensorflow as tf

    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


class _DenseGradients:
    def apply(self, grads, trainable_variables=None):
        return super().apply(densify(grads), trainable_variables)


@keras.saving.register_keras_serializable(package="tinybert_tf")
class AdamW(_DenseGradients, keras.optimizers.AdamW):
    """Keras AdamW on dense gradients (see `densify`)."""


@keras.saving.register_keras_serializable(package="tinybert_tf")
class Lamb(_DenseGradients, keras.optimizers.Lamb):
    """Keras LAMB on dense gradients (see `densify`)."""


def make_optimizer(name, learning_rate, total_steps, warmup_fraction=0.1, weight_decay=0.01,
                   clipnorm=1.0):
    """AdamW or LAMB with the warm-up/decay schedule and global-norm gradient clipping."""
    schedule = WarmupLinearDecay(learning_rate, total_steps, int(warmup_fraction * total_steps))
    clip = clipnorm if clipnorm and clipnorm > 0 else None
    if name == "adamw":
        opt = AdamW(schedule, weight_decay=weight_decay, epsilon=1e-6,
                                     global_clipnorm=clip)
    elif name == "lamb":
        opt = Lamb(schedule, weight_decay=weight_decay, epsilon=1e-6,
                                    global_clipnorm=clip)
    else:
        raise ValueError(f"Unknown optimizer {name!r}; use 'adamw' or 'lamb'.")
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt
