"""The config's `teacher` as a list of preset dirs: one teacher or an ensemble.

`--config.teacher` takes a preset (dir or keras-hub name), several comma-separated, globs
(`runs/t*/teacher`), or a directory holding `members.txt` (what `finetune` with
`finetune.members > 1` writes: one member dir name per line) which stands for all its members.
Members of an ensemble must read the same token ids and predict the same labels
(`check_compatible`, before the workdir is claimed).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tinybert_tf.errors import LaunchError
from tinybert_tf.export import hf_load
from tinybert_tf.export.labels import LABELS_FILE, preset_labels

MEMBERS_FILE = "members.txt"
_GLOB = "*?["


def _members(directory):
    path = os.path.join(directory, MEMBERS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        names = [line.strip() for line in f if line.strip()]
    return [os.path.join(directory, name) for name in names]


def resolve(value):
    """`config.teacher` -> [preset dir or name, ...] in the order given (globs sorted)."""
    found = []
    for item in (p.strip() for p in str(value or "").split(",") if p.strip()):
        if any(ch in item for ch in _GLOB):
            matched = sorted(m for m in tf.io.gfile.glob(item) if tf.io.gfile.isdir(m))
            if not matched:
                raise LaunchError(f"teacher: no directory matches {item!r}; check the path.")
        else:
            matched = [item]
        for path in matched:
            found += _members(path) or [path]
    if not found:
        raise LaunchError("No teacher given; pass --config.teacher=<preset dir or name>, or "
                          "several comma-separated for an ensemble.")
    return found


def one(value, mode):
    """The single teacher of a mode that distils from one (general distillation, finetune's
    starting preset); several is a one-line error."""
    dirs = resolve(value)
    if len(dirs) > 1:
        raise LaunchError(f"{mode} takes one teacher, got {len(dirs)} ({', '.join(dirs)}); "
                          "ensembles are for task_distill and evaluate.")
    return dirs[0]


def write_members(directory, names):
    """`directory/members.txt` naming the member dirs (relative to `directory`), one per line."""
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, MEMBERS_FILE), "w") as f:
        f.write("".join(f"{name}\n" for name in names))


def label_order(directory, task_labels, what="teacher"):
    """How the task model in `directory` maps to the task's labels, by name (its `labels.txt` or
    Hugging Face `id2label`): None when it lists the task's labels in the task's order or carries
    no names; its class index of each task label when it lists the same labels in another order
    (said in one line; `heads.reorder_classes` applies it); a LaunchError when its labels differ.
    """
    names = preset_labels(directory)
    task_labels = list(task_labels or ())
    if not names or not task_labels or names == task_labels:
        return None
    if sorted(names) != sorted(task_labels) or len(set(names)) != len(names):
        raise LaunchError(
            f"{what} {directory} is labelled {_short('labels', names)} but the task's labels are "
            f"{_short('labels', task_labels)}; pass a {what} fine-tuned on this task's labels (its "
            f"{LABELS_FILE} or id2label names them).")
    print(f"{what} {directory}: the task's labels in another order ({', '.join(names)}); its "
          f"outputs are remapped by name to the task's ({', '.join(task_labels)}).")
    return [names.index(label) for label in task_labels]


def label_orders(dirs, task_labels):
    """{dir: label_order} of every teacher, checked before any is loaded; a teacher without a
    task head (a backbone preset: no task.json, a Hugging Face dir without labels) is a
    LaunchError naming the fine-tuning step."""
    for path in dirs:
        if not _has_head(path):
            raise LaunchError(
                f"teacher {path} has no task head (a backbone preset); task distillation needs a "
                "teacher fine-tuned on the task: run mode=finetune (tinybert_tf.finetune) with "
                "it first and pass that run's <workdir>/teacher.")
    return {path: label_order(path, task_labels) for path in dirs}


def _has_head(directory):
    if hf_load.is_hf_dir(directory):
        return hf_load.label_names(directory) is not None
    return tf.io.gfile.exists(os.path.join(directory, "task.json"))


def _num_classes(directory):
    if hf_load.is_hf_dir(directory):
        names = hf_load.label_names(directory)
        return None if names is None else len(names)
    path = os.path.join(directory, "task.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f).get("config", {}).get("num_classes")


def _tokenizer_identity(directory):
    from tinybert_tf.launch import builders

    tokenizer = builders.load_tokenizer(directory)
    config = {k: v for k, v in tokenizer.get_config().items() if k not in ("name", "dtype")}
    return type(tokenizer).__name__, tokenizer.get_vocabulary(), json.dumps(config, sort_keys=True,
                                                                           default=str)


def _short(name, value):
    if name == "tokenizer":
        return f"{value[0]}, {len(value[1])} tokens"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_compatible(dirs):
    """Every teacher of an ensemble has the first one's tokenizer (class, vocabulary, settings),
    number of classes and label names; otherwise a one-line LaunchError naming the difference."""
    if len(dirs) < 2:
        return
    first = dirs[0]
    facts = {"tokenizer": _tokenizer_identity, "number of classes": _num_classes,
             "label names": preset_labels}
    reference = {name: read(first) for name, read in facts.items()}
    for other in dirs[1:]:
        for name, read in facts.items():
            mine, theirs = reference[name], read(other)
            if name == "label names" and (mine is None or theirs is None):
                continue  # presets not written by finetune carry no label names
            if mine != theirs:
                raise LaunchError(f"teachers {first} and {other} differ in their {name} "
                                  f"({_short(name, mine)} vs {_short(name, theirs)}); an "
                                  "ensemble's teachers must be fine-tuned on the same task from "
                                  "presets with the same tokenizer.")
