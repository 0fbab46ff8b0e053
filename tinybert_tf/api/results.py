"""What the Python API returns: small records read back from the run's own files.

`Run` (finetune, distill_task, distill_general): the output preset, each stage's preset, its
best evaluation (`Score`) and its curves (dev scores and training losses by step), as written to
`selection.json` and `metrics.jsonl`. `Comparison` (compare): the evaluate report as rows.
`Export` (export_model): the SavedModel version directory.
"""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class Score:
    """A stage's best evaluation: the selection `metric`, its `value`, the `step` it was reached
    at, every score of that evaluation (`scores`) and whether a higher `metric` is better (the
    task metric; the intermediate step selects on its eval loss, lower is better)."""

    metric: str
    value: float
    step: int
    scores: dict
    higher_is_better: bool = True


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run.

    Attributes:
        workdir: the run directory.
        mode: finetune | task_distill | general_distill.
        preset: the run's output, a keras-hub preset dir (an ensemble's members.txt dir when
            finetune trained several teachers).
        stages: stage name -> its run dir (finetune, finetune/member_K, intermediate,
            prediction; general_distill: the workdir).
        best: stage name -> its best `Score` on the eval split (stages that selected on one).
        dev_curves: stage name -> [(step, value)] of the selection metric.
        loss_curves: stage name -> [(step, training loss)].
    """

    workdir: str
    mode: str
    preset: str
    stages: dict
    best: dict
    dev_curves: dict
    loss_curves: dict


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The evaluate report (`report.json`): `rows` (one dict per model: name, preset, metrics,
    params, size, latency), the `split` it ran on, `markdown` (report.md) and the `report` dict."""

    workdir: str
    split: str
    rows: list
    markdown: str
    report: dict


@dataclasses.dataclass(frozen=True)
class Export:
    """An export: `path` is `<dir>/<model_name>/<version>` (the SavedModel TF Serving loads)."""

    path: str

    @property
    def version(self):
        return int(os.path.basename(self.path))

    def load(self):
        """The SavedModel, loaded with plain TensorFlow (`tensorflow_text` imported first: it
        registers the tokenizer ops the text signatures use)."""
        import tensorflow as tf
        import tensorflow_text  # noqa: F401

        return tf.saved_model.load(self.path)


def _read_json(path):
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def stage_dirs(workdir, mode, stages, members):
    """Stage name -> run dir of a finished run (the layout the modes write)."""
    if mode == "general_distill":
        return {"general_distill": workdir}
    if mode == "finetune" and members > 1:
        return {f"finetune/member_{k}": os.path.join(workdir, "finetune", f"member_{k}")
                for k in range(members)}
    return {stage: os.path.join(workdir, stage) for stage in stages}


def read_run(workdir, mode, preset, stages):
    """A `Run` from the files of a finished run (`stages`: name -> run dir)."""
    from tinybert_tf.launch import train

    best, dev, losses = {}, {}, {}
    for name, run_dir in stages.items():
        selection = _read_json(os.path.join(run_dir, "selection.json"))
        if selection and selection.get("best"):
            metric, top = selection["metric"], selection["best"]
            best[name] = Score(metric, float(top["value"]), int(top["step"]),
                               dict(top.get("scores", {})),
                               bool(selection.get("higher_is_better", True)))
            dev[name] = [(int(h["step"]), float(h[metric])) for h in selection["history"]
                         if metric in h]
        losses[name] = [(int(r["step"]), float(r["loss"])) for r in train.read_metrics(run_dir)
                        if "loss" in r]
    return Run(workdir, mode, preset, dict(stages), best, dev, losses)


def read_comparison(workdir, report):
    """A `Comparison` from the report dict the evaluate mode returned and its report.md."""
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(workdir, "report.md")) as f:
        markdown = f.read()
    return Comparison(workdir, report.get("split", ""), list(report["models"]), markdown, report)
