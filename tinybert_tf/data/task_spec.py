"""The task table: `TaskSpec` (what the package needs to know about a task) and `TASKS` (every
GLUE config through TFDS, CoNLL-2003 NER). Local-file tasks get their spec from
`task_files.load_file_task` (tables, JSONL) or `conll_files.load_conll_task` (token-tagged
files). `with_metric`: the metric a user chose (`data.metric`) first, checked against the task's
kind. `TaskFileError`: a task or task-file mistake (one line)."""

from __future__ import annotations

import dataclasses

from tinybert_tf.errors import UserError

IGNORE_LABEL = -100


class TaskFileError(UserError):
    """A task, task file or transfer file the package cannot use as given; the message names the
    file and line (``train.tsv:3: ...``) and what to fix."""


CONLL_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything the package needs to know about one task (TFDS-backed or local files)."""

    name: str
    text_keys: tuple[str, ...]  # one key (single sentence) or two (pair)
    label_key: str
    num_classes: int  # 1 for regression
    kind: str  # "classification" | "regression" | "token_classification"
    metrics: tuple[str, ...]
    train_split: str | None
    eval_splits: tuple[str, ...]
    label_names: tuple[str, ...] = ()
    test_splits: tuple[str, ...] = ()
    tfds_name: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (split, path) for local-file tasks
    skip_bad_rows: bool = False  # local files: skip (and count) malformed rows, not an error
    tsv_quoting: str = "none"  # local .tsv files: "none" plain tab-separated | "csv" quoted
    # Local files: (split, ((count name, n), ...)) as `load_file_task` read them; see counts().
    row_counts: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    positive_label: str = ""  # the class binary "f1" counts as positive ("" = class 1)
    file_format: str = ""  # local files: "" tables / JSONL by extension | "conll" (token tags)
    tag_column: int = -1  # conll files: the tag column, 0-based (negative: from the end)
    # Local files: (split, parsed rows) as the loader read them, so a run reads each file once
    # (`task_files.file_split_dataset`); not part of what the task is (no compare, no repr).
    parsed: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def is_pair(self) -> bool:
        return len(self.text_keys) == 2

    def counts(self, split) -> dict[str, int]:
        """{"read", "used", skip reason...: n} of a local-file split (`task_files.SKIP_REASONS`)."""
        return dict(dict(self.row_counts).get(split, ()))


def _glue(name, keys, labels, metrics=("accuracy",), eval_splits=("validation",), tests=("test",)):
    regression = not labels
    return TaskSpec(
        name=name, text_keys=keys, label_key="label", num_classes=1 if regression else len(labels),
        kind="regression" if regression else "classification", metrics=metrics,
        train_split="train", eval_splits=eval_splits, label_names=labels, test_splits=tests,
        tfds_name=f"glue/{name}",
    )


_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    "cola": _glue("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_corr",)),
    "sst2": _glue("sst2", ("sentence",), ("negative", "positive")),
    "mrpc": _glue(
        "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")
    ),
    "qqp": _glue(
        "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")
    ),
    "stsb": _glue("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman")),
    "mnli": _glue(
        "mnli", ("premise", "hypothesis"), _NLI3,
        eval_splits=("validation_matched", "validation_mismatched"),
        tests=("test_matched", "test_mismatched"),
    ),
    "qnli": _glue("qnli", ("question", "sentence"), _NLI2),
    "rte": _glue("rte", ("sentence1", "sentence2"), _NLI2),
    "wnli": _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
    "ax": dataclasses.replace(
        _glue("ax", ("premise", "hypothesis"), _NLI3), train_split=None, eval_splits=("test",)
    ),
    "conll2003": TaskSpec(
        name="conll2003", text_keys=("tokens",), label_key="ner", num_classes=len(CONLL_NER_TAGS),
        kind="token_classification", metrics=("entity_f1",), train_split="train",
        eval_splits=("dev",), label_names=CONLL_NER_TAGS, test_splits=("test",),
        tfds_name="conll2003",
    ),
}


# data.metric: the metrics a user may select on, by task kind (metrics.py computes each).
METRIC_CHOICES = {
    "classification": ("accuracy", "macro_f1", "f1", "matthews_corr"),
    "regression": ("pearson", "spearman"),
    "token_classification": ("entity_f1",),
}


def check_metric(kind, metric="", positive_label="", label_names=None, task="file"):
    """A one-line TaskFileError unless `metric` ("" = the task's own) is one of
    METRIC_CHOICES[kind] and `positive_label` is given exactly when it is "f1" (and, where
    `label_names` are known, is one of them)."""
    if positive_label and metric != "f1":
        raise TaskFileError(f"data.positive_label={positive_label!r} names the class that "
                            "data.metric=f1 scores; pass --config.data.metric=f1, or drop "
                            "data.positive_label.")
    if not metric:
        return
    known = [m for names in METRIC_CHOICES.values() for m in names]
    if metric not in known:
        raise TaskFileError(f"data.metric={metric!r} is not a metric; use one of "
                            f"{', '.join(known)}, or '' for the task's own.")
    if metric not in METRIC_CHOICES[kind]:
        raise TaskFileError(f"data.metric={metric} does not fit task {task!r} ({kind}); use one "
                            f"of {', '.join(METRIC_CHOICES[kind])}.")
    labels = f" (one of {list(label_names)})" if label_names else ""
    if metric == "f1" and not positive_label:
        raise TaskFileError("data.metric=f1 is the F1 of one class; name it with "
                            f"--config.data.positive_label=<label>{labels}.")
    if metric == "f1" and label_names is not None and positive_label not in label_names:
        raise TaskFileError(f"data.positive_label={positive_label!r} is not a label of task "
                            f"{task!r}; pass one of {list(label_names)}.")


def with_metric(spec, metric="", positive_label=""):
    """`spec` with the chosen `metric` first in its metrics (what selection on the eval split
    and the report's share read), the task's own metrics after it; f1 scores `positive_label`.
    "" keeps `spec`. A choice that does not fit the task: `check_metric`'s one-line error."""
    check_metric(spec.kind, metric, positive_label, spec.label_names, spec.name)
    if not metric:
        return spec
    return dataclasses.replace(spec, metrics=(metric, *(m for m in spec.metrics if m != metric)),
                               positive_label=positive_label)


def get_task(task) -> TaskSpec:
    """A TaskSpec from a TASKS name or a TaskSpec (returned as is)."""
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise TaskFileError(
            f"Unknown task {task!r}; use one of {sorted(TASKS)} or load_file_task().")
    return TASKS[task]


def task_splits(task) -> dict[str, str]:
    """{"train": ..., "eval": [...], "test": [...]} split names of a task, for launchers."""
    spec = get_task(task)
    return {"train": spec.train_split, "eval": list(spec.eval_splits), "test": list(spec.test_splits)}


def check_transfer_kind(task):
    """Transfer sets (unlabelled extra rows) feed sentence and sentence-pair tasks only."""
    spec = get_task(task)
    if spec.kind == "token_classification":
        raise TaskFileError(f"Task {spec.name!r}: transfer sets are for sentence and sentence-pair "
                            "tasks, not token classification.")
