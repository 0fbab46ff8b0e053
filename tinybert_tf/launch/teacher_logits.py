"""The prediction step's teacher logits: each frozen teacher run once over the training data
(`cached_logits_data`), or read from `prediction.logits_cache` (`logits_cache`) when an earlier
run stored them; and the task teacher's loader both task-distillation steps use."""

import keras
import numpy as np

from tinybert_tf.distill.distiller import CACHED_LOGITS
from tinybert_tf.launch import builders, logits_cache

_ROW = "__row__"


def load_teacher(config, path, spec, orders):
    """A frozen teacher of task distillation in the teacher dtype, its classes in the task's
    order (`teachers.label_order`, checked before the claim)."""
    from tinybert_tf.distill import heads

    teacher = builders.load_classifier(path, token_level=spec.kind == "token_classification",
                                       dtype=config.teacher_dtype)
    return heads.reorder_classes(teacher, (orders or {}).get(path))


def cached_logits_data(config, task, teacher_dirs, strategy, loaded=None, orders=None):
    """Training data whose `x` carries the frozen teachers' logits, computed in one pass each.

    The prediction step's teachers are frozen and run in inference mode, so their logits for an
    example never change: one pass replaces a teacher forward per example per epoch. Several
    teachers' logits are combined once (`ensemble.combine_logits`: `prediction.combine`, at
    `prediction.temperature`). With `prediction.logits_cache` a directory, each teacher's logits
    are read from there when an earlier run stored them for the same teacher, inputs and settings
    (`logits_cache`), and stored there otherwise. task: the run's `TaskData`; loaded: {dir:
    model} of teachers already in memory (each other teacher is loaded here, once, if its logits
    are not cached); orders: {dir: class order} of teachers labelled in another order
    (`teachers.label_orders`).
    """
    from tinybert_tf.distill import ensemble

    rows = task.rows
    # Length buckets reorder rows: carry each row's index through and put the logits back.
    one_pass = task.one_pass(extra={_ROW: np.arange(rows)})
    cache_dir = config.prediction.logits_cache
    order, digest = _row_order(one_pass, hashed=bool(cache_dir))
    inputs = one_pass.map(lambda x, *_: {k: v for k, v in x.items() if k != _ROW})
    outputs = max(1, task.spec.num_classes) * len(teacher_dirs) * rows * 4
    size = f", {outputs / 2**30:.1f} GiB of logits in memory" if outputs > 2**30 else ""
    print(f"Caching the logits of {len(teacher_dirs)} teacher(s) over the training data ({rows} "
          f"rows, one pass each{size}) ...")
    logits = []
    for path in teacher_dirs:
        cache_key = cache_dir and _cache_key(config, path, digest, strategy, orders)
        predicted = logits_cache.load(cache_dir, cache_key) if cache_key else None
        if predicted is not None:
            print(f"Teacher {path}: logits read from {cache_dir}.")
        else:
            predicted = _teacher_logits(config, task, path, strategy, inputs, loaded, orders)
            if cache_key:
                logits_cache.store(cache_dir, cache_key, predicted)
        logits.append(np.empty_like(predicted))
        logits[-1][order] = predicted
    p = config.prediction
    combined = ensemble.combine_logits(np.stack(logits), p.temperature, p.combine,
                                       regression=task.spec.kind == "regression")
    return task.train(extra={CACHED_LOGITS: combined})


def _row_order(one_pass, hashed):
    """The row index of each row of `one_pass` in its batch order, and (`hashed`) the sha256 of
    its input batches, indices included (`logits_cache.batches_digest`), else None."""
    order = []

    def inputs():
        for batch in one_pass:
            order.append(np.asarray(batch[0][_ROW]))
            yield batch[0]

    if hashed:
        digest = logits_cache.batches_digest(inputs())
    else:
        digest = None
        for _ in inputs():
            pass
    return np.concatenate(order), digest


def _cache_key(config, path, digest, strategy, orders):
    """`logits_cache.key` of teacher `path` under this run's settings."""
    return logits_cache.key(path, digest, order=(orders or {}).get(path),
                            teacher_dtype=config.teacher_dtype, jit_compile=config.jit_compile,
                            policy=keras.mixed_precision.global_policy().name,
                            replicas=strategy.num_replicas_in_sync)


def _teacher_logits(config, task, path, strategy, inputs, loaded, orders):
    """Teacher `path`'s logits over `inputs` in their batch order (the teacher taken from
    `loaded` or loaded here and dropped after)."""
    teacher = (loaded or {}).get(path)
    if teacher is None:
        with strategy.scope():
            teacher = load_teacher(config, path, task.spec, orders)
    return np.asarray(teacher.predict(inputs, verbose=2 if config.log_every else 0), np.float32)
