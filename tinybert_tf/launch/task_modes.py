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

import dataclasses
import os

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from tinybert_tf import evaluate
from tinybert_tf.distill import students
from tinybert_tf.distill.distiller import CACHED_LOGITS
from tinybert_tf.launch import builders as b
from tinybert_tf.launch import config_lib, distribution, teachers, train, validate
from tinybert_tf.launch.selection import EvalSelector
from tinybert_tf.launch.transfer_set import transfer_set


@dataclasses.dataclass(frozen=True)
class _Task:
    """What every stage of a task run reads, built once: the task, the teacher's tokenizer, the
    training batches of one epoch (None where the stage counts them as it builds its data) and
    the transfer set (`transfer_set`, or None)."""

    spec: object
    tokenizer: object
    per_epoch: int | None
    transfer: tuple | None = None
    orders: dict | None = None  # teacher dir -> its class order (teachers.label_orders)
    truncation: dict | None = None  # split -> texts cut at seq_len (`_truncation`)


def _task(c, spec, tokenizer, transfer=None, count=True, orders=None):
    """The run's `_Task`, with one epoch of training batches counted over the labelled split
    plus the transfer set (`builders.epoch_batches`) unless `count` is False."""
    per_epoch = b.epoch_batches(c, spec, spec.train_split, tokenizer,
                                **_transfer_kwargs(c, transfer)) if count else None
    return _Task(spec, tokenizer, per_epoch, transfer, orders,
                 b.truncation_counts(c, spec, tokenizer))


def _record_truncation(task, run_dir):
    """The truncation counts, the head of the stage's metrics.jsonl (chief only)."""
    if task.truncation is not None and distribution.is_chief():
        train.write_head_record(run_dir, "truncation", task.truncation)


# ---- selection on the eval split ------------------------------------------------------------------


def task_scores(model, dataset, spec):
    """{metric: value} of a task model on a labelled `(x, y[, w])` dataset (Keras predict, so it
    runs under the model's distribution strategy)."""
    from tinybert_tf.data import metrics

    outputs = model.predict(dataset.map(lambda *batch: batch[0]), verbose=0)
    labels = np.concatenate([np.asarray(batch[1]) for batch in dataset])
    predictions = evaluate.predictions_from_outputs(np.asarray(outputs, np.float32), spec)
    return metrics.compute(spec, predictions, labels)


def _selector(c, task, trainer, model, run_dir, total, save, score=None, patience=0):
    """An EvalSelector on the task's first eval split, or None (no eval split, or eval_every<0).

    trainer: the model being fit (its optimizer counts the steps); model: the task model scored
    (default score: its task metrics) and saved. Selection is on the task's first metric, or on
    `loss` (lower is better) when `score(eval_data)` is given.
    """
    spec = task.spec
    if c.eval_every < 0 or not spec.eval_splits:
        print("No model selection (no eval split or eval_every < 0): the output is the last model.")
        return None
    from tinybert_tf.data import metrics

    data = b.task_data(c, spec, spec.eval_splits[0], task.tokenizer, training=False)
    every = c.eval_every or task.per_epoch
    if score is None:
        return EvalSelector(trainer, run_dir, lambda: task_scores(model, data, spec), save,
                            spec.metrics[0], every, total, patience=patience,
                            chance=metrics.chance_level(spec, spec.metrics[0]))
    return EvalSelector(trainer, run_dir, lambda: score(data), save, "loss", every, total,
                        higher_is_better=False, patience=patience)


def _callbacks(selector, launch):
    """A stage's callbacks: its selector (scores first, so the caller's see them), the caller's."""
    return [*([selector] if selector else []), *launch.callbacks]


def _plan(epochs, patience, per_epoch, selector=True):
    """`3 epochs x 168 steps = 504 steps`: the stage's plan, as trained and as its learning-rate
    schedule runs (`per_epoch`: the training batches of one epoch, `b.epoch_batches`)."""
    stop = f", early stop after {patience} evaluations without improvement" if (
        patience and selector) else ""
    plan = f"{epochs} epochs x {per_epoch} steps = {epochs * per_epoch} steps"
    return f"up to {plan}{stop}" if stop else plan


def _finish(selector, model, tokenizer, out, spec):
    if selector is None:
        return _save_task_model(model, tokenizer, out, spec)
    return selector.finish(out)


def _save_task_model(model, tokenizer, path, spec, **kwargs):
    """A task model's preset with the task's label names beside it (`LABELS_FILE`), so
    evaluate, export and a later run read them with no flag."""
    from tinybert_tf.export.labels import write_preset_labels

    b.save_model(model, tokenizer, path, **kwargs)
    if distribution.is_chief():
        write_preset_labels(path, spec.label_names)
    return path


def _load_teacher(c, path, spec, orders):
    """A frozen teacher of task distillation in the teacher dtype, its classes in the task's
    order (`teachers.label_order`, checked before the claim)."""
    from tinybert_tf.distill import heads

    teacher = b.load_classifier(path, token_level=spec.kind == "token_classification",
                                dtype=c.teacher_dtype)
    return heads.reorder_classes(teacher, (orders or {}).get(path))


# ---- transfer sets --------------------------------------------------------------------------------


def _transfer_kwargs(c, transfer):
    if transfer is None:
        return {}
    return dict(extra_examples=transfer[0], labelled=not c.transfer_only)


def _train_data(c, spec, tokenizer, transfer, training, extra=None):
    return b.task_data(c, spec, spec.train_split, tokenizer, training, extra=extra,
                       **_transfer_kwargs(c, transfer))


_ROW = "__row__"


def cached_logits_data(c, spec, tokenizer, teacher_dirs, strategy, transfer=None, loaded=None,
                       orders=None):
    """Training data whose `x` carries the frozen teachers' logits, computed in one pass each.

    The prediction step's teachers are frozen and run in inference mode, so their logits for an
    example never change: one pass replaces a teacher forward per example per epoch. Several
    teachers' logits are combined once (`ensemble.combine_logits`: `prediction.combine`, at
    `prediction.temperature`). loaded: {dir: model} of teachers already in memory; orders:
    {dir: class order} of teachers labelled in another order (`teachers.label_orders`).
    """
    from tinybert_tf.distill import ensemble

    rows = sum(int(tf.shape(batch[1])[0]) for batch in
               _train_data(c, spec, tokenizer, transfer, training=False))
    # Length buckets reorder rows: carry each row's index through and put the logits back.
    one_pass = _train_data(c, spec, tokenizer, transfer, training=False,
                           extra={_ROW: np.arange(rows)})
    order = np.concatenate([np.asarray(batch[0][_ROW]) for batch in one_pass])
    inputs = one_pass.map(lambda x, *_: {k: v for k, v in x.items() if k != _ROW})
    outputs = max(1, spec.num_classes) * len(teacher_dirs) * rows * 4
    size = f", {outputs / 2**30:.1f} GiB of logits in memory" if outputs > 2**30 else ""
    print(f"Caching the logits of {len(teacher_dirs)} teacher(s) over the training data ({rows} "
          f"rows, one pass each{size}) ...")
    logits = []
    for path in teacher_dirs:
        teacher = (loaded or {}).get(path)
        if teacher is None:
            with strategy.scope():
                teacher = _load_teacher(c, path, spec, orders)
        predicted = np.asarray(teacher.predict(inputs, verbose=2 if c.log_every else 0),
                               np.float32)
        logits.append(np.empty_like(predicted))
        logits[-1][order] = predicted
        del teacher
    p = c.prediction
    combined = ensemble.combine_logits(np.stack(logits), p.temperature, p.combine,
                                       regression=spec.kind == "regression")
    return _train_data(c, spec, tokenizer, transfer, training=True,
                       extra={CACHED_LOGITS: combined})


# ---- modes ----------------------------------------------------------------------------------------


def finetune(c, workdir, launch):
    """Fine-tune the teacher (preset + new head) on the task; writes workdir/teacher (best on
    eval) and workdir/teacher_last. With `finetune.members` N > 1: N teachers from the same
    preset with seeds seed..seed+N-1 into workdir/teacher/member_K (run dirs
    workdir/finetune/member_K; a restart resumes the member it stopped in) and
    workdir/teacher/members.txt, so `--config.teacher=workdir/teacher` is the whole ensemble.
    launch: the dispatcher's (strategy, the teacher's tokenizer)."""
    task = _task(c, launch.spec or b.task_spec(c), launch.tokenizer, count=False)
    which = finetuned(c)
    print(f"[finetune] teacher {c.teacher}: a new head on the teacher preset" if which == "teacher"
          else f"[finetune] student {c.student}: the student alone, no teacher")
    members = int(c.finetune.members)
    if members <= 1:
        return _finetune_one(c, task, os.path.join(workdir, "finetune"), launch,
                             os.path.join(workdir, which))
    out, names = os.path.join(workdir, which), [f"member_{k}" for k in range(members)]
    for k, name in enumerate(names):
        member = ml_collections.ConfigDict(c.to_dict(), type_safe=False)
        member.seed = c.seed + k
        keras.utils.set_random_seed(member.seed)  # as a run started with this seed
        print(f"[finetune] member {k + 1} of {members} (seed {member.seed})")
        _finetune_one(member, task, os.path.join(workdir, "finetune", name), launch,
                      os.path.join(out, name))
    if distribution.is_chief():
        teachers.write_members(out, names)
    print(f"Ensemble of {members} teachers: {out} (members.txt)")
    return out


def _finetune_one(c, task, run_dir, launch, out):
    """One fine-tuned teacher (seed `c.seed`) trained in `run_dir`, its best-on-eval in `out`.
    Its training batches are built here, once (the seed orders them), and counted as they are
    built (one epoch's batches: the plan and the schedule). launch: the dispatcher's (strategy,
    the caller's callbacks)."""
    strategy = launch.strategy
    spec, tokenizer = task.spec, task.tokenizer
    data, per_epoch = b.task_data(c, spec, spec.train_split, tokenizer, training=True, count=True)
    task = dataclasses.replace(task, per_epoch=per_epoch)
    epochs, patience = config_lib.stage_budget(c, "finetune")
    total = per_epoch * epochs
    with strategy.scope():
        token_level = spec.kind == "token_classification"
        model = _finetune_model(c, spec)
        loaded_with = model.optimizer  # keras-hub's default: what the saved preset carries
        if token_level:
            _freeze_pooler(model)
        b.compile_model(model, strategy, c, total, c.finetune, **_finetune_loss(spec))

    def save(path):
        _save_task_model(model, tokenizer, path, spec, optimizer=loaded_with)

    selector = _selector(c, task, model, model, run_dir, total, save, patience=patience)
    print(f"[finetune] {_plan(epochs, patience, per_epoch, selector)}")
    _record_truncation(task, run_dir)
    train.run_stage(model, data, run_dir, c, total, _callbacks(selector, launch), "finetune",
                    per_epoch)
    if selector is None:
        save(out)
        return out
    return selector.finish(out)


def finetuned(c):
    """What finetune trains: "student" when config.student names trained weights
    (`from_teacher:N`, a preset dir: the no-teacher baseline distillation must beat), else
    "teacher" (`validate.finetunes_student`)."""
    return "student" if validate.finetunes_student(c) else "teacher"


def _finetune_model(c, spec):
    """The task model finetune trains: the teacher preset with a new head, or (`finetuned`) the
    student `config.student` names with a new head and the students' dropout."""
    token_level = spec.kind == "token_classification"
    if finetuned(c) == "teacher":
        return b.load_classifier(c.teacher, spec.num_classes, token_level=token_level)
    teacher = None  # only a from_teacher:N student reads it: its embeddings and layers
    if c.student.startswith("from_teacher:"):
        teacher = b.load_backbone(c.teacher)
    backbone = b.student_backbone(c.student, teacher)
    return b.set_dropout(b.new_task_model(spec, backbone), c.student_dropout)


def _finetune_loss(spec):
    """`compile` arguments of a fine-tuned task model: MSE for regression, else cross-entropy
    with accuracy (token tasks: over first word pieces, labels -100 off them, weighted by the
    `[B, S]` sample weights)."""
    accuracy = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if spec.kind == "regression":
        return dict(loss=keras.losses.MeanSquaredError(), metrics=[])
    if spec.kind == "token_classification":
        from tinybert_tf.distill import heads

        return dict(loss=heads.token_loss(), weighted_metrics=accuracy)
    return dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=accuracy)


def _freeze_pooler(model):
    """A token classifier reads its backbone's sequence output alone, so the pooler gets no
    gradient; frozen, it stays as loaded (as it did untrained) without Keras' "Gradients do not
    exist for variables ['pooled_dense/kernel', ...]" warning at the first step."""
    try:
        model.backbone.get_layer("pooled_dense").trainable = False
    except ValueError:  # a backbone without a pooler
        pass


def task_distill(c, workdir, launch):
    """TinyBERT task distillation: step 1 intermediate layers, step 2 prediction layer; each
    step's output (`<step>/student`) is its best-on-eval model, `<step>/student_last` beside.
    launch: the dispatcher's (strategy, step 1's teacher's tokenizer)."""
    spec = launch.spec or b.task_spec(c)
    task = _task(c, spec, launch.tokenizer, transfer_set(c, spec, workdir, launch.tokenizer),
                 orders=launch.label_orders)
    teacher_dirs = teachers.resolve(c.teacher)
    out = None
    for stage in config_lib.stages(c):
        out = _distill_step(c, workdir, launch, stage, task, teacher_dirs)
    return out


def _distill_step(c, workdir, launch, stage, task, teacher_dirs):
    """One step of task distillation (`intermediate` or `prediction`) in `<workdir>/<stage>`;
    returns its student preset dir. launch: the dispatcher's (strategy, the caller's callbacks)."""
    strategy = launch.strategy
    epochs, patience = config_lib.stage_budget(c, stage)
    total = task.per_epoch * epochs
    recipe = b.config_recipe(c, stage, regression=task.spec.kind == "regression")
    lead = teacher_dirs[c.intermediate.teacher]  # step 1's teacher: its layers start the student
    with strategy.scope():
        teacher, student = _step_models(c, workdir, stage, task.spec, lead, task.orders)
        distiller = b.make_distiller(teacher, student, recipe)
        b.compile_model(distiller, strategy, c, total, c[stage])
    if stage == "prediction" and c.prediction.cache_teacher_logits:
        data = cached_logits_data(c, task.spec, task.tokenizer, teacher_dirs, strategy,
                                  task.transfer, loaded={lead: teacher}, orders=task.orders)
    else:
        data = _train_data(c, task.spec, task.tokenizer, task.transfer, training=True)
    print(f"[{stage}] {_plan(epochs, patience, task.per_epoch)}, recipe {recipe.name} "
          f"{dict(recipe.weights)}")
    stage_dir = os.path.join(workdir, stage)

    def save(path):
        _save_task_model(student, task.tokenizer, path, task.spec)

    def eval_loss(data):
        return distiller.evaluate(data, verbose=0, return_dict=True)

    selector = _selector(c, task, distiller, student, stage_dir, total, save,
                         score=eval_loss if stage == "intermediate" else None, patience=patience)
    _record_truncation(task, stage_dir)
    train.run_stage(distiller, data, stage_dir, c, total, _callbacks(selector, launch), stage,
                    task.per_epoch)
    return _finish(selector, student, task.tokenizer, os.path.join(stage_dir, "student"),
                   task.spec)


def _step_models(c, workdir, stage, spec, lead, orders=None):
    """(frozen teacher, student) of a task distillation step, under the current scope: the
    prediction step's student carries step 1's weights when step 1 wrote its student."""
    token_level = spec.kind == "token_classification"
    teacher = _load_teacher(c, lead, spec, orders)
    stage_one = os.path.join(workdir, "intermediate", "student")
    if stage == "prediction" and tf.io.gfile.isdir(stage_one):
        student = b.load_classifier(stage_one, what="student", token_level=token_level)
    else:
        if c.student in students.PRESETS:
            print(f"Warning: the student {c.student} starts from random weights; distil a "
                  "general student first (--config=general_distill, then --config.student="
                  "<its workdir>/student) or start from the teacher's layers "
                  "(--config.student=from_teacher:N).")
        student = b.new_task_model(spec, b.student_backbone(c.student, teacher))
    return teacher, b.set_dropout(student, c.student_dropout)
