"""Config -> objects for the launch modes: preset checks and loading, students, recipes with loss
weights, Distillers, optimizers, task specs and task data, savers. Every mode, the launch checks
(`validate`) and the dispatcher import this; it imports no mode (one-way: builders <- modes <- main).
A mistake in what the config names is a one-line `LaunchError` here, where the object is built."""

from __future__ import annotations

import io
import json
import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tinybert_tf.data.task_batches import count_batches
from tinybert_tf.distill import distiller as distiller_lib
from tinybert_tf.distill import dtypes, heads, optim, recipes, students
from tinybert_tf.errors import LaunchError, first_line
from tinybert_tf.export import hf_load
from tinybert_tf.launch import distribution, hardware
from tinybert_tf.launch.strategy import steps_per_execution


def check_preset(path, what):
    """A teacher/student preset: a directory with a keras-hub `config.json` or a Hugging Face one
    (`hf_load`), a keras-hub preset name, or a handle with a scheme (hf://, kaggle://, gs://:
    checked when loaded); anything else is a one-line error naming `what` (the config key).
    Returns `path`."""
    if not path:
        raise LaunchError(f"No {what} given; pass --config.{what}=<keras-hub preset name or dir>.")
    if "://" in path:
        return path
    if tf.io.gfile.isdir(path):
        backbone_config(path, what)
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


def backbone_config(path, what="preset"):
    """The backbone config of a preset directory `path`: `config.json`'s "config", or for a
    Hugging Face dir keras-hub's conversion of it (`hf_load.backbone_config`, which refuses a
    model it cannot load); a directory without a readable config.json is a one-line error."""
    config = os.path.join(path, "config.json")
    if not tf.io.gfile.exists(config):
        raise LaunchError(
            f"{what} {path} is a directory but not a keras-hub preset (no config.json); pass "
            "a preset dir (e.g. the `student`/`teacher` dir a run wrote), a Hugging Face model "
            "dir or a preset name.")
    try:
        with tf.io.gfile.GFile(config) as f:
            found = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise LaunchError(f"{what} {config} is not valid JSON ({err}).") from None
    if hf_load.is_hf_config(found):
        return hf_load.backbone_config(path, what, found)
    return found.get("config", {}) if isinstance(found, dict) else {}


def load_tokenizer(preset):
    """The tokenizer of a teacher preset (of a BERT Hugging Face dir as transformers reads it,
    `hf_load.load_tokenizer`); one that does not load is a one-line error."""
    check_preset(preset, "teacher")
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
    check_preset(preset, what)
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
    check_preset(preset, what)
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
    check_preset(preset, what)
    return dtypes.load_preset(keras_hub.models.Backbone, preset)


def set_dropout(model, rate):
    """Set every Dropout rate of a student (config `student_dropout`); returns the model."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
    return model


def make_recipe(name, layer_map="", loss_weights="", **overrides):
    """A recipe with the config's layer map ("" keeps the recipe's, else uniform | last | 1,2,4,5)
    and loss weights ("term=weight,..." replaces or adds terms; weight 0 drops a term)."""
    if layer_map in ("uniform", "last"):
        overrides["layer_map"] = layer_map
    elif layer_map:
        overrides["layer_map"] = tuple(int(i) for i in str(layer_map).split(","))
    weights = dict(overrides.pop("weights", None) or recipes.get(name).weights)
    if loss_weights:
        for item in str(loss_weights).split(","):
            term, _, value = item.partition("=")  # no "=" leaves value "", which float() refuses
            try:
                weights[term.strip()] = float(value)
            except ValueError:
                raise LaunchError(f"loss_weights item {item!r} is not term=number, e.g. "
                                  "'att=0.5,pooled_rel=10'.") from None
    overrides["weights"] = {t: w for t, w in weights.items() if w != 0}
    try:
        return recipes.get(name, **overrides)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def _relation_kwargs(relation_heads, teacher_layer=-1):
    """Recipe overrides for a config's `relation_heads` (0 keeps the recipe's) and MiniLM's
    `teacher_layer` (-1, the last, is the recipe's)."""
    out = {"relation_heads": int(relation_heads)} if relation_heads else {}
    return {**out, "teacher_layer": int(teacher_layer)} if int(teacher_layer) != -1 else out


def config_recipe(c, stage="general", regression=False):
    """The recipe a step of config `c` trains with: general distillation's (`recipe`, `layer_map`,
    `loss_weights`, `relation_heads`, `teacher_layer`), task distillation's `intermediate` step (its `recipe` and
    `relation_heads`, the config's `layer_map`) or its `prediction` step (soft targets at
    `prediction.temperature` plus `prediction.hard_weight` x the labels; MSE when `regression`)."""
    if stage == "general":
        return make_recipe(c.recipe, c.layer_map, c.loss_weights,
                           **_relation_kwargs(c.relation_heads, c.teacher_layer))
    if stage == "intermediate":
        return make_recipe(c.intermediate.recipe, c.layer_map,
                           **_relation_kwargs(c.intermediate.relation_heads))
    p = c.prediction
    return make_recipe("tinybert_task_prediction", regression=regression,
                       temperature=p.temperature,
                       weights={"pred": 1.0, "hard": float(p.hard_weight)})


def masked_lm(recipe):
    """Does general distillation with `recipe` train masked-LM models (teacher and student with
    their LM heads)? Yes when a term reads the LM's logits or its labels (`kd`, `mlm`)."""
    return "mlm" in recipe.weights or "kd" in recipe.weights


def check_fit(recipe, teacher, student):
    """`distiller.check_fit` of `recipe` on a teacher and a student (`distiller.Shape`s): the
    layer map; a recipe that cannot pair them is a one-line error."""
    try:
        return distiller_lib.check_fit(recipe, teacher, student)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def make_distiller(teacher, student, recipe):
    """A `Distiller` of `teacher` into `student` with `recipe`, checked first (`check_fit`) so
    that a layer map, head count or width that does not fit is a one-line error."""
    check_fit(recipe, distiller_lib.Shape.of(teacher), distiller_lib.Shape.of(student))
    return distiller_lib.Distiller(teacher, student, recipe)


def compile_model(model, strategy, c, total_steps, stage=None, **kwargs):
    """Compile with the config's optimizer; a task stage's learning rate replaces the global."""
    dtypes.check_trainable(model)
    o = c.optimizer
    lr = stage.learning_rate if stage is not None else o.learning_rate
    model.compile(
        optimizer=optim.make_optimizer(o.name, lr, total_steps, o.warmup_fraction,
                                       o.weight_decay, o.clipnorm),
        jit_compile=hardware.jit_value(c.jit_compile) is True,
        steps_per_execution=steps_per_execution(strategy, c.steps_per_execution),
        **kwargs,
    )


# ---- tasks --------------------------------------------------------------------------------------

def task_spec(c):
    """The config's TaskSpec: a TASKS name, or task='file' read from data.* (CoNLL token files
    with data.format=conll), its metrics led by data.metric (`tasks.with_metric`). A mistyped
    data.tsv_quoting is a one-line error for every task: transfer .tsv files read it too."""
    from tinybert_tf.data import conll_files, task_files, tasks

    d = c.data
    tsv_quoting = task_files.check_tsv_quoting(d.tsv_quoting)
    kind = conll_files.file_kind(c.task, d.format, d.regression, d.text_b_column)
    if c.task != "file":
        spec = tasks.get_task(c.task)
    elif kind == "token_classification":
        spec = tasks.load_conll_task(
            d.train_file, d.eval_file or None, d.test_file or None, name="file",
            label_column=d.label_column, skip_bad_rows=d.skip_bad_rows)
    else:
        spec = tasks.load_file_task(
            d.train_file, d.eval_file or None, d.test_file or None, name="file",
            text_column=d.text_column, text_b_column=d.text_b_column or None,
            label_column=d.label_column, regression=d.regression, skip_bad_rows=d.skip_bad_rows,
            tsv_quoting=tsv_quoting,
        )
    return tasks.with_metric(spec, d.metric, d.positive_label)


def buckets(c):
    """Length buckets from `data.buckets` ("16,32,64"), none on a TPU (one static shape: a
    resolved config's `device_kind`, TF or JAX, or strategy tpu)."""
    text = str(c.data.buckets).strip()
    if c.strategy == "tpu" or c.get("device_kind") == "tpu" or not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise LaunchError(f"data.buckets={text!r} is not a comma-separated list of lengths, "
                          "e.g. '16,32,64,128'; '' pads every batch to seq_len.") from None


def task_data(c, spec, split, tokenizer, training, extra=None, repeat=None, count=False,
              **kwargs):
    """Batched task data; training batches shuffle (seeded), drop the remainder and repeat
    (`repeat=False`: one epoch of them, as trained). Data read once (`training=False`) carries
    its batch count as its cardinality, so Keras' predict / evaluate stop at its end instead of
    running into it ("Your input ran out of data", a warning at every evaluation).
    count (training data): return `(dataset, epoch_batches)`, the split read once for both.
    kwargs pass through to `tasks.task_dataset` (e.g. a transfer set's `extra_examples`)."""
    from tinybert_tf.data import tasks

    dataset = tasks.task_dataset(
        spec, split, tokenizer, seq_len=c.data.seq_len, batch_size=c.batch_size,
        shuffle=training, seed=c.seed, data_dir=c.data.tfds_data_dir or None,
        drop_remainder=training, repeat=training if repeat is None else repeat, extra=extra,
        buckets=buckets(c), count=training and count, **kwargs,
    )
    if training:
        return (dataset[0], _check_steps(c, dataset[1])) if count else dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(count_batches(dataset)))


def truncation_counts(c, spec, tokenizer):
    """{split: `truncation.count`} of every split of the task at data.seq_len, each printed as
    "train: N of M texts cut at 64 tokens (longest K)"."""
    from tinybert_tf.data import tasks, truncation

    records = {}
    for split in (spec.train_split, *spec.eval_splits, *spec.test_splits):
        examples = tasks.split_examples(spec, split, c.data.tfds_data_dir or None)
        records[split] = truncation.count(examples, spec, tokenizer, c.data.seq_len)
        print(truncation.line(split, records[split]))
    return records


def epoch_batches(c, spec, split, tokenizer, **kwargs):
    """Training steps per epoch: the batches of the training pipeline's first epoch (shuffled,
    length-bucketed, the remainder dropped, as trained), counted over one pass. Every epoch has
    as many (each bucket drops its own remainder, whatever the order), so with buckets an epoch
    has fewer steps than `ceil(rows / batch_size)`; the stage plan, its learning-rate schedule
    and the steps it runs are this times the epochs. kwargs: as `task_data`'s."""
    return task_data(c, spec, split, tokenizer, training=True, repeat=False, count=True,
                     **kwargs)[1]


def _check_steps(c, steps):
    if steps == 0:
        raise LaunchError(f"the training data gives no full batch of batch_size {c.batch_size} "
                          "(the last partial batch of each length bucket is dropped); lower "
                          "--config.batch_size or add rows.")
    return steps


# ---- savers -------------------------------------------------------------------------------------


PROJECTIONS_FILE = "projections.npz"


def save_model(model, tokenizer, path, projections=(), optimizer=None):
    """A student backbone or task model + tokenizer as a keras-hub preset dir, weights only
    (no training state), storing a plain float dtype (`dtypes.save_preset`); `projections` (a
    Distiller's `projections`: its student->teacher width projections, keras Dense layers) go
    beside it in `projections.npz` (`load_projections`).

    A keras-hub task loaded from a preset is compiled with its class's default optimizer, whose
    two variables (step, learning rate) it loads from `task.weights.h5`; a file without them makes
    every `from_preset` warn ("Skipping variable loading for optimizer ..."). So the task is saved
    with that default optimizer as it is before any step: `optimizer` (the one the task was
    compiled with on load, before a training compile replaced it) or the model's own while it is
    unbuilt (never trained: a student inside a Distiller); a trained one is never written.
    In a multi-process run only the chief writes (`distribution.is_chief`); every process
    returns `path`."""
    if not distribution.is_chief():
        return path
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
        _write_projections(projections, os.path.join(path, PROJECTIONS_FILE))
    print(f"Saved {type(model).__name__} to {path}")
    return path


def _write_projections(projections, path):
    """Dense layers -> an .npz file with one array per weight, keyed `<layer name>/<weight name>`
    (e.g. `projection_0/kernel`), in layer order."""
    buffer = io.BytesIO()  # zipfile seeks, which a write-only GFile does not allow
    np.savez(buffer, **{f"{p.name}/{w.name}": w.numpy() for p in projections for w in p.weights})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def load_projections(preset_dir):
    """The width projections `save_model` wrote beside a student: built keras Dense layers with
    the saved names and weights, in the saved order; [] when the preset dir has none."""
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
