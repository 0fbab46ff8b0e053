"""The task modes: `finetune` (a model + new head on the labels) and `task_distill` (TinyBERT's
two steps: intermediate layers, then the prediction layer with soft targets).

Every training stage selects its output on the task's eval split (`selection.EvalSelector`):
finetune and the prediction step on the task's first metric (higher is better), the intermediate
step on its distillation loss on the eval split (its head is not trained yet). The test split is
never used. Both distillation steps can train on a transfer set (`transfer_file`, TinyBERT
augmentation output included): unlabelled in-domain text that the teacher labels, appended to
the labelled train split (or alone, `transfer_only`); the `hard` term counts labelled rows only.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tinybert_tf.distill.distiller import CACHED_LOGITS, Distiller
from tinybert_tf.launch import builders as b
from tinybert_tf.launch import distribution, train
from tinybert_tf.launch.selection import EvalSelector
from tinybert_tf.launch.strategy import LaunchError, check_batch_size


def run_stage(model, data, workdir, c, total_steps, callbacks=()):
    """`train.run` with the config's logging and checkpoint settings."""
    train.run(model, data, workdir, total_steps, log_every=c.log_every,
                     checkpoint_every=c.checkpoint_every, max_to_keep=c.keep_checkpoints,
                     callbacks=callbacks)


# ---- selection on the eval split ------------------------------------------------------------------


def task_scores(model, dataset, spec):
    """{metric: value} of a task model on a labelled `(x, y[, w])` dataset (Keras predict, so it
    runs under the model's distribution strategy)."""
    from tinybert_tf import evaluate
    from tinybert_tf.data import metrics

    outputs = model.predict(dataset.map(lambda *batch: batch[0]), verbose=0)
    labels = np.concatenate([np.asarray(batch[1]) for batch in dataset])
    predictions = evaluate.predictions_from_outputs(np.asarray(outputs, np.float32), spec)
    return metrics.compute(spec, predictions, labels)


def _selector(c, spec, tokenizer, trainer, model, run_dir, per_epoch, total, save,
              score=None):
    """An EvalSelector on the task's first eval split, or None (no eval split, or eval_every<0).

    trainer: the model being fit (its optimizer counts the steps); model: the task model scored
    (default score: its task metrics) and saved. Selection is on the task's first metric, or on
    `loss` (lower is better) when `score(eval_data)` is given.
    """
    if c.eval_every < 0 or not spec.eval_splits:
        print("No model selection (no eval split or eval_every < 0): the output is the last model.")
        return None
    data = b.task_data(c, spec, spec.eval_splits[0], tokenizer, training=False)
    every = c.eval_every or per_epoch
    if score is None:
        return EvalSelector(trainer, run_dir, lambda: task_scores(model, data, spec), save,
                            spec.metrics[0], every, total)
    return EvalSelector(trainer, run_dir, lambda: score(data), save, "loss", every, total,
                        higher_is_better=False)


def _finish(selector, model, tokenizer, out):
    if selector is None:
        return b.save_model(model, tokenizer, out)
    return selector.finish(out)


# ---- transfer sets --------------------------------------------------------------------------------


def transfer_set(c, spec, workdir):
    """`(columns, counts)` of the configured transfer files (transfer_file, augmented_train_file),
    eval/test texts and duplicates dropped; None when none is configured."""
    paths = ",".join(p for p in (c.transfer_file, c.augmented_train_file) if p)
    if not paths:
        if c.transfer_only:
            raise LaunchError("transfer_only=True needs --config.transfer_file=<files or globs>.")
        return None
    if spec.kind == "token_classification":
        raise LaunchError("transfer sets are for sentence and sentence-pair tasks; drop "
                          "--config.transfer_file for a token-classification task.")
    from tinybert_tf.data import transfer

    try:
        columns, counts = transfer.transfer_examples(spec, paths, c.data.tfds_data_dir or None,
                                                     skip_bad_rows=c.data.skip_bad_rows)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    print(f"Transfer set {paths}: {counts['read']} rows read, {counts['used']} used; dropped "
          f"{counts['leaked']} also in the eval/test splits, {counts['duplicate']} duplicates, "
          f"{counts['empty']} empty, {counts['bad_rows']} bad rows.")
    if not distribution.is_chief():
        return columns, counts
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, "transfer.json"), "w") as f:
        json.dump({"paths": paths, "transfer_only": bool(c.transfer_only), **counts}, f, indent=1)
    return columns, counts


def _train_data(c, spec, tokenizer, transfer, training, extra=None):
    kwargs = {}
    if transfer is not None:
        kwargs = dict(extra_examples=transfer[0], labelled=not c.transfer_only)
    return b.task_data(c, spec, spec.train_split, tokenizer, training, extra=extra, **kwargs)


_ROW = "__row__"


def cached_logits_data(c, spec, tokenizer, teacher, transfer=None):
    """Training data whose `x` carries the frozen teacher's logits, computed in one pass.

    The prediction step's teacher is frozen and runs in inference mode, so its logits for an
    example never change: one pass replaces a teacher forward per example per epoch.
    """
    rows = sum(int(tf.shape(batch[1])[0]) for batch in
               _train_data(c, spec, tokenizer, transfer, training=False))
    # Length buckets reorder rows: carry each row's index through and put the logits back.
    one_pass = _train_data(c, spec, tokenizer, transfer, training=False,
                           extra={_ROW: np.arange(rows)})
    order = np.concatenate([np.asarray(batch[0][_ROW]) for batch in one_pass])
    print(f"Caching the teacher's logits over the training data ({rows} rows, one pass) ...")
    inputs = one_pass.map(lambda x, *_: {k: v for k, v in x.items() if k != _ROW})
    predicted = np.asarray(teacher.predict(inputs, verbose=2 if c.log_every else 0), np.float32)
    logits = np.empty_like(predicted)
    logits[order] = predicted
    return _train_data(c, spec, tokenizer, transfer, training=True,
                       extra={CACHED_LOGITS: logits})


# ---- modes ----------------------------------------------------------------------------------------


def finetune(c, workdir, strategy):
    """Fine-tune the teacher (preset + new head) on the task; writes workdir/teacher (best on
    eval) and workdir/teacher_last."""
    check_batch_size(strategy, c.batch_size)
    spec = b.task_spec(c)
    tokenizer = b.load_tokenizer(c.teacher)
    data = b.task_data(c, spec, spec.train_split, tokenizer, training=True)
    per_epoch = b.count_batches(b.task_data(c, spec, spec.train_split, tokenizer, False))
    total = per_epoch * c.finetune.epochs
    with strategy.scope():
        token_level = spec.kind == "token_classification"
        model = b.load_classifier(c.teacher, spec.num_classes, token_level=token_level)
        accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if spec.kind == "regression":
            kwargs = dict(loss=keras.losses.MeanSquaredError(), metrics=[])
        elif token_level:  # labels -100 off first word pieces; weighted by sample_weight [B, S]
            from tinybert_tf.distill import heads

            kwargs = dict(loss=heads.token_loss(), weighted_metrics=accuracy)
        else:
            kwargs = dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=accuracy)
        b.compile_model(model, strategy, c, total, c.finetune, **kwargs)
    run_dir = os.path.join(workdir, "finetune")
    selector = _selector(c, spec, tokenizer, model, model, run_dir, per_epoch, total,
                         lambda path: b.save_model(model, tokenizer, path))
    print(f"[finetune] {c.finetune.epochs} epochs x {per_epoch} steps")
    run_stage(model, data, run_dir, c, total, [selector] if selector else [])
    return _finish(selector, model, tokenizer, os.path.join(workdir, "teacher"))


def _stage_recipe(c, spec, stage):
    if stage == "intermediate":
        return b.make_recipe(c.intermediate.recipe, c.layer_map,
                             **b.relation_kwargs(c.intermediate.relation_heads))
    p = c.prediction
    weights = {"pred": 1.0, "hard": float(p.hard_weight)}
    return b.make_recipe("tinybert_task_prediction", regression=spec.kind == "regression",
                         temperature=p.temperature, weights=weights)


def task_distill(c, workdir, strategy):
    """TinyBERT task distillation: step 1 intermediate layers, step 2 prediction layer; each
    step's output (`<step>/student`) is its best-on-eval model, `<step>/student_last` beside."""
    if c.stages not in ("intermediate", "prediction", "both"):
        raise LaunchError(f"stages must be intermediate, prediction or both; got {c.stages!r}.")
    check_batch_size(strategy, c.batch_size)
    spec = b.task_spec(c)
    transfer = transfer_set(c, spec, workdir)
    tokenizer = b.load_tokenizer(c.teacher)
    per_epoch = b.count_batches(_train_data(c, spec, tokenizer, transfer, training=False))
    stage_one = os.path.join(workdir, "intermediate", "student")
    token_level = spec.kind == "token_classification"
    out = None
    for stage in ["intermediate", "prediction"] if c.stages == "both" else [c.stages]:
        settings = c.intermediate if stage == "intermediate" else c.prediction
        total = per_epoch * settings.epochs
        recipe = _stage_recipe(c, spec, stage)
        with strategy.scope():
            teacher = b.load_classifier(c.teacher, token_level=token_level, dtype=c.teacher_dtype)
            if stage == "prediction" and tf.io.gfile.isdir(stage_one):
                # carries step 1's weights
                student = b.load_classifier(stage_one, what="student", token_level=token_level)
            else:
                student = b.new_task_model(spec, b.student_backbone(c.student, teacher))
            b.set_dropout(student, c.student_dropout)
            distiller = Distiller(teacher, student, recipe)
            b.compile_model(distiller, strategy, c, total, settings)
        if stage == "prediction" and c.prediction.cache_teacher_logits:
            data = cached_logits_data(c, spec, tokenizer, teacher, transfer)
        else:
            data = _train_data(c, spec, tokenizer, transfer, training=True)
        print(f"[{stage}] {settings.epochs} epochs x {per_epoch} steps, recipe {recipe.name} "
              f"{dict(recipe.weights)}")
        stage_dir = os.path.join(workdir, stage)

        def save(path, student=student):
            b.save_model(student, tokenizer, path)

        def eval_loss(data, distiller=distiller):
            return distiller.evaluate(data, verbose=0, return_dict=True)

        selector = _selector(c, spec, tokenizer, distiller, student, stage_dir, per_epoch, total,
                             save,
                             score=eval_loss if stage == "intermediate" else None)
        run_stage(distiller, data, stage_dir, c, total, [selector] if selector else [])
        out = _finish(selector, student, tokenizer, os.path.join(stage_dir, "student"))
    return out
