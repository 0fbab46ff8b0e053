"""What each launch mode builds: teacher, student, data, Distiller; then `train.run`.

Models, optimizers and projections are created under `strategy.scope()`; data is built outside.
"""

from __future__ import annotations

import os

import keras
import keras_hub
import tensorflow as tf

from tinybert_tf.distill import dtypes, students
from tinybert_tf.distill.distiller import Distiller
from tinybert_tf.launch import builders as b
from tinybert_tf.launch import distribution, task_modes, teachers, train
from tinybert_tf.launch.strategy import LaunchError, check_batch_size

# ---- general distillation -----------------------------------------------------------------------


def general_distill(c, workdir, strategy):
    """TinyBERT general distillation (or DistilBERT) on unlabelled text; writes workdir/student."""
    from tinybert_tf.data import corpus, masking, shards

    check_batch_size(strategy, c.batch_size)
    teacher_dir = teachers.one(c.teacher, "general_distill")
    tokenizer = b.load_tokenizer(teacher_dir)
    recipe = b.make_recipe(c.recipe, c.layer_map, c.loss_weights,
                           **b.relation_kwargs(c.relation_heads))
    is_mlm = "mlm" in recipe.weights or "kd" in recipe.weights
    if not c.data.train:
        raise LaunchError("No corpus given; pass --config.data.train=<text files, globs or gs://>.")
    # drop_remainder=True on every strategy: static shapes for TPU, equal replica slices, exact resume.
    common = dict(batch_size=c.batch_size, shuffle_buffer=c.data.shuffle_buffer, seed=c.seed,
                  repeat=True, drop_remainder=True, deterministic=True)
    if c.data.format == "pretokenized":
        data = shards.pretokenized_dataset(c.data.train, seq_len=c.data.seq_len, **common)
    elif c.data.format == "text":
        data = corpus.corpus_dataset(c.data.train, tokenizer, seq_len=c.data.seq_len,
                                     doc_format=c.data.doc_format, **common)
    else:
        raise LaunchError(f"data.format must be 'text' or 'pretokenized', got {c.data.format!r}.")
    if is_mlm:
        data = masking.mask_dataset(data, tokenizer, mask_rate=c.data.mask_rate,
                                    whole_word=c.data.whole_word, seed=c.seed)
    with strategy.scope():
        if is_mlm:
            teacher = dtypes.load_preset(keras_hub.models.MaskedLM,
                                         b.check_preset(teacher_dir, "teacher"), c.teacher_dtype,
                                         preprocessor=None)
            student = keras_hub.models.BertMaskedLM(
                b.student_backbone(c.student, teacher), preprocessor=None
            )
        else:
            teacher = dtypes.load_preset(keras_hub.models.Backbone,
                                         b.check_preset(teacher_dir, "teacher"), c.teacher_dtype)
            student = b.student_backbone(c.student, teacher)
        b.set_dropout(student, c.student_dropout)
        distiller = Distiller(teacher, student, recipe)
        b.compile_model(distiller, strategy, c, c.steps)
    print(f"teacher {students.count_params(teacher):,} params -> student "
          f"{students.count_params(student):,} params; layer map {distiller.layer_map}")
    backbone = student.backbone if is_mlm else student
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "checkpoints"))
    if c.save_initial and fresh:
        b.save_model(backbone, tokenizer, os.path.join(workdir, "student_init"),
                     distiller.projections)
    task_modes.run_stage(distiller, data, workdir, c, c.steps, label="general_distill")
    return b.save_model(backbone, tokenizer, os.path.join(workdir, "student"),
                        distiller.projections)


# ---- export and dispatch -------------------------------------------------------------------------


def export_student(c, workdir, strategy=None):
    """Export mode: the student preset (default: this workdir's task-distilled student) to
    `<export.dir or workdir/export>/<model_name>/<version>/`, verified, with labels."""
    from tinybert_tf.export import publish

    e = c.export
    student = e.student or os.path.join(workdir, "prediction", "student")
    b.check_preset(student, "export.student")
    labels = None
    if c.task != "file" or c.data.train_file:
        labels = list(b.task_spec(c).label_names) or None
    report = publish.export(
        student, e.dir or os.path.join(workdir, "export"), model_name=e.model_name,
        version=e.version or None, labels=labels, text_signature=e.text_signature,
        hf_dir=os.path.join(workdir, "hf_checkpoint") if e.hf else None, tflite=e.tflite,
    )
    return report.path


def evaluate_mode(c, workdir, strategy=None):
    from tinybert_tf import evaluate

    return evaluate.run_from_config(c, workdir)


# mode name -> fn(config, workdir, strategy); evaluate and export read a run's outputs.
MODES = {
    "general_distill": general_distill,
    "task_distill": task_modes.task_distill,
    "finetune": task_modes.finetune,
    "evaluate": evaluate_mode,
    "export": export_student,
}
_READ_ONLY = ("evaluate", "export")


def run(config, workdir):
    """Run one mode of a resolved config; returns what the mode returns (e.g. a preset dir).

    Training modes are checked first (`validate.check_launch`: nothing is written when a check
    fails); then the workdir is claimed (`train.prepare_workdir` writes config.json). A user
    error after that but before training started un-claims it again (removes that config.json),
    so the fixed command is not refused as a different run.
    """
    from tinybert_tf import cli
    from tinybert_tf.launch import hardware, strategy, validate

    if keras.backend.backend() == "jax":
        hardware.keep_tf_on_cpu()  # before TF's first op
    if config.mode not in MODES:
        raise strategy.LaunchError(f"Unknown mode {config.mode!r}; use one of {', '.join(MODES)}.")
    if config.mode in _READ_ONLY:  # read a run's outputs; leave its config alone
        tf.io.gfile.makedirs(workdir)
        return _start(config, workdir, strategy.make(config))
    launch = validate.check_launch(config, workdir)
    chief = distribution.is_chief()  # a multi-process run: process 0 writes the workdir's files
    created = not tf.io.gfile.exists(workdir)
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "config.json"))
    train.prepare_workdir(workdir, config.to_dict(), overwrite=config.overwrite, write=chief)
    distribution.sync("tinybert_tf:workdir")  # config.json claimed before anything else
    try:
        return _start(config, workdir, launch.strategy, launch.corpus_scan if chief else None)
    except Exception as err:
        if chief and fresh and cli.user_message(err) is not None:
            _unclaim(workdir, created)
        raise


def _start(config, workdir, dist, corpus_scan=None):
    from tinybert_tf.launch import strategy, validate

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:  # TF's ops (on JAX: the tf.data pipeline's)
        tf.config.experimental.enable_op_determinism()
    config = resolve_auto(config)
    strategy.set_precision(config.precision)
    print(f"Keras backend {keras.backend.backend()}, strategy {strategy.name_of(dist)} with "
          f"{dist.num_replicas_in_sync} replicas.")
    if corpus_scan:
        validate.record_scan(corpus_scan, workdir)
    return MODES[config.mode](config, workdir, dist)


def _unclaim(workdir, created):
    """Remove the config.json this launch wrote (and the workdir it made, when empty again)
    unless training started: a checkpoint, TensorBoard logs or metrics.jsonl under workdir."""
    for _, dirs, files in tf.io.gfile.walk(workdir):
        if {"checkpoints", "tensorboard"} & set(dirs) or "metrics.jsonl" in files:
            return
    for name in ("config.json", "corpus_scan.json"):
        path = os.path.join(workdir, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    if created and not tf.io.gfile.listdir(workdir):
        tf.io.gfile.rmtree(workdir)


def resolve_auto(config):
    """A copy of `config` with precision / teacher_dtype / jit_compile "auto" resolved for this
    machine (`hardware.resolve`), printed in one line; the workdir keeps the config as given."""
    import ml_collections

    from tinybert_tf.launch import hardware

    backend = keras.backend.backend()
    precision, teacher_dtype, jit, reason = hardware.resolve(
        config.precision, config.teacher_dtype, config.jit_compile,
        hardware.device_kind(backend=backend), hardware.cpu_flags(), backend=backend)
    resolved = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    ignored = jit != hardware.as_bool(config.jit_compile) and config.jit_compile != "auto"
    resolved.precision, resolved.teacher_dtype, resolved.jit_compile = precision, teacher_dtype, jit
    if "auto" in (config.precision, config.teacher_dtype, config.jit_compile) or ignored:
        print(f"Hardware: {reason}")
    return resolved
