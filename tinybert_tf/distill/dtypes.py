"""Dtype policies of what the package builds, loads and saves (the precision rule, in one place).

* Trainable weights (students, heads, projections) are float32 under every policy; computation
  follows the run's policy (`mixed_bfloat16`, `mixed_float16`, `float32`). Only a frozen teacher
  may be pure `bfloat16`, or float32 with int8 kernels (`load_preset(..., "int8")`,
  `quantize`). `check_trainable` refuses anything else before training starts.
* Presets store a plain float dtype (`save_preset`): the run's precision is a run setting
  (config.json), not a property of the weights, so plain `keras_hub ... from_preset(dir)` loads
  them anywhere. A stored `mixed_*` policy (what Keras writes under a mixed policy, and what
  keras-hub's `from_preset` refuses without an explicit `dtype=`) becomes its variable dtype.
* `load_preset` always passes an explicit dtype policy (the run's, unless told), so presets that
  already hold `mixed_*` load too, and a student loaded for training is float32 + the run's compute.
"""

from __future__ import annotations

import json
import os

import keras

from tinybert_tf.distill import quantize
from tinybert_tf.errors import UserError, first_line

INT8 = "int8"  # the teacher_dtype of a frozen teacher with int8 kernels (`quantize`)

# The preset files keras-hub writes whose JSON can hold a layer's dtype policy.
_CONFIG_FILES = ("config.json", "task.json")
_FLOAT_VARIABLES = ("float32", "float64")


def run_policy():
    """Name of the global Keras dtype policy (the run's precision), e.g. "mixed_bfloat16"."""
    return keras.config.dtype_policy().name


def load_preset(cls, preset, dtype=None, **kwargs):
    """`cls.from_preset(preset, dtype=..., **kwargs)` with an explicit dtype policy: `dtype`
    (e.g. "bfloat16" for a frozen teacher), else the run's. Works for presets storing any policy.
    `dtype="int8"` (a frozen teacher only): loaded in float32, then its kernels quantised to int8
    with the fidelity to the float32 ones printed (`quantize.quantize_checked`)."""
    if dtype == INT8:
        model = _from_preset(cls, preset, dtype="float32", **kwargs)
        quantize.quantize_checked(model)
        return model
    return _from_preset(cls, preset, dtype=dtype or run_policy(), **kwargs)


def _from_preset(cls, preset, **kwargs):
    """`cls.from_preset`; a weights file that h5py cannot read (truncated by an interrupted copy
    or upload, overwritten) is a one-line error naming it instead of h5py's traceback."""
    try:
        return cls.from_preset(preset, **kwargs)
    except OSError as err:
        damaged = damaged_weights(preset)
        if damaged is None:
            raise
        raise UserError(f"{damaged[0]} is damaged ({damaged[1]}); copy the preset again, or "
                        "re-run the run that wrote it.") from err


def damaged_weights(preset):
    """(path, reason) of the first `*.weights.h5` of a local preset dir h5py cannot open, or
    None (all readable, or not a local dir)."""
    import h5py

    if not isinstance(preset, str) or not os.path.isdir(preset):
        return None
    for name in sorted(os.listdir(preset)):
        if not name.endswith(".weights.h5"):
            continue
        path = os.path.join(preset, name)
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as err:
            return path, first_line(err)
    return None


def plain_policy(value):
    """A serialized dtype policy with `mixed_*` replaced by its variable dtype (float32);
    other values unchanged. Accepts a policy name or Keras' serialized `DTypePolicy` dict."""
    if isinstance(value, str) and value.startswith("mixed_"):
        return keras.DTypePolicy(value).variable_dtype
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        name = value.get("config", {}).get("name", "")
        if isinstance(name, str) and name.startswith("mixed_"):
            return {**value, "config": {**value["config"], "name": plain_policy(name)}}
    return value


def _plain_tree(node):
    if isinstance(node, dict):
        return {k: plain_policy(_plain_tree(v)) if k == "dtype" else _plain_tree(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_plain_tree(v) for v in node]
    return node


def plain_preset_configs(preset_dir):
    """Rewrite a preset dir's config.json / task.json so every stored dtype policy is a plain
    float dtype (`plain_policy`). Returns the files changed."""
    import tensorflow as tf

    changed = []
    for name in _CONFIG_FILES:
        path = os.path.join(preset_dir, name)
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path) as f:
            config = json.load(f)
        plain = _plain_tree(config)
        if plain != config:
            with tf.io.gfile.GFile(path, "w") as f:
                f.write(json.dumps(plain, indent=4))
            changed.append(name)
    return changed


def save_preset(model, preset_dir):
    """`model.save_to_preset(preset_dir)` storing a plain float dtype (see module doc)."""
    model.save_to_preset(preset_dir)
    plain_preset_configs(preset_dir)
    return preset_dir


def low_precision_trainables(model):
    """[(variable path, dtype)] of `model`'s trainable variables that are not float32/float64."""
    found = []
    for v in model.trainable_variables:
        dtype = keras.backend.standardize_dtype(v.dtype)
        if dtype not in _FLOAT_VARIABLES:
            found.append((getattr(v, "path", v.name), dtype))
    return found


def check_trainable(model):
    """Refuse trainable variables below float32 (AdamW updates of their size round away, so the
    run would train nothing) with a one-line ValueError naming the first and the fix."""
    bad = low_precision_trainables(model)
    if bad:
        path, dtype = bad[0]
        raise ValueError(
            f"{len(bad)} trainable variables are {dtype} (first: {path}); trainable weights must "
            "be float32: build students and heads without a low-precision dtype= (a mixed_* "
            "policy keeps variables float32); only a frozen teacher may be bfloat16.")
