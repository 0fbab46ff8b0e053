"""Config values -> models for the launch modes: the teacher's tokenizer, teachers and task
models loaded from presets (keras-hub or Hugging Face dirs), students, Distillers, the compiled
optimizer, and saving a model as a preset in a multi-process run.

Preset checks and preset files are `distill.presets`; recipe strings are `config_lib`; task
data is `task_data`. The loaders do not check their preset again: every caller checked it once
(`validate` before a training run's claim, `evaluate_mode` and `export_mode` first thing,
`check_preset`). A model that does not load is a one-line `LaunchError` here."""

from __future__ import annotations

import keras
import keras_hub

from tinybert_tf.distill import distiller as distiller_lib
from tinybert_tf.distill import dtypes, heads, optim, presets, students
from tinybert_tf.errors import LaunchError, first_line
from tinybert_tf.export import hf_load
from tinybert_tf.launch import distribution, hardware
from tinybert_tf.launch.strategy import steps_per_execution


def check_preset(path, what):
    """`presets.check_preset`, and for a Hugging Face dir its model too: one keras-hub cannot
    load (`hf_load.backbone_config`) is a one-line error naming what loads. Returns `path`."""
    presets.check_preset(path, what)
    if hf_load.is_hf_dir(path):
        backbone_config(path, what)
    return path


def backbone_config(path, what="preset"):
    """The backbone config of a preset directory `path`: `config.json`'s "config", or for a
    Hugging Face dir keras-hub's conversion of it (`hf_load.backbone_config`, which refuses a
    model it cannot load); a directory without a readable config.json is a one-line error.

    Args:
        path: a preset directory.
        what: the config key that named it, for the error.
    Returns:
        The keras-hub backbone config dict ({} when the file holds none)."""
    found = presets.read_config(path, what)
    if presets.is_hf_config(found):
        return hf_load.backbone_config(path, what, found)
    return found.get("config", {}) if isinstance(found, dict) else {}


def load_tokenizer(preset):
    """The tokenizer of a teacher preset (of a BERT Hugging Face dir as transformers reads it,
    `hf_load.load_tokenizer`); one that does not load is a one-line error."""
    if hf_load.is_bert_dir(preset):
        return hf_load.load_tokenizer(preset)
    try:
        return keras_hub.tokenizers.Tokenizer.from_preset(preset)
    except (ValueError, OSError) as err:  # a broken preset dir; no network for a preset name
        raise LaunchError(
            f"teacher {preset}: its tokenizer does not load ({first_line(err)}).") from None


def load_task_model(preset, what="model"):
    """The task model a run saved in `preset` (`heads.load_task_model`: a text classifier,
    regressor or token classifier), or a Hugging Face task dir's (`hf_load`, head and all); a
    preset that holds none is a one-line error."""
    if hf_load.is_hf_dir(preset):
        return dtypes.load_preset(hf_load.TaskLoader(what=what), preset)
    try:
        return heads.load_task_model(preset, what)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def load_classifier(preset, num_classes=None, what="teacher", token_level=False, dtype=""):
    """A keras-hub text classifier (or, with `token_level`, a `heads.TokenClassifier`) from a
    preset or a Hugging Face dir (`hf_load`: its pooler and classifier head included); a new head
    on the preset's backbone when `num_classes` is given. `dtype` (e.g. "bfloat16" for a frozen
    teacher) replaces the run's policy for this model; whatever policy the preset stores, the
    model gets this one (`dtypes.load_preset`)."""
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    if hf_load.is_bert_dir(preset) or (num_classes is None and hf_load.is_hf_dir(preset)):
        cls = hf_load.TaskLoader(token_level, what)
    else:
        cls = heads.TokenClassifier if token_level else keras_hub.models.TextClassifier
    return dtypes.load_preset(cls, preset, dtype, preprocessor=None, **kwargs)


def new_task_model(spec, backbone):
    """A fresh head for the task on `backbone`: token classifier (NER) or text classifier."""
    if spec.kind == "token_classification":
        return heads.TokenClassifier(backbone, spec.num_classes, preprocessor=None)
    return keras_hub.models.BertTextClassifier(backbone, num_classes=spec.num_classes,
                                               preprocessor=None)


def student_backbone(spec, teacher):
    """`spec`: a students.PRESETS name, `from_teacher:N`, or a preset dir (general-distilled)."""
    if spec.startswith("from_teacher:"):
        return students.init_from_teacher(teacher, int(spec.split(":", 1)[1]))
    if spec in students.PRESETS:
        return students.build(spec, teacher=teacher)
    return load_backbone(spec, "student")


def load_backbone(preset, what="teacher"):
    """The backbone of a preset dir (a task preset's too) or a Hugging Face dir, in the run's
    policy (`dtypes.load_preset`)."""
    return dtypes.load_preset(keras_hub.models.Backbone, preset)


def set_dropout(model, rate):
    """Set every Dropout rate of a student (config `student_dropout`); returns the model."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
    return model


def check_fit(recipe, teacher, student):
    """`distiller.check_fit` of `recipe` on a teacher and a student (`distiller.Shape`s, e.g.
    read from their presets' configs before anything loads); a recipe that cannot pair them is
    a one-line error. Returns the layer map."""
    try:
        return distiller_lib.check_fit(recipe, teacher, student)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def make_distiller(teacher, student, recipe):
    """A `Distiller` of `teacher` into `student` with `recipe`; the Distiller checks the fit
    (`distiller.check_fit`), so a layer map, head count or width that does not fit is a one-line
    error."""
    try:
        return distiller_lib.Distiller(teacher, student, recipe)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def compile_model(model, strategy, config, total_steps, learning_rate, **kwargs):
    """Compile `model` for a stage of `total_steps` steps at `learning_rate` (general
    distillation's `optimizer.learning_rate`, a task stage's own) with the config's optimizer,
    `jit_compile` ("auto" resolved) and `steps_per_execution`; kwargs: a task model's loss and
    metrics."""
    dtypes.check_trainable(model)
    o = config.optimizer
    model.compile(
        optimizer=optim.make_optimizer(o.name, learning_rate, total_steps, o.warmup_fraction,
                                       o.weight_decay, o.clipnorm),
        jit_compile=hardware.jit_value(config.jit_compile) is True,
        steps_per_execution=steps_per_execution(strategy, config.steps_per_execution),
        **kwargs,
    )


def save_model(model, tokenizer, path, projections=(), optimizer=None):
    """`presets.save_preset` of a student or task model with its tokenizer (and the Distiller's
    `projections`), written by the chief alone in a multi-process run (`distribution.is_chief`)
    and said in one line; every process returns `path`."""
    if not distribution.is_chief():
        return path
    presets.save_preset(model, tokenizer, path, projections, optimizer)
    print(f"Saved {type(model).__name__} to {path}")
    return path


def train_settings(config, head=None):
    """The training loop's `train.Settings` of `config` (log_every, checkpoint_every,
    keep_checkpoints, stall_intervals, the teacher recorded beside checkpoints) and `head`,
    the records heading the stage's metrics.jsonl."""
    from tinybert_tf.launch import train

    return train.Settings(int(config.log_every), int(config.checkpoint_every),
                          int(config.keep_checkpoints), int(config.stall_intervals),
                          str(config.get("teacher", "")), dict(head or {}))
