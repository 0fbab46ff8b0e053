"""The `evaluate` mode: a config's teacher(s) and student(s) side by side on one task split
(`run_splits`: on several, every model loaded once).

Reads config.teacher (one preset dir, several, or an ensemble dir: `launch.teachers`),
config.student (`parse_students`), config.task / config.data.*, config.eval_split (default the
task's first eval split), config.batch_size (evaluation batches) and config.latency_runs
(default 20); writes `report.json` + `report.md` into the workdir (`tinybert_tf.evaluate`, the
library that scores, times and formats). Several teachers: a row per teacher (`teacher K`), an
`ensemble` row, every share taken of the ensemble and, in a second column, of the best single
teacher chosen on the dev split.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tinybert_tf import evaluate
from tinybert_tf.distill import heads, students
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import builders, teachers
from tinybert_tf.launch.task_data import TaskData, task_spec

RESERVED = ("teacher", "ensemble")  # row names a student cannot take (and "teacher K")


def parse_students(value):
    """`config.student` -> {name: preset dir}.

    A comma-separated list; each item is `name=dir` or a bare `dir`. Bare dirs are named
    `student` when alone, else `student1`, `student2`, ... by position. A name is the text before
    the first `=` when it holds no `/` (so `runs/lr=3e-5/student` is a bare dir) and may contain
    spaces, e.g. `TinyBERT-4: (b) two-step=/runs/b/prediction/student`; `teacher`, `teacher K`
    and `ensemble` are reserved. Names and dirs cannot contain commas.
    """
    items = [item.strip() for item in str(value or "").split(",") if item.strip()]
    if not items:
        raise LaunchError("No student given; pass --config.student=<preset dir> or "
                          "name=dir,name=dir.")
    out = {}
    for i, item in enumerate(items, 1):
        name, sep, path = item.partition("=")
        name = name.strip()
        if not (sep and name and "/" not in name and path.strip()):
            name, path = ("student" if len(items) == 1 else f"student{i}"), item
        if name in RESERVED or name.startswith("teacher ") or name in out:
            raise LaunchError(f"Student name {name!r} is reserved or repeated in "
                              f"--config.student={value}; give each student a unique name=dir.")
        out[name] = path.strip()
    return out


def _student_value(config, workdir):
    """config.student, or this workdir's task-distilled student when it names an architecture."""
    value = str(config.get("student", "") or "")
    if value in students.PRESETS or value.startswith("from_teacher:") or not value:
        default = os.path.join(workdir, "prediction", "student")
        if tf.io.gfile.isdir(default):
            print(f"Evaluating the student task_distill wrote: {default}")
            return default
        raise LaunchError(f"--config.student={value!r} is not a preset dir; pass the dir(s) "
                          "task_distill wrote, e.g. <workdir>/prediction/student or a=dir,b=dir.")
    return value


def _check_tokenizers(tokenizer, dirs):
    """A student dir that carries a tokenizer must carry the teacher's vocabulary."""
    from keras_hub.src.utils import preset_utils

    vocab = tokenizer.get_vocabulary()
    for name, path in dirs.items():
        if not preset_utils.check_file_exists(path, preset_utils.TOKENIZER_CONFIG_FILE):
            continue
        if _vocabulary(path) != vocab:
            raise LaunchError(f"{name} ({path}) has a different tokenizer vocabulary from the "
                              "teacher's; distil and evaluate it against a teacher with its vocab.")


def _vocabulary(path):
    """A preset's tokenizer vocabulary: its WordPiece vocabulary file read as keras-hub reads it
    (a token a line, trailing whitespace stripped; no tokenizer built), else the loaded
    tokenizer's."""
    import keras_hub

    vocab_file = os.path.join(path, "assets", "tokenizer", "vocabulary.txt")
    if tf.io.gfile.exists(vocab_file):
        with tf.io.gfile.GFile(vocab_file) as f:
            return [line.rstrip() for line in f]
    return keras_hub.tokenizers.Tokenizer.from_preset(path).get_vocabulary()


def _split(config, spec, split=None):
    """The split to evaluate on (`split`, else config.eval_split, else the task's first eval
    split), checked to be one of the task's."""
    split = split or config.get("eval_split") or (
        spec.eval_splits[0] if spec.eval_splits else None)
    known = (*spec.eval_splits, *spec.test_splits)
    if split is None or split not in known:
        raise LaunchError(f"Task {spec.name!r} has no split {split!r} to evaluate on (it has "
                          f"{list(known)}); pass --config.eval_split=<one of them> or "
                          "--config.data.eval_file=<labelled file>.")
    return split


def _presets(config, workdir):
    """(teacher dirs, {student name: dir}), each a checked preset; teachers compatible."""
    teacher_dirs = teachers.resolve(config.teacher)
    for path in teacher_dirs:
        builders.check_preset(path, "teacher")
    teachers.check_compatible(teacher_dirs)
    student_dirs = parse_students(_student_value(config, workdir))
    for path in student_dirs.values():
        builders.check_preset(path, "student")
    return teacher_dirs, student_dirs


def _dev_scores(data, spec, models, names, split, reports):
    """{teacher name: first metric on the task's first eval split}, or None when `split` is it;
    read from `reports` (split: report) when that split was evaluated already."""
    if len(names) < 2 or not spec.eval_splits or split == spec.eval_splits[0]:
        return None
    first, dev_split = spec.metrics[0], spec.eval_splits[0]
    if dev_split in reports:
        rows = {r["name"]: r for r in reports[dev_split]["models"]}
        return {n: rows[n]["metrics"][first] for n in names}
    dev = data.evaluation(dev_split)
    return {n: evaluate.evaluate_model(models[n][0], dev, spec)[first] for n in names}


def run_from_config(config, workdir, launch=None):
    """Evaluate mode: teacher(s) + student(s) on one split; returns the report dict (as written
    to `<workdir>/report.json`, with `split`). `launch` (what the dispatcher built) is unused:
    nothing here runs under a strategy, and the tokenizer is the first teacher's."""
    spec = task_spec(config)
    split = _split(config, spec)
    runs = int(config.get("latency_runs", 20))
    return _run(config, spec, {split: (workdir, runs)}, workdir)[split]


def run_splits(config, outputs, workdir):
    """The evaluate mode on several splits with every model loaded (and traced) once.

    Args:
        config: the evaluate mode's config (its `eval_split` is not read).
        outputs: {split: (directory for report.json + report.md, latency runs)}, in order.
        workdir: where a student named by architecture is looked up (`_student_value`).

    Returns:
        {split: report dict}, each as `run_from_config` returns it.
    """
    spec = task_spec(config)
    for split in outputs:
        _split(config, spec, split)
    return _run(config, spec, outputs, workdir)


def _run(config, spec, outputs, workdir):
    """`run_splits` for a task spec already read."""
    teacher_dirs, student_dirs = _presets(config, workdir)
    tokenizer = builders.load_tokenizer(teacher_dirs[0])
    _check_tokenizers(tokenizer, student_dirs)
    names = ["teacher"] if len(teacher_dirs) == 1 else [
        f"teacher {k}" for k in range(len(teacher_dirs))]
    rows = {**dict(zip(names, teacher_dirs)), **student_dirs}
    orders = {name: teachers.label_order(path, spec.label_names, name) for name, path in
              rows.items()}  # every model's labels against the task's, before any loads
    models = {name: (heads.reorder_classes(builders.load_task_model(
        path, name if name in names else f"student {name}"), orders[name]), path)
        for name, path in rows.items()}
    kwargs = dict(reference="teacher")
    if len(names) > 1:
        kwargs = dict(ensembles={"ensemble": names}, reference="ensemble")
    data, reports = TaskData(config, spec, tokenizer), {}
    for split, (out, runs) in outputs.items():
        report = evaluate.compare(models, spec, data.evaluation(split), config.data.seq_len,
                                  runs=runs, **kwargs)
        report["split"] = split
        if len(names) > 1:  # every row's share of the best single teacher (on dev) too
            report = evaluate.with_best_teacher(report, names, _dev_scores(
                data, spec, models, names, split, reports))
        json_path, md_path = evaluate.write_report(report, out)
        print(evaluate.format_markdown(report))
        print(f"Wrote {json_path} and {md_path}")
        reports[split] = report
    return reports
