"""The task table: `TaskSpec` (what the package needs to know about a task) and `TASKS` (every
GLUE config through TFDS, CoNLL-2003 NER). Local-file tasks get their spec from
`task_files.load_file_task`. `TaskFileError`: a task or task-file mistake (one line)."""

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
