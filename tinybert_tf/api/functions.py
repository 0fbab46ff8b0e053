"""The pipeline from Python: one function per mode, over the launcher's own code path.

Each function builds the mode's config (the packaged `task_distill` / `general_distill` config, or
`config=`), writes in-memory data to files in the workdir (`inputs`), and calls
`tinybert_tf.launch.modes.run`, the function `python -m tinybert_tf.main` calls: the same checks
before the workdir is claimed, the workdir lock, resume from the last checkpoint, best-on-eval
selection, the same files. Every user mistake raises `tinybert_tf.UserError` (one line naming
the fix); an interrupt (Ctrl-C, a notebook's stop button) writes a checkpoint and raises
`tinybert_tf.Interrupted`: call the function again with the same arguments to resume. The
process's dtype policy, seeds and Keras distribution are left as they were.
"""

from __future__ import annotations

import os
import sys

import tinybert_tf.api.config as config_api
import tinybert_tf.api.inputs as inputs
import tinybert_tf.api.results as results
from tinybert_tf.errors import Interrupted, UserError


def _environment():
    """When TensorFlow is not imported yet, the launcher's environment for it (its C++ log
    quiet, oneDNN on): first thing in every call, before in-memory data is written with it.
    XLA's element-wise clusters are allowed either way (read when TensorFlow's first function
    runs, which may still be ahead)."""
    from tinybert_tf.launch import hardware

    hardware.allow_fusible_clusters()
    if "tensorflow" not in sys.modules:
        hardware.quiet_tensorflow()
        hardware.enable_onednn()


def _prepare_process(run_config):
    """The backend check: Keras is fixed per process (`launch.backend`)."""
    from tinybert_tf.launch import backend

    backend.check_backend(backend.select_backend(run_config))


def _run(run_config, workdir, callbacks=()):
    """`modes.run` with every user-facing error as a `UserError` (the launcher's one line)."""
    from tinybert_tf import cli
    from tinybert_tf.launch import hardware, modes

    hardware.filter_predict_retracing()  # a notebook's stages: one Keras predict per model
    try:
        return modes.run(run_config, workdir, callbacks)
    except (UserError, Interrupted):
        raise
    except Exception as err:
        found = cli.user_message(err)
        if found is None:
            raise
        raise UserError(found[0]) from err


def _teachers(teacher):
    """A preset name / dir, or a list of them (an ensemble) -> the config's string."""
    if teacher is None or inputs.is_path(teacher):
        return "" if teacher is None else os.fspath(teacher)
    return ",".join(os.fspath(t) for t in teacher)


def _task_config(mode, workdir, teacher, train, eval, test, task, config, variant, keys):
    """The task_distill config of a task mode, its splits written to files when in memory."""
    keys = dict(keys)
    if teacher is not None:
        keys["teacher"] = _teachers(teacher)
    if task is not None:
        keys["task"] = task
    elif train is not None:
        keys["task"] = "file"
    run_config = config_api.build("task_distill", mode, config, variant, keys)
    _prepare_process(run_config)
    d = run_config.data
    columns = [d.text_column, *([d.text_b_column] if d.text_b_column else []), d.label_column]
    for split, data, key in (("train", train, "train_file"), ("eval", eval, "eval_file"),
                             ("test", test, "test_file")):
        if data is not None:
            d[key] = inputs.task_file(data, workdir, split, columns, bool(run_config.overwrite))
    return run_config


def finetune(workdir, teacher=None, *, train=None, eval=None, test=None, task=None,
             config=None, variant=None, callbacks=(), **keys):
    """Fine-tune a teacher (a preset + a new head) on a task: the baseline, and the teacher of
    task distillation. With `student=` naming trained weights, trains the student alone (the
    no-teacher baseline); with `finetune={"members": N}`, N teachers (an ensemble).

    Args:
        workdir: the run directory (local or gs://); calling again resumes the run in it.
        teacher: a keras-hub preset name, a preset dir or a Hugging Face BERT dir.
        train, eval, test: the task's splits: file paths (.tsv, .csv, .jsonl; CoNLL with
            `data={"format": "conll"}`), or a `tf.data.Dataset` / list of rows (dicts with the
            text and label columns, or `(text, label)` / `(text_a, text_b, label)` tuples),
            written once to `workdir/inputs/`. With `train` and no `task`, task="file".
        task: a GLUE / CoNLL name read through TFDS (e.g. "sst2"), or "file".
        config: a ConfigDict or a config name / path (default the packaged `task_distill`).
        variant: the config's variant, e.g. "tiny" (tests).
        callbacks: Keras callbacks run beside the stage's own (one Keras epoch is one log
            interval; `val_*` scores appear at evaluations).
        **keys: any config key: `seed=1`, `finetune={"epochs": 3, "learning_rate": 2e-5}`,
            `data={"seq_len": 128}`, `**{"data.seq_len": 128}`.

    Returns:
        A `Run`: `.preset` the best-on-eval model (`workdir/teacher`, or `workdir/student`),
        `.best["finetune"]` its score and step, `.dev_curves` / `.loss_curves` by step.

    Example:
    >>> run = tinybert_tf.finetune("runs/teacher", "bert_base_en_uncased",
    ...                            train="train.tsv", eval="dev.tsv")
    >>> run.best["finetune"].value, run.preset
    """
    workdir = os.fspath(workdir)
    _environment()
    run_config = _task_config("finetune", workdir, teacher, train, eval, test, task, config,
                              variant, keys)
    preset = _run(run_config, workdir, callbacks)
    stages = results.stage_dirs(workdir, "finetune", ["finetune"], int(run_config.finetune.members))
    return results.read_run(workdir, "finetune", preset, stages)


def distill_task(workdir, teacher=None, student=None, *, train=None, eval=None, test=None,
                 transfer=None, task=None, config=None, variant=None, callbacks=(), **keys):
    """TinyBERT task distillation: step 1 (intermediate layers), then step 2 (the prediction
    layer on the teacher's soft targets), each selecting its best model on the eval split.

    Args:
        workdir: the run directory; calling again resumes the run in it.
        teacher: a fine-tuned teacher preset (e.g. `finetune(...).preset`), an ensemble dir
            (finetune with members), or a list of fine-tuned presets (their averaged soft
            targets teach step 2).
        student: a general-distilled preset dir, "from_teacher:N" (N teacher layers) or an
            architecture name (random weights; warned about). Default: the config's.
        train, eval, test, task: as in `finetune`.
        transfer: unlabelled in-domain text the teacher labels (a transfer set): file paths /
            globs (.txt one text per line, or .tsv/.csv/.jsonl with the task's text columns),
            or a `tf.data.Dataset` / list of texts (written to `workdir/inputs/transfer.txt`).
        config, variant, callbacks, **keys: as in `finetune` (e.g. `stages="prediction"`,
            `prediction={"temperature": 2.0}`, `intermediate={"epochs": 5}`).

    Returns:
        A `Run`: `.preset` the distilled student (`workdir/prediction/student`), `.best` per
        stage ("intermediate": its eval loss; "prediction": the task metric).

    Example:
    >>> run = tinybert_tf.distill_task("runs/student", teacher=teacher.preset,
    ...                                student="from_teacher:2", train="train.tsv",
    ...                                eval="dev.tsv", transfer="unlabelled.txt")
    """
    workdir = os.fspath(workdir)
    _environment()
    if student is not None:
        keys["student"] = os.fspath(student)
    if transfer is not None:
        keys["transfer_file"] = inputs.text_file(transfer, workdir, "transfer",
                                                 bool(keys.get("overwrite")))
    run_config = _task_config("task_distill", workdir, teacher, train, eval, test, task, config,
                              variant, keys)
    preset = _run(run_config, workdir, callbacks)
    from tinybert_tf.launch import config_lib

    stages = results.stage_dirs(workdir, "task_distill", config_lib.stages(run_config), 1)
    return results.read_run(workdir, "task_distill", preset, stages)


def distill_general(workdir, teacher=None, corpus=None, *, student=None, recipe=None,
                    steps=None, config=None, variant=None, callbacks=(), **keys):
    """General distillation on unlabelled text (TinyBERT, MiniLM, MiniLMv2, DistilBERT recipes).

    Args:
        workdir: the run directory; calling again resumes the run in it.
        teacher: a keras-hub preset name or dir (a masked-LM preset for `recipe="distilbert"`).
        corpus: text files / globs (one document per line; `data={"doc_format": "blank"}` for
            blank-line-separated documents), or a `tf.data.Dataset` / list of texts (written
            to `workdir/inputs/corpus.txt`, one per line).
        student: an architecture name (`tinybert_4l_312h`), a preset dir or "from_teacher:N".
        recipe: tinybert_general | minilm | minilm_v2 | distilbert | tinybert_sentence.
        steps: training steps (default the config's).
        config, variant, callbacks, **keys: as in `finetune` (e.g. `batch_size=128`,
            `optimizer={"learning_rate": 1e-4}`, `layer_map="last"`).

    Returns:
        A `Run`: `.preset` the student backbone preset (`workdir/student`, with the learned
        projections), `.loss_curves["general_distill"]`.

    Example:
    >>> run = tinybert_tf.distill_general("runs/general", "bert_base_en_uncased",
    ...                                   corpus="corpus/*.txt", steps=20_000)
    """
    workdir = os.fspath(workdir)
    _environment()
    for key, value in (("student", student), ("recipe", recipe), ("steps", steps)):
        if value is not None:
            keys[key] = os.fspath(value) if key == "student" else value
    if teacher is not None:
        keys["teacher"] = _teachers(teacher)
    if corpus is not None:
        keys["data.train"] = inputs.text_file(corpus, workdir, "corpus",
                                              bool(keys.get("overwrite")))
    run_config = config_api.build("general_distill", "general_distill", config, variant, keys)
    _prepare_process(run_config)
    preset = _run(run_config, workdir, callbacks)
    stages = results.stage_dirs(workdir, "general_distill", [], 1)
    return results.read_run(workdir, "general_distill", preset, stages)


def _students(students):
    """A preset dir, a list of dirs, or {name: dir} -> evaluate's `name=dir,...` string."""
    if students is None or inputs.is_path(students):
        return "" if students is None else os.fspath(students)
    if isinstance(students, dict):
        return ",".join(f"{name}={os.fspath(path)}" for name, path in students.items())
    return ",".join(os.fspath(s) for s in students)


def compare(workdir, teacher=None, students=None, *, train=None, eval=None, test=None,
            task=None, split=None, config=None, variant=None, **keys):
    """Teacher(s) and student(s) side by side on one split: the task metric, parameters, size
    on disk and CPU latency; writes `report.json` and `report.md` into `workdir`.

    Args:
        workdir: where the report goes.
        teacher: a fine-tuned preset, an ensemble dir or a list of presets.
        students: a preset dir, a list of them, or {row name: preset dir}.
        train, eval, test, task: the task, as in `finetune` (its label names and splits).
        split: the split compared on (default the task's first evaluation split, e.g. "test").
        config, variant, **keys: as in `finetune` (e.g. `latency_runs=50`).

    Returns:
        A `Comparison`: `.rows` (one dict per model), `.markdown` (the table), `.split`.

    Example:
    >>> table = tinybert_tf.compare("runs/compare", teacher.preset,
    ...                             {"TinyBERT-4": student.preset}, train="train.tsv",
    ...                             eval="dev.tsv", test="test.tsv", split="test")
    >>> print(table.markdown)
    """
    workdir = os.fspath(workdir)
    _environment()
    if students is not None:
        keys["student"] = _students(students)
    if split is not None:
        keys["eval_split"] = split
    run_config = _task_config("evaluate", workdir, teacher, train, eval, test, task, config,
                              variant, keys)
    report = _run(run_config, workdir)
    return results.read_comparison(workdir, report)


def export_model(workdir, student=None, *, dir=None, model_name=None, version=None,
                 config=None, variant=None, **keys):
    """A student preset as a SavedModel for TF Serving (`serving_default` on token ids,
    `serving_text` / `serving_text_pair` on raw strings), verified against the preset in a fresh
    process, with the task's label names (docs/export.md).

    Args:
        workdir: a task_distill run dir (its `prediction/student` is the default student).
        student: the preset dir to export (default `workdir/prediction/student`).
        dir: the model base dir (default `workdir/export`); the model goes to
            `<dir>/<model_name>/<version>`.
        model_name: default "student". version: default the next free number.
        config, variant, **keys: as in `finetune` (e.g. `export={"hf": True}` also writes a
            Hugging Face checkpoint).

    Returns:
        An `Export`: `.path` the version directory (after `import tensorflow_text`, which
        registers its tokenizer ops, `tf.saved_model.load(path)` serves it).

    Example:
    >>> exported = tinybert_tf.export_model("runs/student")
    >>> serve = tf.saved_model.load(exported.path).signatures["serving_text"]
    >>> serve(text=tf.constant(["a fine film"]))
    """
    workdir = os.fspath(workdir)
    _environment()
    for key, value in (("student", student), ("dir", dir), ("model_name", model_name),
                       ("version", version)):
        if value is not None:
            keys[f"export.{key}"] = os.fspath(value) if key in ("student", "dir") else value
    run_config = config_api.build("task_distill", "export", config, variant, keys)
    _prepare_process(run_config)
    return results.Export(_run(run_config, workdir))
