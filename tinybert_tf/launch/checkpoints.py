"""Checkpoints of a training run, one class per Keras backend (`make` is the one choice).

TensorFlow: `Checkpointer`, every model variable + the optimizer in a `tf.train.CheckpointManager`.
JAX: `OrbaxCheckpointer`, `model.get_state_tree()` (trainable and non-trainable variables, dropout
seed-generator states included, optimizer and metric variables) plus the step, saved with
orbax-checkpoint (each checkpoint is written to a temporary directory renamed into place when
complete) and restored with `model.set_state_tree`. Both keep `max_to_keep` checkpoints, skip a
damaged newest one for the next older one with one line on stderr, raise a one-line error when
none restores, and record `good_step` (the step of the checkpoint restored or written last).

A model's `teacher` (a `Distiller`'s) is left out: frozen, and loaded from its preset by every
run, it would only add its size (BERT-base: ~440 MB) to each checkpoint. `teacher.json` beside the
checkpoints records its path and `teacher_fingerprint`; a restore beside another teacher is a
one-line `LaunchError` before any variable is assigned. Checkpoints without that file (written
with the teacher inside) are restored and continued as they were written.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tinybert_tf.errors import LaunchError, first_line
from tinybert_tf.launch.teacher_record import TeacherRecord, flat, nest


def make(directory, model, max_to_keep=3, teacher_path=""):
    """The checkpointer of this process's Keras backend for `model` (compiled, optimizer built).
    teacher_path: the teacher's preset path or name (`--config.teacher`), recorded beside the
    checkpoints of a model with a `teacher` so that a mismatch can name the one to pass."""
    if keras.backend.backend() == "jax":
        return OrbaxCheckpointer(directory, model, max_to_keep, teacher_path)
    return Checkpointer(directory, model, model.optimizer, max_to_keep, teacher_path)


def latest_path(checkpointer):
    """The newest checkpoint a checkpointer knows of (a path), or None."""
    if isinstance(checkpointer, OrbaxCheckpointer):
        return checkpointer.latest_path()
    return checkpointer.manager.latest_checkpoint


def has_checkpoint(directory):
    """Does a run's checkpoint directory hold a checkpoint (of this process's backend)?"""
    if keras.backend.backend() == "jax":
        return tf.io.gfile.isdir(directory) and any(
            name.rstrip("/").isdigit() for name in tf.io.gfile.listdir(directory))
    return bool(tf.train.latest_checkpoint(directory))


def _short(err):
    """One line of an exception: its type and the first line of its text, without TF's op noise."""
    text = getattr(err, "message", None) or str(err) or ""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text.strip())
    return f"{type(err).__name__}: {first_line(text, '')[:200]}"


def _none_restores(directory, names):
    """The one-line error of a checkpoint directory whose checkpoints (`names`) are all damaged."""
    return LaunchError(
        f"no checkpoint in {directory} can be restored ({', '.join(names)}: damaged, see above);"
        f" move that directory away or delete it to train this run from step 0.")


class Checkpointer:
    """Every model variable (but a teacher's) + the optimizer in a `tf.train.CheckpointManager`
    (gs:// works).

    TF writes the data files first and then atomically replaces the `checkpoint` index, so a kill
    during a write leaves the previous checkpoint as the latest usable one. `restore` falls back
    from a damaged checkpoint to the next older one it keeps.
    """

    def __init__(self, directory, model, optimizer, max_to_keep=3, teacher_path=""):
        self.directory, self.max_to_keep = directory, max_to_keep
        self.record = TeacherRecord(directory, model, teacher_path, bool(
            tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index"))))
        self.variables = {"model": self.record.kept(model.variables),
                          "optimizer": list(optimizer.variables)}
        self.checkpoint = tf.train.Checkpoint(**self.variables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep)
        self.good_step = None  # the step of the checkpoint this process restored or wrote last

    def _candidates(self):
        """Checkpoint prefixes to try, newest first, and whether they come from the state file.

        Without a readable `checkpoint` state file, the `ckpt-N.index` files on disk (TF writes
        a checkpoint's index after its data, so a half-written one has none)."""
        newest_first = list(self.manager.checkpoints)[::-1]
        latest = self.manager.latest_checkpoint
        if latest:
            newest_first = [latest] + [p for p in newest_first if p != latest]
        if newest_first:
            return newest_first, True
        found = []
        for path in tf.io.gfile.glob(os.path.join(self.directory, "ckpt-*.index")):
            match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(path))
            if match:
                found.append((int(match.group(1)), path[: -len(".index")]))
        return [prefix for _, prefix in sorted(found, reverse=True)], False

    def restore(self):
        """Restore the newest checkpoint that restores cleanly; returns its path or None.

        Each damaged one is skipped with one line on stderr naming it and why; if none restores,
        a `UserError` names the directory. Every try restores into a fresh `tf.train.Checkpoint`
        and must pass `assert_consumed`, so a successful one overwrites every variable that a
        failed try may have half-assigned. Checkpoints of another teacher: `_TeacherRecord.check`,
        before any variable is assigned."""
        candidates, from_state = self._candidates()
        if candidates:
            self.record.check()
        for path in candidates:
            attempt = tf.train.Checkpoint(**self.variables)
            _ = attempt.save_counter  # made now, so a failed try leaves no restore pending
            try:
                attempt.restore(path).assert_consumed()
            except Exception as err:  # any damage: DataLossError, NotFoundError, IndexError, ...
                print(f"Skipping checkpoint {path}: {_short(err)}", file=sys.stderr, flush=True)
                continue
            if not from_state:  # rebuild the missing / unreadable state file from the files found
                print(f"Checkpoint state file {self.directory}/checkpoint is missing or unreadable;"
                      f" found {len(candidates)} checkpoint(s) by name.", file=sys.stderr)
                kept = [p for p in candidates[::-1] if p != path] + [path]  # oldest first
                now = time.time() - len(kept)  # the manager tracks paths newer than "preserved"
                tf.compat.v1.train.update_checkpoint_state(
                    self.directory, path, all_model_checkpoint_paths=kept,
                    all_model_checkpoint_timestamps=[now + i for i in range(len(kept))],
                    last_preserved_timestamp=now - 1)
                self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                          self.max_to_keep)
            self.good_step = int(path.rsplit("-", 1)[1])
            return path
        if candidates:
            raise _none_restores(self.directory, [os.path.basename(p) for p in candidates])
        return None

    def save(self, step):
        self.record.write()
        self.manager.save(checkpoint_number=step)
        self.good_step = step


class OrbaxCheckpointer:
    """JAX backend: `{"state": model.get_state_tree(), "step": step}` per checkpoint in an orbax
    `CheckpointManager` (directory `<directory>/<step>`; local paths and gs:// work), the state
    tree without a teacher's entries (Keras' `set_state_tree` assigns the entries it is given
    and leaves the variables without one, the teacher's, as they are).

    orbax writes a checkpoint into a temporary directory and renames it when it is complete, so a
    kill during a write leaves the previous checkpoint as the latest usable one (the temporary
    one is removed when the next run opens the directory).

    Multi-process runs (jax.distributed, `strategy=data_parallel`): every process creates the
    manager and calls `save` / `restore` together, as orbax's multi-host API expects; orbax's
    own atomic commit does the rest (process 0 creates the temporary directory, every process
    writes its part behind barriers, process 0 renames it; the state tree holds replicated numpy
    arrays, which orbax's NumpyHandler writes from process 0 only; every process reads them)."""

    def __init__(self, directory, model, max_to_keep=3, teacher_path=""):
        import orbax.checkpoint as ocp

        self.ocp, self.model, self.max_to_keep = ocp, model, max_to_keep
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.record = TeacherRecord(self.directory, model, teacher_path,
                                     has_checkpoint(self.directory))
        with _quiet():
            self.manager = ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(
                    max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
                    cleanup_tmp_directories=True))
        self.good_step = None

    def _path(self, step):
        return os.path.join(self.directory, str(step))

    def latest_path(self):
        step = self.manager.latest_step()
        return None if step is None else self._path(step)

    def _state(self):
        """What a checkpoint holds of the model: its state tree (numpy) without the teacher."""
        return self.record.strip(self.model.get_state_tree("numpy_array"))

    def _check(self, state):
        """The restored tree covers exactly the variables this checkpointer saves (metric
        variables: those it has now; Keras builds a compiled model's metrics at its first fit)."""
        now = self._state()
        for group in ("trainable_variables", "non_trainable_variables", "optimizer_variables"):
            want, got = flat(now.get(group, {})), flat(state.get(group, {}))
            if set(want) != set(got):
                missing = sorted(set(want) - set(got)) or sorted(set(got) - set(want))
                raise ValueError(f"{group} differ from the model's (e.g. {missing[0]})")
            for path, value in got.items():
                if np.shape(value) != np.shape(want[path]):
                    raise ValueError(f"{group}/{path} has shape {np.shape(value)}, the model's "
                                     f"{np.shape(want[path])}")
        metrics = flat(now.get("metrics_variables", {}))
        state = dict(state, metrics_variables={
            k: v for k, v in flat(state.get("metrics_variables", {})).items() if k in metrics})
        return {group: nest(flat(tree)) for group, tree in state.items()}

    def restore(self):
        """Restore the newest checkpoint that restores cleanly; returns its path or None (see
        `Checkpointer.restore`: damaged ones are skipped with one line each; another teacher's
        are a `LaunchError` before any variable is assigned)."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if steps:
            self.record.check()
        for step in steps:
            path = self._path(step)
            try:
                state, saved_step = self._read(step)
            except Exception as err:  # any damage: missing or truncated files, a wrong tree
                print(f"Skipping checkpoint {path}: {_short(err)}", file=sys.stderr, flush=True)
                continue
            self.model.set_state_tree(state)
            self.good_step = saved_step
            return path
        if steps:
            raise _none_restores(self.directory, [str(s) for s in steps])
        return None

    def _read(self, step):
        """(state tree checked against the model, step) of checkpoint `step`. When a read fails,
        tensorstore's other reads of it still finish and print a traceback each from their
        callbacks into the closed asyncio loop: that output goes to a sink, given a moment."""
        import io

        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            try:
                tree = self.manager.restore(step, args=self.ocp.args.StandardRestore())
            except Exception:
                time.sleep(0.5)
                raise
        return self._check(tree["state"]), int(np.asarray(tree["step"]))

    def save(self, step):
        tree = {"state": self._state(), "step": np.asarray(step, np.int64)}
        self.record.write()
        with _quiet():
            if step in self.manager.all_steps():  # a damaged one that restore skipped
                self.manager.delete(step)
            self.manager.save(step, args=self.ocp.args.StandardSave(tree), force=True)
            self.manager.wait_until_finished()
        self.good_step = step


@contextlib.contextmanager
def _quiet():
    """orbax logs a dozen INFO lines per save through absl; keep its warnings only. A damaged
    checkpoint fails several of its concurrent reads, and asyncio logs each unretrieved one (a
    traceback, when the task is collected): silenced here, collected before leaving."""
    import gc
    import logging as std_logging

    level, aio = logging.get_verbosity(), std_logging.getLogger("asyncio")
    aio_level = aio.level
    logging.set_verbosity(min(level, logging.WARNING))  # absl: a lower level logs less
    aio.setLevel(std_logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()
        aio.setLevel(aio_level)
        logging.set_verbosity(level)
