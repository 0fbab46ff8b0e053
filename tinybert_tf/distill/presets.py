"""Preset directories: what a teacher/student path names, and writing a model back as one.

A preset is a keras-hub preset directory (`config.json` with a keras "registered_name"), a
Hugging Face model directory (`config.json` with "model_type", read by `export.hf_load`), a
keras-hub preset name, or a handle with a scheme (hf://, kaggle://, gs://). `check_preset`
tells them apart before anything loads; `save_preset` writes a student or task model with its
tokenizer and the Distiller's width projections (`projections.npz`), which `load_projections`
reads back. Loading with a dtype policy is `dtypes.load_preset`'s job; examples and tools read
presets through this module, not through the launcher.
"""

from __future__ import annotations

import io
import json
import os

import keras
import numpy as np

from tinybert_tf.distill import dtypes
from tinybert_tf.errors import LaunchError

PROJECTIONS_FILE = "projections.npz"


def is_hf_config(config) -> bool:
    """Is a parsed `config.json` a transformers one (keras-hub's rule: "model_type" and no
    keras "registered_name")?"""
    return isinstance(config, dict) and "model_type" in config and "registered_name" not in config


def check_preset(path, what):
    """A teacher/student preset: a directory with a keras-hub or a Hugging Face `config.json`
    (`read_config`), a keras-hub preset name, or a handle with a scheme (checked when loaded);
    anything else is a one-line error naming `what` (the config key). Returns `path`."""
    import keras_hub
    import tensorflow as tf

    if not path:
        raise LaunchError(f"No {what} given; pass --config.{what}=<keras-hub preset name or dir>.")
    if "://" in path:
        return path
    if tf.io.gfile.isdir(path):
        read_config(path, what)
        return path
    if tf.io.gfile.exists(path):
        raise LaunchError(f"{what} {path} is a file; pass a keras-hub preset directory or name.")
    if os.sep in path or path.startswith("."):
        raise LaunchError(
            f"{what} path {path} does not exist; pass --config.{what}=<keras-hub preset name or "
            "preset dir> (e.g. the `student`/`model` dir a previous run wrote).")
    if path not in keras_hub.models.Backbone.presets:
        raise LaunchError(
            f"{what} {path!r} is neither a directory nor a keras-hub preset name; pass a preset "
            "dir or a name such as bert_tiny_en_uncased (keras_hub.models.Backbone.presets).")
    return path


def read_config(path, what="preset"):
    """The parsed `config.json` of a preset directory `path` (keras-hub's or a Hugging Face
    one); a directory without a readable one is a one-line error."""
    import tensorflow as tf

    config = os.path.join(path, "config.json")
    if not tf.io.gfile.exists(config):
        raise LaunchError(
            f"{what} {path} is a directory but not a keras-hub preset (no config.json); pass "
            "a preset dir (e.g. the `student`/`teacher` dir a run wrote), a Hugging Face model "
            "dir or a preset name.")
    try:
        with tf.io.gfile.GFile(config) as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise LaunchError(f"{what} {config} is not valid JSON ({err}).") from None


def save_preset(model, tokenizer, path, projections=(), optimizer=None):
    """A student backbone or task model + tokenizer as a keras-hub preset dir, weights only (no
    training state), storing a plain float dtype (`dtypes.save_preset`); `projections` (a
    Distiller's student->teacher width projections, keras Dense layers) go beside it in
    `projections.npz` (`load_projections`). Returns `path`.

    A keras-hub task loaded from a preset is compiled with its class's default optimizer, whose
    two variables (step, learning rate) it loads from `task.weights.h5`; a file without them makes
    every `from_preset` warn ("Skipping variable loading for optimizer ..."). So the task is saved
    with that default optimizer as it is before any step: `optimizer` (the one the task was
    compiled with on load, before a training compile replaced it) or the model's own while it is
    unbuilt (never trained: a student inside a Distiller); a trained one is never written."""
    own = getattr(model, "optimizer", None)
    if optimizer is None and own is not None and not own.built:
        optimizer = own
    if own is not None or optimizer is not None:
        model.optimizer = optimizer
    try:
        dtypes.save_preset(model, path)
    finally:
        if own is not None or optimizer is not None:
            model.optimizer = own
    tokenizer.save_to_preset(path)
    if projections:
        write_projections(projections, os.path.join(path, PROJECTIONS_FILE))
    return path


def write_projections(projections, path):
    """Dense layers -> an .npz file with one array per weight, keyed `<layer name>/<weight name>`
    (e.g. `projection_0/kernel`), in layer order."""
    import tensorflow as tf

    buffer = io.BytesIO()  # zipfile seeks, which a write-only GFile does not allow
    np.savez(buffer, **{f"{p.name}/{w.name}": w.numpy() for p in projections for w in p.weights})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def load_projections(preset_dir):
    """The width projections `save_preset` wrote beside a student: built keras Dense layers with
    the saved names and weights, in the saved order; [] when the preset dir has none."""
    import tensorflow as tf

    path = os.path.join(preset_dir, PROJECTIONS_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as data:
        arrays = {key: data[key] for key in data.files}
    names = list(dict.fromkeys(key.split("/", 1)[0] for key in arrays))
    layers = []
    for name in names:
        kernel = arrays[f"{name}/kernel"]
        layer = keras.layers.Dense(kernel.shape[1], name=name)
        layer.build((None, None, kernel.shape[0]))
        layer.set_weights([arrays[f"{name}/{w.name}"] for w in layer.weights])
        layers.append(layer)
    return layers
