"""Launch checks: what the dispatcher (`modes.run`) runs before it claims the workdir.

`check_launch` looks at everything a training mode's config names that is cheap to check
(numbers, the workdir, the task's files, the teacher and student presets, whether the recipe
fits their sizes) and raises a one-line `UserError` on the first mistake; `check_corpus` scans
general distillation's corpus with the teacher's tokenizer. They only read: the dispatcher
builds the tokenizer and the distribution context and hands them to the mode, and nothing is
written before the checks pass, so a run re-launched with the mistake fixed is not refused as
"a different config".
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from tinybert_tf.distill import distiller, students
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import builders, checkpoints, config_lib, strategy, teachers, train

SCAN_LINES = 100_000  # the launcher's corpus scan stops after about this many lines


def check_launch(config, workdir):
    """All checks of a training mode's `config` but the corpus scan's; raises a one-line
    UserError. Returns `(teacher_dirs, lead)`: the run's teacher dirs (`teachers.resolve`, read
    once here) and the one whose tokenizer the run reads: the one teacher, or task_distill's
    step-1 teacher (`intermediate.teacher`)."""
    _check_numbers(config, workdir)
    check_workdir(workdir)
    teacher_dirs = check_teachers(config)
    check_teacher_dtype(config)
    lead = teacher_dirs[config.intermediate.teacher if config.mode == "task_distill" else 0]
    if config.mode != "finetune" or finetunes_student(config):
        check_student(config.student)
    if config.mode != "finetune":
        check_recipe(config, lead)
    check_seq_len(config, teacher_dirs)
    if config.mode != "general_distill":
        check_task_inputs(config)
    return teacher_dirs, lead


def finetunes_student(config):
    """Does finetune train `config.student` (`from_teacher:N`, a preset dir: the no-teacher
    baseline) rather than the teacher (a students.PRESETS name is an untrained architecture)?"""
    spec = str(config.student or "")
    return config.mode == "finetune" and bool(spec) and spec not in students.PRESETS


def _positions(path):
    """The position-table length of a local preset / Hugging Face dir, or None (not local)."""
    if "://" in path or not tf.io.gfile.isdir(path):
        return None
    return builders.backbone_config(path).get("max_sequence_length")


def check_seq_len(config, teacher_dirs):
    """data.seq_len fits every teacher's position table and the student's (a preset dir's own;
    `from_teacher:N` and architecture names take the teacher's): longer inputs would index past
    the table."""
    models = [("teacher", path) for path in teacher_dirs]
    spec = str(config.student or "")
    trains_student = config.mode != "finetune" or finetunes_student(config)
    if trains_student and spec and not spec.startswith("from_teacher:") and \
            spec not in students.PRESETS:
        models.append(("student", spec))
    for what, path in models:
        limit = _positions(path)
        if limit and config.data.seq_len > limit:
            raise LaunchError(
                f"data.seq_len={config.data.seq_len} is longer than the {what}'s position table "
                f"({limit} positions, {path}); pass --config.data.seq_len={limit} or less.")


# ---- numbers ------------------------------------------------------------------------------------


def _resuming(workdir):
    return "://" not in workdir and checkpoints.has_checkpoint(os.path.join(workdir, "checkpoints"))


def _check_numbers(config, workdir):
    if config.batch_size < 1:
        raise LaunchError(f"batch_size={config.batch_size}; pass --config.batch_size=<N >= 1> "
                          "(the global batch, split across replicas).")
    strategy.check_precision(config.precision)
    if config.checkpoint_every < 1:
        raise LaunchError(f"checkpoint_every={config.checkpoint_every}; pass "
                          "--config.checkpoint_every="
                          "<steps >= 1> (a multiple of log_every).")
    train.check_intervals(config.log_every, config.checkpoint_every)
    if config.mode == "general_distill":
        if config.steps < 1 and not _resuming(workdir):
            raise LaunchError(f"steps={config.steps}: nothing to train (the student would be saved "
                              "untrained); pass --config.steps=<N >= 1>.")
        if config.data.seq_len < 3:
            raise LaunchError(f"data.seq_len={config.data.seq_len} is too small; use at least 3.")
        return
    for stage in config_lib.stages(config):
        epochs, patience = config_lib.stage_budget(config, stage)
        if epochs < 1:
            raise LaunchError(f"{stage}.epochs={epochs}: nothing to train; pass "
                              f"--config.{stage}.epochs=<N >= 1>.")
        if patience < 0:
            raise LaunchError(f"{stage}.patience={patience}; pass --config.{stage}.patience="
                              "<evaluations >= 1>, or 0 to never stop early.")


# ---- workdir and inputs ---------------------------------------------------------------------------


def check_workdir(workdir):
    """A local workdir (or, when it does not exist yet, its nearest existing parent) must be a
    directory this user can write; bucket paths (gs://) are checked when first written."""
    if not workdir:
        raise LaunchError("--workdir is empty; pass a run directory (local path or gs://).")
    if "://" in workdir:
        return
    probe = os.path.abspath(workdir)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise LaunchError(f"workdir {workdir}: {probe} is a file, not a directory; pass another "
                          "--workdir.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LaunchError(f"workdir {workdir} is not writable ({probe} is read-only for this "
                          "user); pass a --workdir you can write to.")


def _check_files(value, key):
    """Comma-separated files/globs of config key `key`: each matches, not all are empty."""
    files = []
    for pattern in (p.strip() for p in str(value).split(",") if p.strip()):
        matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise LaunchError(f"{key}: no file matches {pattern!r}; check the path.")
        files += [m for m in matched if not tf.io.gfile.isdir(m)]
    if files and not any(tf.io.gfile.stat(f).length for f in files):
        raise LaunchError(f"{key}: {value} is empty; pass a file with rows.")


def check_task_inputs(config):
    """The task's files (task=file) and transfer sets exist and are not empty; a task name is
    known. Their rows are checked when the task is loaded."""
    from tinybert_tf.data import task_files, tasks

    d = config.data
    task_files.check_tsv_quoting(d.tsv_quoting)  # a UserError: one line, before the claim
    if config.task == "file":
        if not d.train_file:
            raise LaunchError("task=file needs --config.data.train_file=<TSV, CSV or JSONL>.")
        for key in ("train_file", "eval_file", "test_file"):
            if d[key]:
                _check_files(d[key], f"data.{key}")
    else:
        tasks.get_task(config.task)
    check_metric(config)
    if config.mode == "task_distill":
        for key in ("transfer_file", "augmented_train_file"):
            if config[key]:
                _check_files(config[key], key)
        if config.transfer_only and not (config.transfer_file or config.augmented_train_file):
            raise LaunchError("transfer_only=True needs --config.transfer_file=<files or globs>.")


def check_metric(config):
    """data.format, data.metric and data.positive_label fit the task (the checks of
    `tasks.with_metric`, which the mode repeats on the loaded task): the kind of a TASKS name,
    or of a file task from data.format and data.regression; a positive label among the
    training file's labels (read here only when one is named)."""
    from tinybert_tf.data import conll_files, task_files, task_spec, tasks

    d = config.data
    kind = conll_files.file_kind(config.task, d.format, d.regression, d.text_b_column)
    if kind is None:
        tasks.with_metric(tasks.get_task(config.task), d.metric, d.positive_label)
        return
    labels = None
    if kind == "classification" and d.metric == "f1" and d.positive_label:
        columns = (d.text_column,) + ((d.text_b_column,) if d.text_b_column else ())
        labels = sorted(set(task_files.parse_file(
            d.train_file, columns, d.label_column, True, d.skip_bad_rows, d.tsv_quoting).labels))
    task_spec.check_metric(kind, d.metric, d.positive_label, labels)


def check_corpus(config, tokenizer):
    """The corpus matches files with documents -> its scan record (also for pretokenized
    shards: their `corpus_meta.json` counts). A text corpus is scanned for about SCAN_LINES
    lines (`corpus_scan.scan_corpus`); when that part holds no document the rest is read up to
    the first one."""
    from tinybert_tf.data import corpus, corpus_scan, shards

    d = config.data
    if not d.train:
        raise LaunchError("No corpus given; pass --config.data.train=<text files, globs or gs://>.")
    if d.format not in ("text", "pretokenized"):
        raise LaunchError(f"data.format must be 'text' or 'pretokenized', got {d.format!r}.")
    files = corpus.expand_patterns(d.train)
    fix = "pass --config.data.train=<files with text>"
    if d.format == "text":
        stats = corpus_scan.scan_corpus(files, d.doc_format, tokenizer, d.seq_len, SCAN_LINES)
        if not stats.documents and not any(
                True for _ in corpus.documents_dataset(files, d.doc_format).take(1)):
            stats.complete = True  # no document anywhere: refused below
        corpus_scan.require_documents(stats, d.train, fix)
        counts = dataclasses.asdict(stats)
        del counts["sequences"]  # counted by the shard writer only
        return {"format": "text", "patterns": d.train, "seq_len": d.seq_len,
                "max_lines": SCAN_LINES, **counts}
    shard_files = [f for f in files if not f.endswith(".json")]
    if not shard_files or not any(True for _ in tf.data.TFRecordDataset(shard_files).take(1)):
        raise corpus.CorpusError(f"Pretokenized shards {d.train!r} hold no sequences; re-run "
                                 "tinybert-tf-prepare-corpus on a corpus with text.")
    shards.pretokenized_dataset(d.train, seq_len=d.seq_len)  # refuses shards packed longer
    meta = shards.read_corpus_meta(os.path.dirname(shard_files[0])) or {}
    return {"format": "pretokenized", "patterns": d.train, "seq_len": d.seq_len,
            "shards": len(shard_files), "counts_from": "corpus_meta.json" if meta else None,
            **meta.get("stats", {})}


# ---- presets and recipes --------------------------------------------------------------------------


def check_teachers(config):
    """The config's teacher(s) (`teachers.resolve`): one for general distillation and finetune
    (its starting preset), one or an ensemble for task_distill; every one a preset, an ensemble's
    members compatible, the step settings that pick among them in range. Returns the dirs."""
    dirs = teachers.resolve(config.teacher) if config.mode == "task_distill" else [
        teachers.one(config.teacher, config.mode)]
    for path in dirs:
        builders.check_preset(path, "teacher")
    if config.mode != "task_distill":
        return dirs
    if not 0 <= config.intermediate.teacher < len(dirs):
        raise LaunchError(f"intermediate.teacher={config.intermediate.teacher} but there are "
                          f"{len(dirs)} teachers; pass 0..{len(dirs) - 1}.")
    from tinybert_tf.distill import ensemble

    if config.prediction.combine not in ensemble.COMBINES:
        raise LaunchError(f"prediction.combine={config.prediction.combine!r}; use one of "
                          f"{', '.join(ensemble.COMBINES)}.")
    if (len(dirs) > 1 and not config.prediction.cache_teacher_logits
            and config.stages != "intermediate"):
        raise LaunchError("several teachers need prediction.cache_teacher_logits=True (their "
                          "soft targets are combined once, over the cached logits).")
    teachers.check_compatible(dirs)
    return dirs


# "" = the precision's; int8 = float32 with int8 kernels (`distill.quantize`); auto: `hardware`.
TEACHER_DTYPES = ("auto", "", "float32", "bfloat16", "float16", "mixed_bfloat16",
                  "mixed_float16", "int8")


def check_teacher_dtype(config):
    """`teacher_dtype` names a TEACHER_DTYPES entry; an int8 teacher (its kernels int8) cannot
    be the copy a `from_teacher:N` student starts from. `precision` (the student's) is checked
    apart and never int8."""
    if config.teacher_dtype not in TEACHER_DTYPES:
        names = ", ".join(repr(d) for d in TEACHER_DTYPES)
        raise LaunchError(f"Unknown teacher_dtype {config.teacher_dtype!r}; use one of {names}.")
    if (config.teacher_dtype == "int8" and config.mode != "finetune"
            and config.student.startswith("from_teacher:")):
        raise LaunchError(f"student {config.student!r} copies the teacher's weights, which "
                          "teacher_dtype=int8 quantises; pass --config.teacher_dtype=float32 "
                          "(or bfloat16), or a student preset.")


def check_student(spec):
    """`from_teacher:N` (N >= 1), a students.PRESETS name, or a preset (`builders.check_preset`)."""
    if spec.startswith("from_teacher:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise LaunchError(f"student {spec!r}: use from_teacher:<layers >= 1>, e.g. "
                              "from_teacher:6.")
    elif spec not in students.PRESETS:
        builders.check_preset(spec, "student")


def check_recipe(config, teacher_dir):
    """The recipe of the step that maps layers fits the teacher and the student, read from the
    sizes in their presets' config.json (`builders.check_fit`): general distillation's, or
    task distillation's intermediate step's (the prediction step maps none). A teacher or
    student known only once loaded (a keras-hub preset name, hf://) is checked when its
    Distiller is built instead (`builders.make_distiller`)."""
    if config.mode == "task_distill" and "intermediate" not in config_lib.stages(config):
        return
    stage = "general" if config.mode == "general_distill" else "intermediate"
    recipe = config_lib.config_recipe(config, stage)
    head = stage == "intermediate" or config_lib.masked_lm(recipe)
    teacher = _preset_shape(teacher_dir, head)
    student = _student_shape(config.student, teacher) if teacher else None
    if student is not None:
        builders.check_fit(recipe, teacher, student)


def _preset_shape(path, head):
    """The `distiller.Shape` of a local preset dir, or None (a preset read only when loaded)."""
    if "://" in path or not tf.io.gfile.isdir(path):
        return None
    return distiller.Shape.from_config(builders.backbone_config(path), head)


def _student_shape(spec, teacher):
    """The `distiller.Shape` of the student `spec` names (see `check_student`) for `teacher`."""
    if spec.startswith("from_teacher:"):
        layers = int(spec.split(":", 1)[1])
        try:
            students.teacher_layer_choice(teacher.layers, layers)
        except ValueError as err:
            raise LaunchError(f"student {spec!r}: {err}") from None
        return dataclasses.replace(teacher, layers=layers)
    if spec in students.PRESETS:
        return distiller.Shape.from_config(students.PRESETS[spec], teacher.head)
    return _preset_shape(spec, teacher.head)
