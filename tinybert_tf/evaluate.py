"""Teacher(s) vs students on one task split: the library the `evaluate` mode reads.

For each model (a task preset dir: text classifier, regressor or `heads.TokenClassifier`): the
task metrics (`data.metrics.compute`), parameter count, bytes on disk of its preset dir and CPU
latency of a `tf.function` forward at batch 1 and 32; for each model, its share of a reference
row's first metric (`compare`). An ensemble row is the mean of its members' probabilities, its
parameters, size and latency summed; `with_best_teacher` adds every row's share of the best
single teacher. `format_markdown` / `write_report` write the report. The mode that reads configs
and preset dirs is `tinybert_tf.launch.evaluate_mode`; this module imports nothing from launch/.

A mistake a user fixes (an unlabelled or empty split, a model whose head or vocabulary does not
fit) raises `EvaluateError`, a `errors.UserError`; a wrong call (no model, an unknown reference)
raises a plain `ValueError`.
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
from tinybert_tf.distill import features, students
from tinybert_tf.errors import UserError

BATCH_SIZES = (1, 32)  # latency batch sizes
_FORWARD = "_tinybert_tf_forward"  # the model attribute holding its compiled forward
WARMUP_RUNS = 2  # untimed forward passes before the timed ones


class EvaluateError(UserError):
    """A split or a model that cannot be evaluated as asked; the message names the fix."""


# ---- metrics ------------------------------------------------------------------------------------


def predict(model, dataset):
    """Model outputs and labels over a whole `(x, y[, sample_weight])` dataset, in order.

    Returns (outputs float32 `[N, C]` / `[N, 1]` / `[N, S, C]`, labels `[N]` / `[N, S]`).
    """
    forward = compiled_forward(model)
    outputs, labels = [], []
    for batch in dataset:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if y is None:
            raise EvaluateError("evaluate needs labelled data; pick a split with labels.")
        outputs.append(np.asarray(forward(x), np.float32))
        labels.append(np.asarray(y))
    if not outputs:
        raise EvaluateError("The evaluation split is empty; check --config.data.eval_file / task.")
    return np.concatenate(outputs), np.concatenate(labels)


def compiled_forward(model):
    """`model(x, training=False)` compiled, returning NumPy: on TensorFlow one concrete function
    per model, traced once for int32 inputs of any `[batch, seq]` shape and kept on the model,
    so its evaluation batches (one shape per length bucket) and its latency runs share one
    trace (a concrete function is not counted by TF's retracing detector either, which keys
    every model's wrapper by the same code); on the JAX backend Keras' jitted
    `predict_on_batch` (a tf.function cannot trace a JAX model)."""
    if keras.backend.backend() != "tensorflow":
        return lambda x: np.asarray(model.predict_on_batch(x))
    forward = getattr(model, _FORWARD, None)
    if forward is None:
        concrete, names = None, None

        def forward(x):
            nonlocal concrete, names
            if concrete is None:  # traced at the first call: its keys if the model has no `input`
                names = _input_names(model, x)
                spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in names}
                concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
                    spec)
            inputs = {k: tf.cast(x[k], tf.int32) for k in names}  # a no-op on int32 tensors
            return concrete(inputs).numpy()  # .numpy() waits for the result

        object.__setattr__(model, _FORWARD, forward)  # not a tracked Keras attribute
    return forward


def _input_names(model, x):
    """The input names of a functional model, else the keys of `x`."""
    try:
        inputs = model.input
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        inputs = None
    return list(inputs) if isinstance(inputs, dict) else list(x)


def latency_device():
    """Where `measure_latency` runs: JAX's default device, or TensorFlow's (a GPU if visible)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform.upper()
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


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
        raise EvaluateError(f"{name} has {head} head but task {spec.name!r} is {spec.kind}; "
                         "evaluate a model fine-tuned/distilled on this task.")
    outputs = getattr(model, "num_classes", None)
    if outputs is not None and int(outputs) != spec.num_classes:
        raise EvaluateError(f"{name} predicts {outputs} classes but task {spec.name!r} has "
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
    return {k: tf.constant(inputs[k]) for k in _input_names(model, inputs)}


def measure_latency(model, seq_len, batch_size, runs=20):
    """Median wall-clock seconds of `runs` forward passes of a `tf.function`-compiled model at
    `[batch_size, seq_len]` on the current device, after WARMUP_RUNS untimed calls (tracing)."""
    if runs < 1:
        raise EvaluateError(f"latency runs must be >= 1, got {runs}; set --config.latency_runs.")
    x = latency_inputs(model, seq_len, batch_size)
    forward = compiled_forward(model)
    for _ in range(WARMUP_RUNS):
        forward(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(x)  # NumPy out: the result is ready
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


# ---- the comparison -----------------------------------------------------------------------------


def check_compatible(models, seq_len):
    """All models read the same token ids (same vocabulary size) at `seq_len`."""
    sizes = {name: features.backbone_of(m).vocabulary_size for name, (m, _) in models.items()}
    if len(set(sizes.values())) > 1:
        raise EvaluateError(f"Models have different vocabulary sizes {sizes}; they must share the "
                         "teacher's tokenizer to be compared on the same data.")
    for name, (model, _) in models.items():
        limit = features.backbone_of(model).max_sequence_length
        if seq_len > limit:
            raise EvaluateError(f"seq_len {seq_len} exceeds {name}'s max_sequence_length {limit}; "
                             "lower --config.data.seq_len.")


def compare(models, spec, dataset, seq_len, runs=20, reference=None, ensembles=None):
    """Evaluate every model on the same data and time it; returns the report dict.

    models: {name: (model, preset_dir or None)}, in table order. ensembles: {name: [member
    names]}: a row whose outputs are the mean of its members' probabilities (`ensemble.
    combine_logits` at T=1; the mean for regression), parameters, sizes and latencies summed,
    placed after its last member. reference: the name whose first metric the others' `share` is
    taken of (default: the first row). Report: task, kind, seq_len, latency_runs, batch_sizes,
    metric_names (the task's, the one chosen with data.metric first), reference, share_metric
    (the first), positive_label (the class `f1` scores, or None), and `models`: a list of
    {name, preset, metrics, params, size_bytes, latency_b<N>_s for N in BATCH_SIZES, share}
    (share is None if the reference scores 0).
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
        "latency_device": latency_device(),
        "batch_sizes": list(BATCH_SIZES), "metric_names": list(spec.metrics),
        "reference": reference, "share_metric": spec.metrics[0], "models": rows,
        "positive_label": positive_label(spec),
    }
    return with_shares(report, reference, "share")


def positive_label(spec):
    """The label name binary `f1` scores on task `spec` (`metrics.positive_class`), or None
    where the task has no f1 metric or no label names."""
    if "f1" not in spec.metrics or not spec.label_names:
        return None
    return spec.label_names[task_metrics.positive_class(spec)]


def metric_title(report, name):
    """A metric's column title: its name, f1 with the label it scores (`f1 (spam)`)."""
    label = report.get("positive_label")
    return f"{name} ({label})" if name == "f1" and label is not None else name


def with_shares(report, reference, key):
    """Each row's `key`: its first metric / `reference`'s (None when that scores 0)."""
    first = report["share_metric"]
    base = next(r for r in report["models"] if r["name"] == reference)["metrics"][first]
    for row in report["models"]:
        row[key] = row["metrics"][first] / base if base else None
    return report


def with_best_teacher(report, names, dev_scores=None):
    """The report with every row's share of the best single teacher among `names` (`share_also`;
    `also` names it), chosen on the dev split: `dev_scores` {name: first metric on dev} when the
    report is of another split (the test split must not pick the model it reports), else on this
    report's own scores."""
    first = report["share_metric"]
    rows = {r["name"]: r for r in report["models"]}
    scores = dev_scores or {n: rows[n]["metrics"][first] for n in names}
    best = max(names, key=lambda n: scores[n])
    return {**with_shares(report, best, "share_also"), "also": best,
            "also_chosen_on": "dev" if dev_scores else report.get("split")}


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
    ref, metric = report["reference"], metric_title(report, report["share_metric"])
    also = report.get("also")
    header = (["model", *(metric_title(report, m) for m in names), "params", "size (MB)"]
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
    title += f", seq_len {report['seq_len']}, median of {report['latency_runs']} runs on {report.get('latency_device', 'CPU')}."
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
