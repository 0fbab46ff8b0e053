"""The TensorFlow / Keras side of the step benchmarks: random batches and backbones, the Distiller
step timed under `fit` per variant (also the worker job of `--bench=memory` and `--bench=jax`),
and the task-prediction step with cached teacher logits."""

from __future__ import annotations

import gc
import math
import time

from . import common
from .common import feature_errors, median, parse_variant


def setup_tensorflow(cfg):
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.inter_op_threads)
    except RuntimeError:  # already initialised
        pass
    return tf


def random_batch(cfg, batch=None, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = batch or cfg.batch
    ids = rng.integers(1, cfg.vocab, size=(batch, cfg.seq)).astype("int32")
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids),
            "padding_mask": np.ones_like(ids)}


def build_backbones(cfg, precision="fp32"):
    return common.build_backbones(cfg.vocab, cfg.seq, cfg.teacher, cfg.student, precision)


def load_weights(model, weights):
    from keras import ops

    for variable, value in zip(model.weights, weights):
        variable.assign(ops.cast(value, variable.dtype))


def numpy_features(feats):
    from keras import ops

    return {k: ([ops.convert_to_numpy(ops.cast(t, "float32")) for t in v]
                if isinstance(v, list) else ops.convert_to_numpy(ops.cast(v, "float32")))
            for k, v in feats.items()}


class StepTimer:
    """Keras callback: wall time between consecutive train-batch ends (synchronised on the loss)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                float(logs["loss"])  # wait for the step (JAX dispatches asynchronously)
                self.ends.append(time.perf_counter())

            def on_train_begin(self, logs=None):
                self.ends = [time.perf_counter()]

        return _Timer()


def time_fit(model, x, calls, spe):
    """Runs `calls` executions of `spe` steps with `fit`; per-step seconds of each execution."""
    timer = StepTimer()
    model.fit(x, epochs=1, steps_per_epoch=calls * spe, verbose=0, callbacks=[timer], shuffle=False)
    return [(b - a) / spe for a, b in zip(timer.ends, timer.ends[1:])]


def repeat_dataset(batch):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(batch).repeat().prefetch(2)
    return _RepeatPyDataset(batch)


def _RepeatPyDataset(batch):
    import keras

    class Repeat(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return 1_000_000

        def __getitem__(self, index):
            return batch

    return Repeat()


def build_distiller(cfg, precision, jit, spe, recipe="tinybert_general", teacher_weights=None,
                    student_weights=None):
    """A compiled Distiller (AdamW) of one precision variant with `recipe` (a name or a
    `Recipe`), random weights or the given ones; an int8 teacher quantised after they are set.
    jit: True, False or "fusible" (`common.keras_jit`)."""
    import keras

    from tinybert_tf import Distiller

    teacher, student = build_backbones(cfg, precision)
    if teacher_weights is not None:
        load_weights(teacher, teacher_weights)
        load_weights(student, student_weights)
    common.quantize_if_int8(teacher, precision)
    distiller = Distiller(teacher, student, recipe)
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4),
                      jit_compile=common.keras_jit(jit), steps_per_execution=spe)
    return distiller


def time_distiller_step(cfg, precision, jit, spe, teacher_weights=None, student_weights=None,
                        exact_features=None):
    """seq/s of one Distiller variant (fit, AdamW, recipe tinybert_general); also the
    teacher-feature error vs fp32."""
    import keras

    keras.backend.clear_session()
    gc.collect()
    distiller = build_distiller(cfg, precision, jit, spe, teacher_weights=teacher_weights,
                                student_weights=student_weights)
    batch = random_batch(cfg)
    result = {"precision": precision, "jit_compile": jit, "steps_per_execution": spe,
              "teacher_depth": distiller.teacher_depth}
    if exact_features is not None and precision != "fp32":
        result.update(feature_errors(numpy_features(distiller.teacher_features(batch)),
                                     exact_features))
    elif precision == "fp32":
        result.update(teacher_rel_err=0.0, teacher_rel_err_max=0.0)
    calls = cfg.warmup + max(1, math.ceil(cfg.repeats / spe))
    times = time_fit(distiller, repeat_dataset(batch), calls, spe)[cfg.warmup:]
    step_s = median(times)
    result.update(step_ms=step_s * 1e3, seq_per_s=cfg.batch / step_s, timed_steps=len(times) * spe,
                  step_ms_min=min(times) * 1e3)
    del distiller
    return result


def keras_step_worker(cfg, args):
    """Subprocess job: time the given Distiller variants on the current Keras backend."""
    import keras

    out = {"backend": keras.backend.backend(), "variants": {}}
    for name in args["variants"]:
        precision, jit, spe = parse_variant(name)
        if keras.backend.backend() == "jax":
            jit = True
        out["variants"][name] = time_distiller_step(cfg, precision, jit, spe)
    return out


def bench_cached_logits(cfg, precision, jit):
    """Task-prediction step (recipe tinybert_task_prediction): teacher every step vs logits
    computed once and fed back (same student step, `compute_terms` on {'logits': cached})."""
    import keras
    import keras_hub
    import tensorflow as tf

    from tinybert_tf import Distiller

    keras.backend.clear_session()
    gc.collect()
    teacher_bb, student_bb = build_backbones(cfg, precision)
    teacher = keras_hub.models.BertTextClassifier(teacher_bb, num_classes=2, preprocessor=None)
    student = keras_hub.models.BertTextClassifier(student_bb, num_classes=2, preprocessor=None)
    distiller = Distiller(teacher, student, "tinybert_task_prediction")
    distiller.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-4),
                      jit_compile=common.keras_jit(jit))
    batch = random_batch(cfg)
    calls = cfg.warmup + cfg.repeats
    teacher_s = median(time_fit(distiller, repeat_dataset(batch), calls, 1)[cfg.warmup:])

    cached = tf.constant(keras.ops.convert_to_numpy(
        keras.ops.cast(distiller.teacher_features(batch)["logits"], "float32")))
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    variables = distiller.student.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=jit is True)
    def cached_step(x, teacher_logits):
        with tf.GradientTape() as tape:
            feats = distiller.student_features(x, training=True)
            terms = distiller.compute_terms(x, None, None, {"logits": teacher_logits}, feats)
        grads = tape.gradient(terms["loss"], variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return terms["loss"]

    x = {k: tf.constant(v) for k, v in batch.items()}
    times = []
    for i in range(calls):
        start = time.perf_counter()
        float(cached_step(x, cached))
        if i >= cfg.warmup:
            times.append(time.perf_counter() - start)
    cached_s = median(times)
    return {"variant": precision + common.variant_suffix(jit),
            "teacher_step_ms": teacher_s * 1e3, "cached_step_ms": cached_s * 1e3,
            "teacher_seq_per_s": cfg.batch / teacher_s, "cached_seq_per_s": cfg.batch / cached_s,
            "speedup": teacher_s / cached_s}
