"""The training loop: workdir, preemption-safe checkpoints, TensorBoard scalars, NaN guard, `fit`.

A run is a sequence of chunks of `log_every` steps (one Keras "epoch" each, so the progress bar
and TensorBoard show each loss term averaged over the chunk). Checkpoints are written at chunk
ends every `checkpoint_every` steps and hold every model variable (weights, dropout seed states)
and the optimizer (step counter, moments). On restart the latest checkpoint is restored and the
deterministic input pipeline skips the batches already consumed, so a killed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tinybert_tf.strategy import LaunchError


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def prepare_workdir(workdir, config, overwrite=False):
    """Create `workdir` and write the resolved `config.json`; refuse a different earlier run.

    `config` is a plain dict. Returns True when the workdir already held this run (a restart).
    """
    tf.io.gfile.makedirs(workdir)
    path = os.path.join(workdir, "config.json")
    text = json.dumps(config, indent=2, sort_keys=True, default=str)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            old = json.load(f)
        ignore = {"overwrite"}
        differ = sorted(
            k for k in set(old) | set(config)
            if k not in ignore and json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(config.get(k), sort_keys=True, default=str)
        )
        if differ and not overwrite:
            raise LaunchError(
                f"workdir {workdir} holds a run with a different config (differs in: "
                f"{', '.join(differ)}); use a new --workdir or pass --config.overwrite=True."
            )
        if differ:
            for sub in ("checkpoints", "tensorboard", "metrics.jsonl"):
                target = os.path.join(workdir, sub)
                if tf.io.gfile.isdir(target):
                    tf.io.gfile.rmtree(target)
                elif tf.io.gfile.exists(target):
                    tf.io.gfile.remove(target)
        else:
            return True
    _atomic_write(path, text)
    return False


class Checkpointer:
    """Every model variable + the optimizer in a `tf.train.CheckpointManager` (gs:// works).

    TF writes the data files first and then atomically replaces the `checkpoint` index, so a kill
    during a write leaves the previous checkpoint as the latest usable one.
    """

    def __init__(self, directory, model, optimizer, max_to_keep=3):
        self.checkpoint = tf.train.Checkpoint(
            model=list(model.variables), optimizer=list(optimizer.variables)
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)

    def restore(self):
        """Restore the latest checkpoint; returns its path or None."""
        path = self.manager.latest_checkpoint
        if path:
            self.checkpoint.restore(path).assert_consumed()
        return path

    def save(self, step):
        return self.manager.save(checkpoint_number=step)


class StepLogger(keras.callbacks.Callback):
    """After each chunk: TensorBoard scalars `train/<metric>` and `train/learning_rate`, and one
    JSON line in `metrics.jsonl` (what the demo's loss curve reads)."""

    def __init__(self, workdir):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        self.jsonl = os.path.join(workdir, "metrics.jsonl")

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        record = {k: float(v) for k, v in (logs or {}).items()}
        record["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        with self.writer.as_default(step=step):
            for name, value in record.items():
                prefix = "eval" if name.startswith("val_") else "train"
                tf.summary.scalar(f"{prefix}/{name.removeprefix('val_')}", value)
        self.writer.flush()
        with tf.io.gfile.GFile(self.jsonl, "a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss term, naming the step and the term; nothing is saved."""

    def __init__(self, checkpointer):
        super().__init__()
        self.checkpointer = checkpointer

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            if not math.isfinite(float(value)):
                step = int(self.model.optimizer.iterations.numpy())
                raise FloatingPointError(
                    f"{name} became {float(value)} at step {step}; run stopped, last good "
                    f"checkpoint kept: {self.checkpointer.manager.latest_checkpoint}."
                )


class SaveEvery(keras.callbacks.Callback):
    def __init__(self, checkpointer, every):
        super().__init__()
        self.checkpointer = checkpointer
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self.checkpointer.save(step)


def run(model, dataset, workdir, total_steps, log_every=100, checkpoint_every=1000,
        max_to_keep=3, callbacks=()):
    """Train `model` (compiled, optimizer built or not) on an infinite `dataset` for `total_steps`.

    Resumes from `workdir/checkpoints` if present. `callbacks` run after each chunk before the
    checkpoint is written and the chunk's logs are logged (e.g. `selection.EvalSelector`, which
    adds `val_*` scores to them). Returns the Keras History of this process.
    """
    log_every = max(1, min(log_every, total_steps))
    if checkpoint_every % log_every:
        raise LaunchError(
            f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every ({log_every})."
        )
    chunks = math.ceil(total_steps / log_every)
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), model, model.optimizer,
                                    max_to_keep)
    restored = checkpointer.restore()
    start = int(model.optimizer.iterations.numpy())
    if restored:
        logging.info("Resumed from %s at step %d.", restored, start)
        print(f"Resuming from {restored} (step {start} of {chunks * log_every}).")
    if start % log_every:
        raise LaunchError(f"checkpoint step {start} is not a multiple of log_every ({log_every}).")
    if start >= chunks * log_every:
        print(f"Run already complete at step {start}.")
        return None
    callbacks = [NanGuard(checkpointer), *callbacks, SaveEvery(checkpointer, checkpoint_every),
                 StepLogger(workdir)]
    history = model.fit(
        dataset.skip(start),
        epochs=chunks,
        initial_epoch=start // log_every,
        steps_per_epoch=log_every,
        callbacks=callbacks,
    )
    final = int(model.optimizer.iterations.numpy())
    if final % checkpoint_every:
        checkpointer.save(final)
    return history


def read_metrics(workdir):
    """The `metrics.jsonl` records of a run (one per chunk, by step; a chunk re-run after a
    restart replaces the earlier record)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        records = {r["step"]: r for r in (json.loads(line) for line in f if line.strip())}
    return [records[k] for k in sorted(records)]
