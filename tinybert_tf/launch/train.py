"""The training loop: preemption-safe checkpoints, TensorBoard scalars, NaN guard, `fit`.

A run is a sequence of chunks (one Keras "epoch" each, so metrics.jsonl and TensorBoard show each
loss term averaged over the chunk) that end at every multiple of `log_every`, at every multiple of
the evaluation interval (`eval_every`: an evaluation at an epoch's end falls at its last step) and
at the run's last step, `total_steps`, the length of the learning-rate schedule. The console is
`progress.Progress`: one bar (or, off a terminal, one line per chunk) counting the run's steps. Checkpoints are written at chunk
ends every `checkpoint_every` steps and hold every model variable (weights, dropout seed states;
not a Distiller's frozen teacher, which every run loads from its preset) and the optimizer (step
counter, moments). On restart the latest checkpoint is restored and the deterministic input
pipeline skips the batches already consumed, so a killed run ends with the same weights as an
uninterrupted one.

SIGINT / SIGTERM (Ctrl-C, a preempted VM) during `run` only set a flag; the run stops at the next
step boundary (after the chunk end when the signal came during a chunk's last step), writes a
checkpoint at that step and raises `errors.Interrupted` (exit 130 / 143); a second signal exits
at once. A run resumed mid-chunk first trains the rest of that chunk (its `metrics.jsonl` record,
at the chunk end as usual, averages only the steps trained after the resume), then whole chunks.
A damaged latest checkpoint is skipped for the next older one it keeps.

Early stopping: a callback that sets `model.stop_training` at a chunk end (`EvalSelector` with a
`patience`) ends the run there, with a checkpoint at that step, and `run` returns normally; a
callback whose `stopped` attribute is true after the restore (the run stopped early before a
restart) makes `run` train no further.

The modes call `run_stage`: `run` with a stage's `Settings` (log, checkpoint and stall settings).

Backend-neutral: `checkpoints.make` picks TF's or orbax's checkpointer (JAX), the step is read
with `current_step`, and on JAX Keras' trainer re-attaches its state to the variables before any
callback reads `self.model` (and when a fit ends, an exception included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tinybert_tf import errors
from tinybert_tf.launch import checkpoints, distribution
from tinybert_tf.launch.progress import Progress
from tinybert_tf.launch.selection import EvalSelector, current_step


class StepLogger(keras.callbacks.Callback):
    """After each chunk: TensorBoard scalars `train/<metric>` and `train/learning_rate`, and one
    JSON line in `metrics.jsonl` (what the demo's loss curve reads). `head`: `{name: record}`
    written as the file's first lines when the file is new (general distillation's corpus scan,
    the task modes' truncation counts); metrics.jsonl appears only once training runs, which the
    un-claiming of a failed launch relies on."""

    def __init__(self, workdir, head=None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        self.jsonl = os.path.join(workdir, "metrics.jsonl")
        self.head = dict(head or {})

    def on_epoch_end(self, epoch, logs=None):
        step = current_step(self.model)
        record = {k: float(v) for k, v in (logs or {}).items()}
        record["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        with self.writer.as_default(step=step):
            for name, value in record.items():
                prefix = "eval" if name.startswith("val_") else "train"
                tf.summary.scalar(f"{prefix}/{name.removeprefix('val_')}", value)
        self.writer.flush()
        lines = [json.dumps({"step": step, **record})]
        if not tf.io.gfile.exists(self.jsonl):
            lines[:0] = [json.dumps({name: value}) for name, value in self.head.items()]
        with tf.io.gfile.GFile(self.jsonl, "a") as f:
            f.write("".join(line + "\n" for line in lines))


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss term, naming the step and the term; nothing is saved."""

    def __init__(self, checkpointer):
        super().__init__()
        self.checkpointer = checkpointer

    def on_train_batch_end(self, batch, logs=None):
        for name, value in (logs or {}).items():
            if not math.isfinite(float(value)):
                step = current_step(self.model)
                raise FloatingPointError(
                    f"{name} became {float(value)} at step {step}; run stopped, last good "
                    f"checkpoint kept: {checkpoints.latest_path(self.checkpointer)}."
                )


class StallCheck(keras.callbacks.Callback):
    """One warning when the training loss has stayed flat over the first `intervals` logged
    chunks of a run (their mean losses within `STALL_TOLERANCE` of each other): a run that trains
    nothing (a learning rate too small, frozen or low-precision weights) says so early instead
    of ending with a model at chance. `intervals` 0 turns it off."""

    STALL_TOLERANCE = 0.01  # relative spread of the chunk means that counts as "not moved"

    def __init__(self, intervals):
        super().__init__()
        self.intervals, self.losses, self.steps = int(intervals), [], []

    def on_epoch_end(self, epoch, logs=None):
        if not self.intervals or len(self.losses) >= self.intervals or "loss" not in (logs or {}):
            return
        self.losses.append(float(logs["loss"]))
        self.steps.append(current_step(self.model))
        if len(self.losses) == self.intervals and stalled(self.losses, self.STALL_TOLERANCE):
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            print(f"Warning: the loss has not moved over the first {self.intervals} logs (steps "
                  f"{self.steps[0]}-{self.steps[-1]}: {min(self.losses):.4g}-"
                  f"{max(self.losses):.4g}); if it stays flat, check the learning rate (now "
                  f"{lr:.3g}) and for frozen or low-precision weights (--config.stall_intervals=0 "
                  "turns this check off).", flush=True)


def stalled(losses, tolerance):
    """True when every loss lies within `tolerance` (relative) of their mean."""
    mean = float(np.mean(losses))
    return max(losses) - min(losses) <= tolerance * max(abs(mean), 1e-12)


class SaveEvery(keras.callbacks.Callback):
    def __init__(self, checkpointer, every):
        super().__init__()
        self.checkpointer = checkpointer
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        step = current_step(self.model)
        if step % self.every == 0:
            self.checkpointer.save(step)


class _Stop(Exception):
    """Raised by `SignalStop` at a step boundary; `run` turns it into `errors.Interrupted`."""


class SignalStop(keras.callbacks.Callback):
    """SIGINT / SIGTERM handlers (main thread only, the previous ones restored on exit) that only
    set a flag, so nothing is raised inside whatever code the signal lands in (a KeyboardInterrupt
    raised in jax's GC callback is discarded). At the next step boundary the fit is ended by an
    exception rather than `model.stop_training`, so no chunk-end callback (metrics record,
    evaluation, checkpoint_every save) runs on the partial chunk. A second signal exits at once."""

    def __init__(self):
        super().__init__()
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:
            os.write(2, b"\nSecond signal: exiting now, without a checkpoint at this step.\n")
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step to write a "
                    "checkpoint (send it again to exit at once).\n".encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def on_train_batch_begin(self, batch, logs=None):
        if self.signum is not None:  # arrived during a chunk end, or before the fit started
            raise _Stop()

    def on_train_batch_end(self, batch, logs=None):
        # The last step of a chunk lets the chunk end (its metrics record, evaluation, save);
        # on_train_batch_begin of the next one stops, or `run` does after the last chunk.
        steps = self.params.get("steps")
        if self.signum is not None and (steps is None or batch + 1 < steps):
            raise _Stop()


def check_intervals(log_every, checkpoint_every):
    """Checkpoints are written at chunk ends, so `checkpoint_every` must be a multiple of
    `log_every` (at least 1, as the run uses it); returns that `log_every`."""
    log_every = max(1, int(log_every))
    if checkpoint_every % log_every:
        raise errors.LaunchError(
            f"checkpoint_every ({checkpoint_every}) must be a multiple of log_every ({log_every})."
        )
    return log_every


def chunk_ends(model, total_steps, log_every, checkpoint_every, eval_every=0):
    """The steps at which the run's chunks end: every multiple of `log_every` and of `eval_every`
    (so an evaluation every epoch falls at the epoch's last step, not at the next log), and the
    run's last step, `total_steps` (the length of the learning-rate schedule). `log_every` is
    checked against `checkpoint_every` (`check_intervals`) and every end is rounded up to a multiple of `steps_per_execution` (chunk ends are its step boundaries)."""
    log_every = check_intervals(log_every, checkpoint_every)
    eval_every = max(0, int(eval_every or 0))
    per_call = int(getattr(model, "steps_per_execution", 1) or 1)
    if log_every % per_call:
        raise errors.LaunchError(
            f"log_every ({log_every}) must be a multiple of steps_per_execution ({per_call})."
        )
    marks = {*range(log_every, total_steps, log_every), max(1, int(total_steps))}
    if eval_every:
        marks |= set(range(eval_every, total_steps, eval_every))
    return sorted({-(-m // per_call) * per_call for m in marks})


def _segments(start, ends):
    """The `fit` calls from `start`, as (first step, first chunk, chunk to end at, steps per
    chunk): consecutive chunks of one length share a call; a chunk that `start` falls inside (a
    signal stopped the run mid-chunk) is trained from `start` to its end."""
    segments, previous = [], 0
    for chunk, end in enumerate(ends):
        first, previous = max(previous, start), end
        if end <= start:
            continue
        steps = end - first
        if segments and segments[-1][3] == steps:
            head, epoch, _, _ = segments[-1]
            segments[-1] = (head, epoch, chunk + 1, steps)
        else:
            segments.append((first, chunk, chunk + 1, steps))
    return segments


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a stage's training loop reads of a run (`builders.train_settings` reads them from a
    config): chunk ends every `log_every` steps, a checkpoint every `checkpoint_every` (the last
    `keep_checkpoints` kept), the stall check over `stall_intervals` chunks, the teacher preset
    recorded beside the checkpoints, and the records heading metrics.jsonl (`StepLogger`)."""

    log_every: int = 100
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    stall_intervals: int = 0
    teacher_path: str = ""
    head: dict = dataclasses.field(default_factory=dict)


def run_stage(model, data, workdir, settings, total_steps, callbacks=(), label="", per_epoch=0):
    """`run` with a stage's `Settings`; an `EvalSelector` among `callbacks` makes chunks end at
    its evaluation steps (an epoch's end: its last step).

    Args:
        model: a compiled keras.Model (a Distiller or a task model).
        data: its training batches, without end.
        workdir: the stage's run dir (checkpoints, metrics.jsonl, tensorboard).
        settings: a `Settings`.
        total_steps: the stage's last step (its learning-rate schedule's length).
        callbacks: Keras callbacks run at each chunk end before the checkpoint.
        label, per_epoch: the stage's name and steps per epoch, for the progress display."""
    every = next((cb.every for cb in callbacks if isinstance(cb, EvalSelector)), 0)
    run(model, data, workdir, total_steps, log_every=settings.log_every,
        checkpoint_every=settings.checkpoint_every, max_to_keep=settings.keep_checkpoints,
        callbacks=callbacks, stall_intervals=settings.stall_intervals, eval_every=every,
        steps_per_epoch=per_epoch, label=label, teacher_path=settings.teacher_path,
        head=settings.head)


def run(model, dataset, workdir, total_steps, log_every=100, checkpoint_every=1000,
        max_to_keep=3, callbacks=(), stall_intervals=0, eval_every=0, steps_per_epoch=0,
        label="", teacher_path="", head=None):
    """Train `model` (compiled, optimizer built or not) on an infinite `dataset` for `total_steps`.

    Resumes from `workdir/checkpoints` if present. `callbacks` run after each chunk before the
    checkpoint is written and the chunk's logs are logged (e.g. `selection.EvalSelector`, which
    adds `val_*` scores to them); `eval_every`: its interval, so that chunks end there too
    (`chunk_ends`). `stall_intervals`: see `StallCheck` (checked on a run from step 0 only).
    `steps_per_epoch`, `label`: what the progress display (`progress.Progress`) shows. A callback
    setting `model.stop_training` ends the run early (a checkpoint at the step reached, no
    further segment); one whose `stopped` is true after the restore (a run that stopped early)
    means there is nothing left to train. On SIGINT / SIGTERM raises `errors.Interrupted` after
    writing a checkpoint at the step reached (see SignalStop), also when the signal came during
    the last chunk (which then ends as usual). `teacher_path`: the preset of a Distiller's
    teacher, recorded beside its checkpoints (which leave the teacher out: `checkpoints`).
    `head`: records heading metrics.jsonl (`StepLogger`).
    """
    ends = chunk_ends(model, total_steps, log_every, checkpoint_every, eval_every)
    stopper = SignalStop()  # from before the restore: a signal from then on stops cleanly
    with stopper:
        checkpointer = _restore(model, workdir, max_to_keep, ends[-1], teacher_path)
        start = current_step(model)
        if _nothing_left(start, ends[-1], callbacks):
            _raise_if_signalled(stopper, start)  # a signal during the restore still stops
            return
        # Metrics, TensorBoard and the console: the chief; orbax checkpoints: every process.
        chief = distribution.is_chief()
        shown = (Progress(ends[-1], start, steps_per_epoch, label, model.optimizer) if chief
                 else None)
        stall = [StallCheck(stall_intervals)] if stall_intervals and start == 0 else []
        # The chunk's record before its checkpoint: a kill between the two re-runs the chunk,
        # whose record then replaces the first (read_metrics), rather than leaving the chunk
        # without one.
        every_chunk = [*([shown] if shown else []), NanGuard(checkpointer), *stall, *callbacks,
                       *([StepLogger(workdir, head)] if chief else []),
                       SaveEvery(checkpointer, checkpoint_every), stopper]
        with shown or contextlib.nullcontext():
            step = _fit(model, dataset, _segments(start, ends), every_chunk, checkpointer)
    _raise_if_signalled(stopper, step)


def _raise_if_signalled(stopper, step):
    """`errors.Interrupted` (exit 128 + the signal) if `stopper` caught a signal."""
    if stopper.signum is not None:
        raise errors.Interrupted(
            f"stopped at step {step}, checkpoint written; run the same command (or Python call) "
            "again to resume.",
            128 + stopper.signum,
        )


def _restore(model, workdir, max_to_keep, end, teacher_path=""):
    """The run's checkpointer (the optimizer built under the model's strategy, as the variables
    a checkpoint holds must be), after restoring the latest checkpoint into `model`."""
    strategy = getattr(model, "distribute_strategy", None)  # TF; none on JAX
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model.optimizer.build(model.trainable_variables)
        checkpointer = checkpoints.make(os.path.join(workdir, "checkpoints"), model, max_to_keep,
                                        teacher_path)
    restored = checkpointer.restore()
    if restored:
        start = current_step(model)
        logging.info("Resumed from %s at step %d.", restored, start)
        print(f"Resuming from {restored} (step {start} of {end}).")
    return checkpointer


def _nothing_left(start, end, callbacks):
    """True (and says why) when a restored run has reached its last step or stopped early."""
    if start >= end:
        print(f"Run already complete at step {start}.")
        return True
    if any(getattr(cb, "stopped", False) for cb in callbacks):
        print(f"Run already stopped early at step {start}.")
        return True
    return False


def _fit(model, dataset, segments, callbacks, checkpointer):
    """The `fit` calls of `segments` (Keras' own console off: `progress.Progress` is the one
    display), until the last, an early stop or a signal; then a checkpoint at the step reached
    unless one is there. Returns that step."""
    try:
        for first, epoch, epochs, steps in segments:
            model.fit(dataset.skip(first), epochs=epochs, initial_epoch=epoch,
                      steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False)
            if getattr(model, "stop_training", False):  # early stop: no further segment
                break
    except _Stop:
        pass
    step = current_step(model)
    if checkpointer.good_step != step:  # the last step, or where a signal stopped
        checkpointer.save(step)
    return step


def read_metrics(workdir):
    """The `metrics.jsonl` records of a run (one per chunk end, by step; a chunk re-run after a
    restart replaces the earlier record; a chunk resumed mid-way after a signal averages the
    steps trained after the resume). The corpus-scan line that heads a general-distillation
    run's file is not a chunk record and is left out."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        records = {r["step"]: r for r in (json.loads(line) for line in f if line.strip())
                   if "step" in r}
    return [records[k] for k in sorted(records)]
