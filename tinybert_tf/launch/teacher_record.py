"""The frozen teacher a checkpoint directory goes with: what a checkpointer leaves out of each
checkpoint (a model's `teacher`) and `teacher.json`, the record of its preset path and a
fingerprint of its weights, checked before a restore so that a resume beside another teacher is a
one-line `LaunchError` naming the one to pass."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import distribution

TEACHER_FILE = "teacher.json"  # in the checkpoint directory: the teacher the checkpoints go with


def teacher_fingerprint(model):
    """sha256 (hex) of a teacher's weights in `teacher.weights` order, each as its shape, dtype
    and numpy bytes: equal only for the same weights loaded in the same dtype. `model`: a model
    with a `teacher` (a Distiller), or the teacher itself."""
    digest = hashlib.sha256()
    for weight in getattr(model, "teacher", model).weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(repr((value.shape, str(value.dtype))).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class TeacherRecord:
    """What a checkpointer leaves out (a model's `teacher`) and `teacher.json` (the teacher's path,
    dtypes, fingerprint), written before a process's first checkpoint, checked before a restore.
    Checkpoints without `teacher.json` hold the teacher: those runs are kept whole, as before."""

    def __init__(self, directory, model, teacher_path, has_checkpoints):
        self.file = os.path.join(directory, TEACHER_FILE)
        self.directory, self.model, self.path = directory, model, teacher_path or ""
        self.teacher = getattr(model, "teacher", None)
        whole = has_checkpoints and not tf.io.gfile.exists(self.file)  # checkpoints of old runs
        self.active = self.teacher is not None and not whole  # False: nothing is left out
        self._fingerprint, self._written = None, False

    def fingerprint(self):
        if self._fingerprint is None:
            self._fingerprint = teacher_fingerprint(self.teacher)
        return self._fingerprint

    def dtypes(self):
        return ",".join(sorted({keras.backend.standardize_dtype(w.dtype)
                                for w in self.teacher.weights}))

    def kept(self, variables):
        """`variables` without the teacher's (by identity), in their order."""
        if not self.active:
            return list(variables)
        teacher = {id(v) for v in self.teacher.variables}
        return [v for v in variables if id(v) not in teacher]

    def strip(self, tree):
        """A `get_state_tree` without the teacher's entries (found by `v.path` in each group; a
        path that a variable of the group outside the teacher shares stays)."""
        if not self.active:
            return tree
        teacher, out = {id(v) for v in self.teacher.variables}, dict(tree)
        for group, variables in (("trainable_variables", self.model.trainable_variables),
                                 ("non_trainable_variables", self.model.non_trainable_variables)):
            drop = ({v.path for v in variables if id(v) in teacher}
                    - {v.path for v in variables if id(v) not in teacher})
            if group in tree and drop:
                out[group] = nest({p: v for p, v in flat(tree[group]).items() if p not in drop})
        return out

    def check(self):
        """A one-line `LaunchError` when `teacher.json` records another teacher (unreadable: said
        on stderr, not checked)."""
        if not self.active or not tf.io.gfile.exists(self.file):
            return
        try:
            with tf.io.gfile.GFile(self.file) as f:
                recorded = json.load(f)
            fingerprint = str(recorded["fingerprint"])
        except Exception as err:  # truncated, not JSON, unreadable
            print(f"Teacher record {self.file} is unreadable ({type(err).__name__}: {err}); the teacher is not"
                  " checked.", file=sys.stderr, flush=True)
            return
        if fingerprint != self.fingerprint():
            raise _other_teacher(self.directory, recorded, self.path, self.fingerprint(),
                                 self.dtypes())

    def write(self):
        """`teacher.json`, once per process, by the chief, atomically (a temporary file renamed)."""
        if not self.active or self._written:
            return
        if distribution.is_chief():
            record = {"teacher": self.path, "fingerprint": self.fingerprint(),
                      "dtypes": self.dtypes(), "weights": len(self.teacher.weights)}
            tf.io.gfile.makedirs(self.directory)
            with tf.io.gfile.GFile(self.file + ".tmp", "w") as f:
                json.dump(record, f, indent=1)
            tf.io.gfile.rename(self.file + ".tmp", self.file, overwrite=True)
        self._written = True


def _as_teacher_dtype(dtypes):
    """The `teacher_dtype` that loads a teacher with these variable dtypes ("float32,int8": int8)."""
    return "int8" if "int8" in dtypes.split(",") else dtypes


def _other_teacher(directory, recorded, path, fingerprint, dtypes):
    """The one-line error of checkpoints written with another teacher than this run's."""
    was, was_dtypes = recorded.get("teacher") or "", recorded.get("dtypes") or "?"
    head = (f"checkpoints in {directory} were written with teacher {was or '(not recorded)'} "
            f"(fingerprint {str(recorded.get('fingerprint'))[:8]}, {was_dtypes})")
    fix = f"pass --config.teacher={was}" if was else "pass the teacher they were written with"
    if was and was == path:
        fix = (f"pass --config.teacher_dtype={_as_teacher_dtype(was_dtypes)}"
               if was_dtypes != dtypes
               else f"restore the weights of {was} that they were written with")
    ours = f"teacher {path}" if path else "teacher"
    return LaunchError(f"{head}; this run's {ours} differs ({fingerprint[:8]}, {dtypes}): {fix},"
                       f" or move {directory} away to train from step 0.")


def flat(tree, prefix=""):
    """A nested state tree as {"a/b/c": value} (Keras state-tree paths)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def nest(flat):
    """The inverse of `flat`."""
    out = {}
    for path, value in flat.items():
        *parents, last = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out
