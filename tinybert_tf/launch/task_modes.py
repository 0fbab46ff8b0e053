"""The task modes: `finetune` (a model + new head on the labels) and `task_distill` (TinyBERT's
two steps: intermediate layers, then the prediction layer with soft targets).

Every training stage selects its output on the task's eval split (`selection.EvalSelector`):
finetune and the prediction step on the task's first metric (higher is better), the intermediate
step on its distillation loss on the eval split (its head is not trained yet). The test split is
never used. Both distillation steps can train on a transfer set (`transfer_file`, TinyBERT
augmentation output included): unlabelled in-domain text that the teacher labels, appended to
the labelled train split (or alone, `transfer_only`); the `hard` term counts labelled rows only.

A run plans its data once (`task_data.TaskData`: each split read once, the epoch's batches and
the truncation counts counted once) and loads each teacher once: the lead teacher serves both
steps and the logit cache.
"""

from __future__ import annotations

import os

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from tinybert_tf import evaluate
from tinybert_tf.distill import students
from tinybert_tf.launch import (
    builders,
    config_lib,
    distribution,
    teacher_logits,
    teachers,
    train,
    validate,
)
from tinybert_tf.launch.selection import EvalSelector
from tinybert_tf.launch.task_data import TaskData
from tinybert_tf.launch.transfer_set import transfer_set

# ---- selection on the eval split ------------------------------------------------------------------


def task_scores(model, dataset, spec):
    """{metric: value} of a task model on a labelled `(x, y[, w])` dataset (Keras predict, so it
    runs under the model's distribution strategy)."""
    from tinybert_tf.data import metrics

    outputs = predict_once_traced(model, dataset.map(lambda *batch: batch[0]))
    labels = np.concatenate([np.asarray(batch[1]) for batch in dataset])
    predictions = evaluate.predictions_from_outputs(np.asarray(outputs, np.float32), spec)
    return metrics.compute(spec, predictions, labels)


def predict_once_traced(model, inputs):
    """`model.predict(inputs)` with one trace of its predict function for every batch shape.

    Keras traces predict on TensorFlow per new input shape, relaxing it each time: length
    buckets and a short last batch cost up to three traces per model. With one replica the
    function is traced once here for the dataset's own shapes (`[None, None]`) first. The
    outputs may differ from a shape-specialised trace's in the last bits: for scores, not for
    the teacher logits a student trains on (`cached_logits_data` keeps Keras' tracing)."""
    if (keras.backend.backend() == "tensorflow" and model.predict_function is None
            and model.distribute_strategy.num_replicas_in_sync == 1):
        model.make_predict_function()
        spec = tf.nest.map_structure(
            lambda s: tf.TensorSpec([None] * s.shape.rank, s.dtype), inputs.element_spec)
        model.predict_function.get_concrete_function([spec] * model.steps_per_execution)
    return model.predict(inputs, verbose=0)


def _selector(config, task, trainer, model, run_dir, total, save, score=None, patience=0):
    """An EvalSelector on the task's first eval split, or None (no eval split, or eval_every<0).

    task: the run's `TaskData`; trainer: the model being fit (its optimizer counts the steps);
    model: the task model scored (default score: its task metrics) and saved. Selection is on
    the task's first metric, or on `loss` (lower is better) when `score(eval_data)` is given.
    """
    spec = task.spec
    if config.eval_every < 0 or not spec.eval_splits:
        print("No model selection (no eval split or eval_every < 0): the output is the last model.")
        return None
    from tinybert_tf.data import metrics

    data = task.evaluation(spec.eval_splits[0])
    every = config.eval_every or task.per_epoch
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
    schedule runs (`per_epoch`: the training batches of one epoch, `TaskData.per_epoch`)."""
    stop = f", early stop after {patience} evaluations without improvement" if (
        patience and selector) else ""
    plan = f"{epochs} epochs x {per_epoch} steps = {epochs * per_epoch} steps"
    return f"up to {plan}{stop}" if stop else plan


def _run(config, task, model, data, run_dir, stage, selector, launch, total):
    """Train one stage: its truncation counts head its metrics.jsonl."""
    settings = builders.train_settings(config, {"truncation": task.truncation})
    train.run_stage(model, data, run_dir, settings, total, _callbacks(selector, launch), stage,
                    task.per_epoch)


def _save_task_model(model, tokenizer, path, spec, **kwargs):
    """A task model's preset with the task's label names beside it (`LABELS_FILE`), so
    evaluate, export and a later run read them with no flag."""
    from tinybert_tf.export.labels import write_preset_labels

    builders.save_model(model, tokenizer, path, **kwargs)
    if distribution.is_chief():
        write_preset_labels(path, spec.label_names)
    return path


# ---- finetune -------------------------------------------------------------------------------------


def finetune(config, workdir, launch):
    """Fine-tune the teacher (preset + new head) on the task; writes workdir/teacher (best on
    eval) and workdir/teacher_last. With `finetune.members` N > 1: N teachers from the same
    preset with seeds seed..seed+N-1 into workdir/teacher/member_K (run dirs
    workdir/finetune/member_K; a restart resumes the member it stopped in) and
    workdir/teacher/members.txt, so `--config.teacher=workdir/teacher` is the whole ensemble.
    launch: the dispatcher's (strategy, the teacher's tokenizer, the task)."""
    task = TaskData(config, launch.spec, launch.tokenizer)
    task.truncation  # noqa: B018  (counted and printed once, before any member trains)
    which = finetuned(config)
    print(f"[finetune] teacher {config.teacher}: a new head on the teacher preset"
          if which == "teacher" else
          f"[finetune] student {config.student}: the student alone, no teacher")
    members = int(config.finetune.members)
    if members <= 1:
        return _finetune_one(config, task, os.path.join(workdir, "finetune"), launch,
                             os.path.join(workdir, which))
    out, names = os.path.join(workdir, which), [f"member_{k}" for k in range(members)]
    for k, name in enumerate(names):
        member = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
        member.seed = config.seed + k
        keras.utils.set_random_seed(member.seed)  # as a run started with this seed
        print(f"[finetune] member {k + 1} of {members} (seed {member.seed})")
        _finetune_one(member, task, os.path.join(workdir, "finetune", name), launch,
                      os.path.join(out, name))
    if distribution.is_chief():
        teachers.write_members(out, names)
    print(f"Ensemble of {members} teachers: {out} (members.txt)")
    return out


def _finetune_one(config, task, run_dir, launch, out):
    """One fine-tuned model (seed `config.seed`: its batch order and its head) trained in
    `run_dir`, its best-on-eval in `out`. task: the run's `TaskData`; launch: the dispatcher's
    (strategy, the caller's callbacks)."""
    strategy, spec, tokenizer = launch.strategy, task.spec, task.tokenizer
    data = task.train(seed=config.seed)
    epochs, patience = config_lib.stage_budget(config, "finetune")
    total = task.per_epoch * epochs
    with strategy.scope():
        model = _finetune_model(config, spec, launch)
        loaded_with = model.optimizer  # keras-hub's default: what the saved preset carries
        if spec.kind == "token_classification":
            _freeze_pooler(model)
        builders.compile_model(model, strategy, config, total, config.finetune.learning_rate,
                               **_finetune_loss(spec))

    def save(path):
        _save_task_model(model, tokenizer, path, spec, optimizer=loaded_with)

    selector = _selector(config, task, model, model, run_dir, total, save, patience=patience)
    print(f"[finetune] {_plan(epochs, patience, task.per_epoch, selector)}")
    _run(config, task, model, data, run_dir, "finetune", selector, launch, total)
    if selector is None:
        save(out)
        return out
    return selector.finish(out)


def finetuned(config):
    """What finetune trains: "student" when config.student names trained weights
    (`from_teacher:N`, a preset dir: the no-teacher baseline distillation must beat), else
    "teacher" (`validate.finetunes_student`)."""
    return "student" if validate.finetunes_student(config) else "teacher"


def _finetune_model(config, spec, launch):
    """The task model finetune trains: the teacher preset with a new head, or (`finetuned`) the
    student `config.student` names with a new head and the students' dropout."""
    token_level = spec.kind == "token_classification"
    if finetuned(config) == "teacher":
        return builders.load_classifier(launch.lead, spec.num_classes, token_level=token_level)
    teacher = None  # only a from_teacher:N student reads it: its embeddings and layers
    if config.student.startswith("from_teacher:"):
        teacher = builders.load_backbone(launch.lead)
    backbone = builders.student_backbone(config.student, teacher)
    return builders.set_dropout(builders.new_task_model(spec, backbone), config.student_dropout)


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


# ---- task_distill ---------------------------------------------------------------------------------


def task_distill(config, workdir, launch):
    """TinyBERT task distillation: step 1 intermediate layers, step 2 prediction layer; each
    step's output (`<step>/student`) is its best-on-eval model, `<step>/student_last` beside.
    The lead teacher (`intermediate.teacher`) is loaded once for both steps. launch: the
    dispatcher's (strategy, teacher dirs, the lead teacher's tokenizer, the task)."""
    spec, tokenizer = launch.spec, launch.tokenizer
    task = TaskData(config, spec, tokenizer, transfer_set(config, spec, workdir, tokenizer))
    task.per_epoch, task.truncation  # noqa: B018  (counted once, before the teacher loads)
    with launch.strategy.scope():  # step 1's teacher: its layers start the student
        teacher = teacher_logits.load_teacher(config, launch.lead, spec, launch.label_orders)
    out = None
    for stage in config_lib.stages(config):
        out = _distill_step(config, workdir, launch, stage, task, teacher)
    return out


def _distill_step(config, workdir, launch, stage, task, teacher):
    """One step of task distillation (`intermediate` or `prediction`) in `<workdir>/<stage>`
    with the loaded lead `teacher`; returns its student preset dir. launch: the dispatcher's
    (strategy, teacher dirs, the caller's callbacks)."""
    strategy, spec = launch.strategy, task.spec
    epochs, patience = config_lib.stage_budget(config, stage)
    total = task.per_epoch * epochs
    recipe = config_lib.config_recipe(config, stage, regression=spec.kind == "regression")
    with strategy.scope():
        student = _step_student(config, workdir, stage, spec, teacher)
        distiller = builders.make_distiller(teacher, student, recipe)
        builders.compile_model(distiller, strategy, config, total, config[stage].learning_rate)
    if stage == "prediction" and config.prediction.cache_teacher_logits:
        data = teacher_logits.cached_logits_data(config, task, launch.teacher_dirs, strategy,
                                                 loaded={launch.lead: teacher},
                                                 orders=launch.label_orders)
    else:
        data = task.train()
    print(f"[{stage}] {_plan(epochs, patience, task.per_epoch)}, recipe {recipe.name} "
          f"{dict(recipe.weights)}")
    stage_dir = os.path.join(workdir, stage)

    def save(path):
        _save_task_model(student, task.tokenizer, path, spec)

    def eval_loss(data):
        return distiller.evaluate(data, verbose=0, return_dict=True)

    selector = _selector(config, task, distiller, student, stage_dir, total, save,
                         score=eval_loss if stage == "intermediate" else None, patience=patience)
    _run(config, task, distiller, data, stage_dir, stage, selector, launch, total)
    out = os.path.join(stage_dir, "student")
    if selector is None:
        return _save_task_model(student, task.tokenizer, out, spec)
    return selector.finish(out)


def _step_student(config, workdir, stage, spec, teacher):
    """The student of a task distillation step, under the current scope: the prediction step's
    carries step 1's weights when step 1 wrote its student."""
    token_level = spec.kind == "token_classification"
    stage_one = os.path.join(workdir, "intermediate", "student")
    if stage == "prediction" and tf.io.gfile.isdir(stage_one):
        student = builders.load_classifier(stage_one, what="student", token_level=token_level)
    else:
        if config.student in students.PRESETS:
            print(f"Warning: the student {config.student} starts from random weights; distil a "
                  "general student first (--config=general_distill, then --config.student="
                  "<its workdir>/student) or start from the teacher's layers "
                  "(--config.student=from_teacher:N).")
        student = builders.new_task_model(spec, builders.student_backbone(config.student,
                                                                          teacher))
    return builders.set_dropout(student, config.student_dropout)
