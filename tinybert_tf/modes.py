"""What each launch mode builds: teacher, student, data, Distiller; then `train.run`.

Models, optimizers and projections are created under `strategy.scope()`; data is built outside.
"""

from __future__ import annotations

import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from tinybert_tf import optim, recipes, students, train
from tinybert_tf.distiller import Distiller
from tinybert_tf.strategy import LaunchError, check_batch_size, steps_per_execution


def check_preset(path, what):
    """A local preset path that does not exist is a one-line error (preset names pass through)."""
    if not path:
        raise LaunchError(f"No {what} given; pass --config.{what}=<keras-hub preset name or dir>.")
    looks_local = "://" not in path and (os.sep in path or path.startswith("."))
    if looks_local and not tf.io.gfile.isdir(path):
        raise LaunchError(
            f"{what} path {path} does not exist; pass --config.{what}=<keras-hub preset name or "
            "preset dir> (e.g. the `student`/`model` dir a previous run wrote)."
        )
    return path


def load_tokenizer(preset):
    return keras_hub.tokenizers.Tokenizer.from_preset(check_preset(preset, "teacher"))


def load_classifier(preset, num_classes=None, what="teacher", token_level=False, dtype=""):
    """A keras-hub text classifier (or, with `token_level`, a `heads.TokenClassifier`) from a
    preset; a new head on the preset's backbone when `num_classes` is given. `dtype` (e.g.
    "bfloat16") overrides the global policy for this model (a frozen teacher)."""
    from tinybert_tf import heads

    check_preset(preset, what)
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    if dtype:
        kwargs["dtype"] = dtype
    if token_level:
        return heads.TokenClassifier.from_preset(preset, preprocessor=None, **kwargs)
    return keras_hub.models.TextClassifier.from_preset(preset, preprocessor=None, **kwargs)


def _dtype(name):
    return {"dtype": name} if name else {}


def new_task_model(spec, backbone):
    """A fresh head for the task on `backbone`: token classifier (NER) or text classifier."""
    from tinybert_tf import heads

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
    check_preset(spec, "student")
    return keras_hub.models.Backbone.from_preset(spec)


def set_dropout(model, rate):
    """Set every Dropout rate of a student (config `student_dropout`); returns the model."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = float(rate)
    return model


def _recipe(name, layer_map="", loss_weights="", **overrides):
    """A recipe with the config's layer map ("" keeps the recipe's, else uniform | last | 1,2,4,5)
    and loss weights ("term=weight,..." replaces or adds terms; weight 0 drops a term)."""
    if layer_map in ("uniform", "last"):
        overrides["layer_map"] = layer_map
    elif layer_map:
        overrides["layer_map"] = tuple(int(i) for i in str(layer_map).split(","))
    if loss_weights:
        weights = dict(recipes.get(name).weights)
        for item in str(loss_weights).split(","):
            term, _, value = item.partition("=")  # no "=" leaves value "", which float() refuses
            try:
                weights[term.strip()] = float(value)
            except ValueError:
                raise LaunchError(f"loss_weights item {item!r} is not term=number, e.g. "
                                  "'att=0.5,pooled_rel=10'.") from None
        overrides["weights"] = {t: w for t, w in weights.items() if w != 0}
    return recipes.get(name, **overrides)


def _compile(model, strategy, c, total_steps, stage=None, **kwargs):
    o = c.optimizer
    lr = stage.learning_rate if stage is not None else o.learning_rate
    model.compile(
        optimizer=optim.make_optimizer(o.name, lr, total_steps, o.warmup_fraction,
                                       o.weight_decay, o.clipnorm),
        jit_compile=bool(c.jit_compile),
        steps_per_execution=steps_per_execution(strategy, c.steps_per_execution),
        **kwargs,
    )


def _run(model, data, workdir, c, total_steps):
    return train.run(model, data, workdir, total_steps, log_every=c.log_every,
                     checkpoint_every=c.checkpoint_every, max_to_keep=c.keep_checkpoints)


# ---- general distillation -----------------------------------------------------------------------


def general_distill(c, workdir, strategy):
    """TinyBERT general distillation (or DistilBERT) on unlabelled text; writes workdir/student."""
    from tinybert_tf.data import corpus, masking, shards

    check_batch_size(strategy, c.batch_size)
    tokenizer = load_tokenizer(c.teacher)
    recipe = _recipe(c.recipe, c.layer_map, c.loss_weights)
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
            teacher = keras_hub.models.MaskedLM.from_preset(check_preset(c.teacher, "teacher"),
                                                            **_dtype(c.teacher_dtype),
                                                            preprocessor=None)
            student = keras_hub.models.BertMaskedLM(
                student_backbone(c.student, teacher), preprocessor=None
            )
        else:
            teacher = keras_hub.models.Backbone.from_preset(check_preset(c.teacher, "teacher"),
                                                            **_dtype(c.teacher_dtype))
            student = student_backbone(c.student, teacher)
        set_dropout(student, c.student_dropout)
        distiller = Distiller(teacher, student, recipe)
        _compile(distiller, strategy, c, c.steps)
    print(f"teacher {students.count_params(teacher):,} params -> student "
          f"{students.count_params(student):,} params; layer map {distiller.layer_map}")
    backbone = student.backbone if is_mlm else student
    fresh = not tf.io.gfile.exists(os.path.join(workdir, "checkpoints"))
    if c.save_initial and fresh:
        _save_student(distiller, backbone, tokenizer, os.path.join(workdir, "student_init"))
    _run(distiller, data, workdir, c, c.steps)
    return _save_student(distiller, backbone, tokenizer, os.path.join(workdir, "student"))


def _save_student(distiller, backbone, tokenizer, path):
    """Student backbone + tokenizer as a preset dir, projections beside it in projections.npz."""
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    if distiller.projections:
        distiller.save_projections(os.path.join(path, "projections.npz"))
    print(f"Student saved to {path}")
    return path


# ---- tasks --------------------------------------------------------------------------------------


def task_spec(c):
    from tinybert_tf.data import tasks

    if c.task != "file":
        return tasks.get_task(c.task)
    d = c.data
    return tasks.load_file_task(
        d.train_file, d.eval_file or None, d.test_file or None, name="file",
        text_column=d.text_column, text_b_column=d.text_b_column or None,
        label_column=d.label_column, regression=d.regression,
    )


def train_spec(c, spec):
    """The task's spec, or the augmented training file's (tools/augment.py) when configured."""
    if not getattr(c, "augmented_train_file", ""):
        return spec
    from tinybert_tf.data import tasks

    d = c.data
    aug = tasks.load_file_task(
        c.augmented_train_file, name="augmented", text_column=d.text_column,
        text_b_column=d.text_b_column or None, label_column=d.label_column,
        regression=d.regression,
    )
    if aug.label_names != spec.label_names:
        raise LaunchError(
            f"augmented file labels {list(aug.label_names)} differ from the task's "
            f"{list(spec.label_names)}; re-run tools/augment.py on this task's train file."
        )
    return aug


def task_data(c, spec, split, tokenizer, training, extra=None):
    """Batched task data; training batches repeat, shuffle (seeded) and drop the remainder."""
    from tinybert_tf.data import tasks

    return tasks.task_dataset(
        spec, split, tokenizer, seq_len=c.data.seq_len, batch_size=c.batch_size,
        shuffle=training, seed=c.seed, data_dir=c.data.tfds_data_dir or None,
        drop_remainder=training, shuffle_buffer=c.data.shuffle_buffer, repeat=training,
        extra=extra,
    )


def cached_logits_data(c, spec, tokenizer, teacher):
    """Training data whose `x` carries the frozen teacher's logits, computed in one pass.

    The prediction step's teacher is frozen and runs in inference mode, so its logits for an
    example never change: one pass replaces a teacher forward per example per epoch.
    """
    from tinybert_tf.distiller import CACHED_LOGITS

    one_pass = task_data(c, spec, spec.train_split, tokenizer, training=False)
    print("Caching the teacher's logits over the training data (one pass) ...")
    logits = teacher.predict(one_pass, verbose=2 if c.log_every else 0)
    return task_data(c, spec, spec.train_split, tokenizer, training=True,
                     extra={CACHED_LOGITS: np.asarray(logits, np.float32)})


def steps_per_epoch(c, spec, tokenizer):
    """Batches in one pass over the training split of `spec`."""
    one_pass = task_data(c, spec, spec.train_split, tokenizer, training=False)
    n = int(one_pass.cardinality())
    if n < 0:
        n = int(one_pass.reduce(0, lambda acc, _: acc + 1))
    return max(1, n)


def _save_task_model(model, tokenizer, path):
    """Task model + tokenizer as a preset dir, without optimizer state (weights only)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        model.optimizer = None
    try:
        model.save_to_preset(path)
    finally:
        if optimizer is not None:
            model.optimizer = optimizer
    tokenizer.save_to_preset(path)
    print(f"Saved {type(model).__name__} to {path}")
    return path


def finetune(c, workdir, strategy):
    """Fine-tune the teacher (preset + new head) on the task; writes workdir/teacher."""
    check_batch_size(strategy, c.batch_size)
    spec = task_spec(c)
    tokenizer = load_tokenizer(c.teacher)
    data = task_data(c, spec, spec.train_split, tokenizer, training=True)
    total = steps_per_epoch(c, spec, tokenizer) * c.finetune.epochs
    with strategy.scope():
        token_level = spec.kind == "token_classification"
        model = load_classifier(c.teacher, spec.num_classes, token_level=token_level)
        accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if spec.kind == "regression":
            kwargs = dict(loss=keras.losses.MeanSquaredError(), metrics=[])
        elif token_level:  # labels -100 off first word pieces; weighted by sample_weight [B, S]
            from tinybert_tf import heads

            kwargs = dict(loss=heads.token_loss(), weighted_metrics=accuracy)
        else:
            kwargs = dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=accuracy)
        _compile(model, strategy, c, total, c.finetune, **kwargs)
    _run(model, data, os.path.join(workdir, "finetune"), c, total)
    return _save_task_model(model, tokenizer, os.path.join(workdir, "teacher"))


def task_distill(c, workdir, strategy):
    """TinyBERT task distillation: step 1 intermediate layers, step 2 prediction layer."""
    if c.step not in ("intermediate", "prediction", "both"):
        raise LaunchError(f"step must be intermediate, prediction or both; got {c.step!r}.")
    check_batch_size(strategy, c.batch_size)
    spec = task_spec(c)
    train_task = train_spec(c, spec)
    tokenizer = load_tokenizer(c.teacher)
    per_epoch = steps_per_epoch(c, train_task, tokenizer)
    stage_one = os.path.join(workdir, "intermediate", "student")
    regression = spec.kind == "regression"
    token_level = spec.kind == "token_classification"
    stages = ["intermediate", "prediction"] if c.step == "both" else [c.step]
    out = None
    for stage in stages:
        settings = c.intermediate if stage == "intermediate" else c.prediction
        total = per_epoch * settings.epochs
        if stage == "intermediate":
            recipe = _recipe("tinybert_task_intermediate", c.layer_map)
        else:
            recipe = _recipe("tinybert_task_prediction", regression=regression,
                             temperature=settings.temperature)
        cache = stage == "prediction" and c.prediction.cache_teacher_logits
        with strategy.scope():
            teacher = load_classifier(c.teacher, token_level=token_level, dtype=c.teacher_dtype)
            if stage == "prediction" and tf.io.gfile.isdir(stage_one):
                # carries step 1's weights
                student = load_classifier(stage_one, what="student", token_level=token_level)
            else:
                student = new_task_model(spec, student_backbone(c.student, teacher))
            set_dropout(student, c.student_dropout)
            distiller = Distiller(teacher, student, recipe)
            _compile(distiller, strategy, c, total, settings)
        if cache:
            data = cached_logits_data(c, train_task, tokenizer, teacher)
        else:
            data = task_data(c, train_task, train_task.train_split, tokenizer, training=True)
        print(f"[{stage}] {settings.epochs} epochs x {per_epoch} steps, recipe {recipe.name}")
        stage_dir = os.path.join(workdir, stage)
        _run(distiller, data, stage_dir, c, total)
        out = _save_task_model(student, tokenizer, os.path.join(stage_dir, "student"))
    return out


# ---- dispatch -----------------------------------------------------------------------------------

MODES = ("general_distill", "task_distill", "finetune", "evaluate", "export")


def run(config, workdir):
    """Run one mode of a resolved config; returns what the mode returns (e.g. a preset dir)."""
    from tinybert_tf import strategy

    if config.mode not in MODES:
        raise strategy.LaunchError(f"Unknown mode {config.mode!r}; use one of {', '.join(MODES)}.")
    if config.mode in ("evaluate", "export"):  # read a run's outputs; leave its config alone
        tf.io.gfile.makedirs(workdir)
    else:
        train.prepare_workdir(workdir, config.to_dict(), overwrite=config.overwrite)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy.set_precision(config.precision)
    dist = strategy.make_strategy(config.strategy, config.tpu)
    print(f"Strategy {type(dist).__name__} with {dist.num_replicas_in_sync} replicas.")
    if config.mode == "general_distill":
        return general_distill(config, workdir, dist)
    if config.mode == "finetune":
        return finetune(config, workdir, dist)
    if config.mode == "task_distill":
        return task_distill(config, workdir, dist)
    if config.mode == "evaluate":
        from tinybert_tf import evaluate

        return evaluate.run_from_config(config, workdir)
    return export_student(config, workdir)


def export_student(c, workdir):
    """Export mode: the student preset (default: this workdir's task-distilled student) to
    `<export.dir or workdir/export>/<model_name>/<version>/`, verified, with labels."""
    from tinybert_tf import export

    e = c.export
    student = e.student or os.path.join(workdir, "prediction", "student")
    check_preset(student, "export.student")
    labels = None
    if c.task != "file" or c.data.train_file:
        labels = list(task_spec(c).label_names) or None
    report = export.export(
        student, e.dir or os.path.join(workdir, "export"), model_name=e.model_name,
        version=e.version or None, labels=labels, text_signature=e.text_signature,
        hf_dir=os.path.join(workdir, "hf_checkpoint") if e.hf else None, tflite=e.tflite,
    )
    return report.path
