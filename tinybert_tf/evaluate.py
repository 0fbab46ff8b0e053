"""The `evaluate` mode: a teacher and one or more students side by side on one task split.

For each model (a task preset dir: text classifier, regressor or `heads.TokenClassifier`): the
task metrics (`data.metrics.compute`), parameter count, bytes on disk of its preset dir and CPU
latency of a `tf.function` forward at batch 1 and 32; for each student, its share of the
reference's (teacher's) first metric. Writes `report.json` + `report.md` into the workdir.

Several students: `--config.student=name=dir,name=dir` (see `parse_students`). Several teachers
(`--config.teacher=DIR1,DIR2` or an ensemble dir, `launch.teachers`): a row per teacher
(`teacher K`), an `ensemble` row (mean of their probabilities; parameters, size and latency
summed), every share taken of the ensemble and, in a second column, of the best single teacher.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from tinybert_tf.data import metrics as task_metrics
from tinybert_tf.distill import features, heads, students

BATCH_SIZES = (1, 32)  # latency batch sizes
WARMUP_RUNS = 2  # untimed forward passes before the timed ones


# ---- metrics ------------------------------------------------------------------------------------


def predict(model, dataset):
    """Model outputs and labels over a whole `(x, y[, sample_weight])` dataset, in order.

    Returns (outputs float32 `[N, C]` / `[N, 1]` / `[N, S, C]`, labels `[N]` / `[N, S]`).
    """
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    outputs, labels = [], []
    for batch in dataset:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if y is None:
            raise ValueError("evaluate needs labelled data; pick a split with labels.")
        outputs.append(np.asarray(forward(x), np.float32))
        labels.append(np.asarray(y))
    if not outputs:
        raise ValueError("The evaluation split is empty; check --config.data.eval_file / task.")
    return np.concatenate(outputs), np.concatenate(labels)


def predictions_from_outputs(outputs, spec):
    """Regression value `[N]` for regression tasks, else argmax class ids `[N]` or `[N, S]`."""
    if spec.kind == "regression":
        return outputs.reshape(len(outputs), -1)[:, 0]
    return outputs.argmax(-1)


def evaluate_model(model, dataset, spec):
    """{metric: value} of `model` on `dataset` for the task `spec` (a `tasks.TaskSpec`).

    Token classification: positions labelled -100 are dropped and entity F1 is computed over
    the remaining first word pieces (`metrics.compute`).
    """
    check_head(model, spec)
    outputs, labels = predict(model, dataset)
    return task_metrics.compute(spec, predictions_from_outputs(outputs, spec), labels)


def check_head(model, spec, name="model"):
    """Refuses a model whose head does not fit the task (kind or number of outputs)."""
    token_level = bool(getattr(model, "token_level", False))
    if token_level != (spec.kind == "token_classification"):
        head = "a token-level" if token_level else "a sequence-level"
        raise ValueError(f"{name} has {head} head but task {spec.name!r} is {spec.kind}; "
                         "evaluate a model fine-tuned/distilled on this task.")
    outputs = getattr(model, "num_classes", None)
    if outputs is not None and int(outputs) != spec.num_classes:
        raise ValueError(f"{name} predicts {outputs} classes but task {spec.name!r} has "
                         f"{spec.num_classes}; evaluate a model trained on this task.")


# ---- size and speed -----------------------------------------------------------------------------


def preset_size(path):
    """Total bytes of every file under a preset dir (local or gs://)."""
    total = 0
    for root, _, files in tf.io.gfile.walk(path):
        for f in files:
            total += tf.io.gfile.stat(os.path.join(root, f)).length
    return int(total)


def latency_inputs(model, seq_len, batch_size):
    """Random token ids `[batch_size, seq_len]` (no padding, seed 0) in the model's input format."""
    backbone = features.backbone_of(model)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, backbone.vocabulary_size, size=(batch_size, seq_len)).astype("int32")
    inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids),
              "padding_mask": np.ones_like(ids)}
    names = list(model.input) if isinstance(model.input, dict) else list(inputs)
    return {k: tf.constant(inputs[k]) for k in names}


def measure_latency(model, seq_len, batch_size, runs=20):
    """Median wall-clock seconds of `runs` forward passes of a `tf.function`-compiled model at
    `[batch_size, seq_len]` on the current device, after WARMUP_RUNS untimed calls (tracing)."""
    if runs < 1:
        raise ValueError(f"latency runs must be >= 1, got {runs}; set --config.latency_runs.")
    x = latency_inputs(model, seq_len, batch_size)
    forward = tf.function(lambda inputs: model(inputs, training=False))
    for _ in range(WARMUP_RUNS):
        forward(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(x).numpy()  # .numpy() waits for the result
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


# ---- the comparison -----------------------------------------------------------------------------


def check_compatible(models, seq_len):
    """All models read the same token ids (same vocabulary size) at `seq_len`."""
    sizes = {name: features.backbone_of(m).vocabulary_size for name, (m, _) in models.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Models have different vocabulary sizes {sizes}; they must share the "
                         "teacher's tokenizer to be compared on the same data.")
    for name, (model, _) in models.items():
        limit = features.backbone_of(model).max_sequence_length
        if seq_len > limit:
            raise ValueError(f"seq_len {seq_len} exceeds {name}'s max_sequence_length {limit}; "
                             "lower --config.data.seq_len.")


def compare(models, spec, dataset, seq_len, runs=20, reference=None, ensembles=None):
    """Evaluate every model on the same data and time it; returns the report dict.

    models: {name: (model, preset_dir or None)}, in table order. ensembles: {name: [member
    names]}: a row whose outputs are the mean of its members' probabilities (`ensemble.
    combine_logits` at T=1; the mean for regression), parameters, sizes and latencies summed,
    placed after its last member. reference: the name whose first metric the others' `share` is
    taken of (default: the first row). Report: task, kind, seq_len, latency_runs, batch_sizes,
    metric_names, reference, share_metric, and `models`: a list of {name, preset, metrics,
    params, size_bytes, latency_b<N>_s for N in BATCH_SIZES, share} (share is None if the
    reference scores 0).
    """
    if not models:
        raise ValueError("compare() needs at least one model.")
    ensembles = ensembles or {}
    check_compatible(models, seq_len)
    for name, (model, _) in models.items():
        check_head(model, spec, name)
    rows, outputs = {}, {}
    for name, (model, preset) in models.items():
        outputs[name], labels = predict(model, dataset)
        rows[name] = {"name": name, "preset": preset, "metrics": task_metrics.compute(
            spec, predictions_from_outputs(outputs[name], spec), labels),
            "params": students.count_params(model),
            "size_bytes": preset_size(preset) if preset else None}
        for batch_size in BATCH_SIZES:
            rows[name][f"latency_b{batch_size}_s"] = measure_latency(model, seq_len, batch_size,
                                                                     runs)
    order = list(models)
    for name, members in ensembles.items():
        rows[name] = _ensemble_row(name, [rows[m] for m in members],
                                   [outputs[m] for m in members], spec, labels)
        order.insert(max(order.index(m) for m in members) + 1, name)
    rows = [rows[name] for name in order]
    reference = reference or order[0]
    if reference not in order:
        raise ValueError(f"reference {reference!r} is not one of the models {order}.")
    report = {
        "task": spec.name, "kind": spec.kind, "seq_len": int(seq_len), "latency_runs": int(runs),
        "batch_sizes": list(BATCH_SIZES), "metric_names": list(spec.metrics),
        "reference": reference, "share_metric": spec.metrics[0], "models": rows,
    }
    return with_shares(report, reference, "share")


def with_shares(report, reference, key):
    """Each row's `key`: its first metric / `reference`'s (None when that scores 0)."""
    first = report["share_metric"]
    base = next(r for r in report["models"] if r["name"] == reference)["metrics"][first]
    for row in report["models"]:
        row[key] = row["metrics"][first] / base if base else None
    return report


def _ensemble_row(name, member_rows, member_outputs, spec, labels):
    """A report row for an ensemble of already-evaluated members (see `compare`)."""
    from tinybert_tf.distill import ensemble

    combined = ensemble.combine_logits(np.stack(member_outputs), 1.0, "prob",
                                       regression=spec.kind == "regression")
    row = {"name": name, "preset": None, "members": [r["name"] for r in member_rows],
           "metrics": task_metrics.compute(spec, predictions_from_outputs(combined, spec), labels)}
    for key in ("params", "size_bytes", *(f"latency_b{b}_s" for b in BATCH_SIZES)):
        values = [r[key] for r in member_rows]
        row[key] = None if None in values else sum(values)
    return row


# ---- output -------------------------------------------------------------------------------------


def _fmt(value, pattern):
    return "n/a" if value is None else pattern.format(value)


def format_markdown(report):
    """The report as a Markdown table (one row per model) plus one share line per model."""
    names = report["metric_names"]
    batches = report["batch_sizes"]
    ref, metric = report["reference"], report["share_metric"]
    also = report.get("also")
    header = (["model", *names, "params", "size (MB)"]
              + [f"latency b{b} (ms)" for b in batches] + [f"share of {ref} {metric}"]
              + ([f"share of {also} {metric} (best teacher on "
                  f"{report.get('also_chosen_on') or 'this split'})"] if also else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["models"]:
        cells = [row["name"].replace("|", "\\|"), *(f"{row['metrics'][m]:.4f}" for m in names),
                 f"{row['params']:,}", _fmt(row["size_bytes"] and row["size_bytes"] / 1e6, "{:.2f}")]
        cells += [f"{row[f'latency_b{b}_s'] * 1e3:.2f}" for b in batches]
        cells.append(_fmt(row["share"] and 100 * row["share"], "{:.1f}%"))
        if also:
            cells.append(_fmt(row.get("share_also") and 100 * row["share_also"], "{:.1f}%"))
        lines.append("| " + " | ".join(cells) + " |")
    shares = [f"{r['name']} {_fmt(r['share'] and 100 * r['share'], '{:.1f}%')}"
              for r in report["models"] if r["name"] != ref]
    title = f"Task {report['task']}"
    if report.get("split"):
        title += f" ({report['split']})"
    title += f", seq_len {report['seq_len']}, median of {report['latency_runs']} CPU runs."
    lines = [title, "", *lines, ""]
    if shares:
        lines.append(f"Share of {ref} {metric}: " + ", ".join(shares) + ".")
    return "\n".join(lines) + "\n"


def write_report(report, workdir):
    """Writes `report.json` and `report.md` into `workdir`; returns their paths."""
    tf.io.gfile.makedirs(workdir)
    json_path = os.path.join(workdir, "report.json")
    md_path = os.path.join(workdir, "report.md")
    with tf.io.gfile.GFile(json_path, "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    with tf.io.gfile.GFile(md_path, "w") as f:
        f.write(format_markdown(report))
    return json_path, md_path


# ---- the launch mode ----------------------------------------------------------------------------


def parse_students(value):
    """`config.student` -> {name: preset dir}.

    A comma-separated list; each item is `name=dir` or a bare `dir`. Bare dirs are named
    `student` when alone, else `student1`, `student2`, ... by position. A name is the text before
    the first `=` when it holds no `/` (so `runs/lr=3e-5/student` is a bare dir) and may contain
    spaces, e.g. `TinyBERT-4: (b) two-step=/runs/b/prediction/student`; `teacher`, `teacher K`
    and `ensemble` are reserved.
    Names and dirs cannot contain commas.
    """
    items = [item.strip() for item in str(value or "").split(",") if item.strip()]
    if not items:
        raise ValueError("No student given; pass --config.student=<preset dir> or "
                         "name=dir,name=dir.")
    out = {}
    for i, item in enumerate(items, 1):
        name, sep, path = item.partition("=")
        name = name.strip()
        if not (sep and name and "/" not in name and path.strip()):
            name, path = ("student" if len(items) == 1 else f"student{i}"), item
        if name in ("teacher", "ensemble") or name.startswith("teacher ") or name in out:
            raise ValueError(f"Student name {name!r} is reserved or repeated in "
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
        raise ValueError(f"--config.student={value!r} is not a preset dir; pass the dir(s) "
                         "task_distill wrote, e.g. <workdir>/prediction/student or a=dir,b=dir.")
    return value


def _check_tokenizers(tokenizer, dirs):
    """A student dir that carries a tokenizer must carry the teacher's vocabulary."""
    import keras_hub
    from keras_hub.src.utils import preset_utils

    vocab = tokenizer.get_vocabulary()
    for name, path in dirs.items():
        if not preset_utils.check_file_exists(path, preset_utils.TOKENIZER_CONFIG_FILE):
            continue
        other = keras_hub.tokenizers.Tokenizer.from_preset(path)
        if other.get_vocabulary() != vocab:
            raise ValueError(f"{name} ({path}) has a different tokenizer vocabulary from the "
                             "teacher's; distil and evaluate it against a teacher with its vocab.")


def _with_best_teacher(report, names, dev_scores=None):
    """The report with every row's share of the best single teacher (`share_also`, `also`),
    chosen on the dev split: `dev_scores` {name: first metric on dev} when the report is of
    another split (the test split must not pick the model it reports), else this report's."""
    first = report["share_metric"]
    rows = {r["name"]: r for r in report["models"]}
    scores = dev_scores or {n: rows[n]["metrics"][first] for n in names}
    best = max(names, key=lambda n: scores[n])
    return {**with_shares(report, best, "share_also"), "also": best,
            "also_chosen_on": "dev" if dev_scores else report.get("split")}


def _dev_scores(config, spec, tokenizer, models, names, split):
    """{teacher name: first metric on the task's first eval split}, or None when `split` is it."""
    from tinybert_tf.launch import builders

    if len(names) < 2 or not spec.eval_splits or split == spec.eval_splits[0]:
        return None
    dev = builders.task_data(config, spec, spec.eval_splits[0], tokenizer, training=False)
    return {n: evaluate_model(models[n][0], dev, spec)[spec.metrics[0]] for n in names}


def run_from_config(config, workdir):
    """Evaluate mode: teacher + student(s) on the first eval split; returns the report dict
    (as written to `<workdir>/report.json`, plus `split`).

    Reads config.teacher, config.student (see `parse_students`), config.task / config.data.*,
    config.batch_size (evaluation batches) and config.latency_runs (default 20).
    """
    from tinybert_tf.launch import builders, teachers
    from tinybert_tf.launch.strategy import LaunchError

    try:
        teacher_dirs = teachers.resolve(config.teacher)
        for path in teacher_dirs:
            builders.check_preset(path, "teacher")
        teachers.check_compatible(teacher_dirs)
        student_dirs = parse_students(_student_value(config, workdir))
        for path in student_dirs.values():
            builders.check_preset(path, "student")
        spec = builders.task_spec(config)
        split = config.get("eval_split") or (spec.eval_splits[0] if spec.eval_splits else None)
        known = (*spec.eval_splits, *spec.test_splits)
        if split is None or split not in known:
            raise ValueError(f"Task {spec.name!r} has no split {split!r} to evaluate on (it has "
                             f"{list(known)}); pass --config.eval_split=<one of them> or "
                             "--config.data.eval_file=<labelled file>.")
        tokenizer = builders.load_tokenizer(teacher_dirs[0])
        _check_tokenizers(tokenizer, student_dirs)
        names = ["teacher"] if len(teacher_dirs) == 1 else [
            f"teacher {k}" for k in range(len(teacher_dirs))]
        models = {name: (heads.load_task_model(path, name), path)
                  for name, path in zip(names, teacher_dirs)}
        for name, path in student_dirs.items():
            models[name] = (heads.load_task_model(path, f"student {name}"), path)
        dataset = builders.task_data(config, spec, split, tokenizer, training=False)
        kwargs = dict(reference="teacher")
        if len(names) > 1:
            kwargs = dict(ensembles={"ensemble": names}, reference="ensemble")
        report = compare(models, spec, dataset, config.data.seq_len,
                         runs=int(config.get("latency_runs", 20)), **kwargs)
        if len(names) > 1:  # every row's share of the best single teacher (on dev) too
            report["split"] = split
            report = _with_best_teacher(report, names, _dev_scores(
                config, spec, tokenizer, models, names, split))
    except ValueError as err:
        raise LaunchError(str(err)) from None
    report["split"] = split
    json_path, md_path = write_report(report, workdir)
    print(format_markdown(report))
    print(f"Wrote {json_path} and {md_path}")
    return report
