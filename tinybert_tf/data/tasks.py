"""Downstream tasks: the `TASKS` table, GLUE / CoNLL-2003 via TFDS, and local TSV/CSV/JSONL files.

`task_dataset` yields keras-hub inputs `x = {"token_ids","segment_ids","padding_mask"}` (int32
`[B, seq_len]`) packed in-graph with `keras_hub.layers.MultiSegmentPacker`:
  * classification: `(x, y)` with y int32 `[B]` (-1 on unlabelled GLUE test splits);
  * regression (stsb): `(x, y)` with y float32 `[B]`;
  * token classification (NER): `(x, y, sample_weight)`, y int32 `[B, seq_len]` holding the tag
    id on the **first** word piece of each word and `IGNORE_LABEL` (-100) elsewhere
    ([CLS]/[SEP]/padding/continuation pieces); sample_weight float32 is 1 where y != -100.

With `extra_examples` (a transfer set, see `transfer.py`) sentence tasks yield
`(x, y, sample_weight)`: the split's rows (weight 1) then the transfer rows (weight 0, y = -1 or
NaN), so hard-label losses see only labelled rows while soft (teacher) targets see all.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import tensorflow as tf

from tinybert_tf.packing import segment_packer

IGNORE_LABEL = -100

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

    @property
    def is_pair(self) -> bool:
        return len(self.text_keys) == 2


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
        raise ValueError(f"Unknown task {task!r}; use one of {sorted(TASKS)} or load_file_task().")
    return TASKS[task]


def _inputs(token_ids, segment_ids, pad_id):
    token_ids = tf.cast(token_ids, tf.int32)
    return {
        "token_ids": token_ids,
        "segment_ids": tf.cast(segment_ids, tf.int32),
        "padding_mask": tf.cast(token_ids != pad_id, tf.int32),
    }


def _sentence_batches(ds, spec, tokenizer, seq_len, batch_size, drop_remainder, extra_keys=()):
    """Batches of {text keys, "label"[, weight]} -> `(x, y[, sample_weight])`; tokenises and
    packs a whole batch at once."""
    packer = segment_packer(tokenizer, seq_len)
    y_dtype = tf.float32 if spec.kind == "regression" else tf.int32

    def fn(ex):
        segments = tuple(tokenizer(ex[k]) for k in spec.text_keys)
        token_ids, segment_ids = packer(segments if spec.is_pair else segments[0])
        x = _inputs(token_ids, segment_ids, tokenizer.pad_token_id)
        out = {**x, **{k: ex[k] for k in extra_keys}}, tf.cast(ex["label"], y_dtype)
        return (*out, ex[_WEIGHT]) if _WEIGHT in ex else out

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _ner_example(tokens, tags, tokenizer, seq_len):
    """One sentence (words `[W]`, tag ids `[W]`) -> (x, y, sample_weight), first-piece labels."""
    n = tf.minimum(tf.size(tokens), tf.size(tags))  # TFDS mock data may disagree in length
    pieces = tokenizer(tokens[:n])
    pieces = tf.RaggedTensor.from_tensor(pieces) if isinstance(pieces, tf.Tensor) else pieces
    # A word that tokenises to nothing (e.g. only control characters) becomes [UNK] so its
    # label is not lost.
    empty = tf.cast(tf.equal(pieces.row_lengths(), 0), tf.int64)
    unk = tf.fill([tf.reduce_sum(empty)], tf.cast(tokenizer.token_to_id("[UNK]"), pieces.dtype))
    pieces = tf.concat([pieces, tf.RaggedTensor.from_row_lengths(unk, empty)], axis=1)
    ids = tf.cast(pieces.flat_values, tf.int32)
    first = tf.equal(tf.range(tf.size(ids), dtype=tf.int64) - tf.gather(
        pieces.row_starts(), pieces.value_rowids()), 0)
    labels = tf.where(first, tf.cast(tf.gather(tags[:n], pieces.value_rowids()), tf.int32),
                      IGNORE_LABEL)
    token_ids, segment_ids = segment_packer(tokenizer, seq_len)(ids)
    x = _inputs(token_ids, segment_ids, tokenizer.pad_token_id)
    body = labels[: seq_len - 2]
    y = tf.concat([[IGNORE_LABEL], body, [IGNORE_LABEL]], 0)
    y = tf.pad(y, [[0, seq_len - tf.size(y)]], constant_values=IGNORE_LABEL)
    y = tf.ensure_shape(y, [seq_len])
    return x, y, tf.cast(y != IGNORE_LABEL, tf.float32)


def _load_tfds(spec, split, shuffle, seed, data_dir):
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=seed)
    return tfds.load(
        spec.tfds_name, split=split, data_dir=data_dir, shuffle_files=shuffle,
        read_config=read_config,
    )


_WEIGHT = "__sample_weight__"


def _with_transfer(spec, ds, extra_examples, labelled):
    """{text keys, label, weight} rows: the split's (`ds`, weight 1; none if not `labelled`),
    then the transfer rows (`extra_examples` `{text key: [str]}`, label -1 / NaN, weight 0)."""
    if set(extra_examples) != set(spec.text_keys):
        raise ValueError(f"extra_examples has columns {sorted(extra_examples)}; task "
                         f"{spec.name!r} needs exactly {list(spec.text_keys)}.")
    sizes = {len(v) for v in extra_examples.values()}
    if len(sizes) != 1:
        raise ValueError(f"extra_examples columns differ in length: {sorted(sizes)}.")
    regression = spec.kind == "regression"
    y_dtype = tf.float32 if regression else tf.int32
    n = sizes.pop()
    rows = {k: tf.constant(list(extra_examples[k]), tf.string, [n]) for k in spec.text_keys}
    rows["label"] = tf.fill([n], float("nan")) if regression else tf.fill([n], -1)
    rows[_WEIGHT] = tf.zeros([n], tf.float32)
    transfer = tf.data.Dataset.from_tensor_slices(rows)
    if not labelled:
        return transfer
    own = ds.map(lambda ex: {**{k: ex[k] for k in spec.text_keys},
                             "label": tf.cast(ex[spec.label_key], y_dtype),
                             _WEIGHT: tf.constant(1.0, tf.float32)})
    return own.concatenate(transfer)


def _epochs(ds, shuffle, seed, repeat):
    """`ds` (finite) in epochs: epoch e is a full permutation drawn from the seed (seed, e).

    The order is a function of the seed and the epoch alone, not of how many iterators were made
    before: Keras' TF `fit` peeks a batch and then starts a new iterator, which advances a
    `reshuffle_each_iteration` shuffle's seed, so a resumed run (whose iterator skipped past an
    epoch end) would see other batches than an uninterrupted one. The split is held in memory
    (task splits are small: GLUE's largest, MNLI, is ~400 k sentence pairs).
    """
    if not shuffle and not repeat:
        return ds
    columns = ds.ragged_batch(2**31 - 1).get_single_element() if shuffle else None
    if columns is not None:
        n = tf.shape(tf.nest.flatten(columns)[0])[0]

    def epoch(e):
        if not shuffle:
            return ds
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: tf.nest.map_structure(lambda col: tf.gather(col, i), columns))

    if not repeat:
        return epoch(tf.constant(0, tf.int64))
    return tf.data.Dataset.counter().flat_map(epoch)


def task_dataset(
    task,
    split,
    tokenizer,
    seq_len=128,
    batch_size=32,
    shuffle=False,
    seed=0,
    data_dir=None,
    drop_remainder=False,
    repeat=False,
    extra=None,
    extra_examples=None,
    labelled=True,
):
    """Tokenised, packed, batched dataset for a TASKS name or a file TaskSpec (see module doc).

    Training order: each epoch a full permutation that is a function of (`seed`, epoch) alone
    (`_epochs`), so a resumed run sees the batches an uninterrupted one does.
    extra: `{name: array [N, ...]}`, one row per example of the split in its unshuffled order,
    added to `x` (e.g. cached teacher logits); a count that does not match the split is an error.
    extra_examples: `{text key: [str, ...]}` transfer rows appended after the split's own
    examples (label -1 / NaN, sample_weight 0; the split's rows get weight 1); `extra` then
    covers split + transfer rows in that order. `labelled=False` uses the transfer rows alone.
    """
    spec = get_task(task)
    if not labelled and extra_examples is None:
        raise ValueError("labelled=False (transfer rows only) needs extra_examples.")
    if extra_examples is not None and spec.kind == "token_classification":
        raise ValueError(f"Task {spec.name!r}: transfer sets are for sentence and sentence-pair "
                         "tasks, not token classification.")
    if extra_examples is not None and not labelled:
        ds = None
    elif spec.files:
        ds = _file_split_dataset(spec, split)
    else:  # with `extra`, file order must be the unshuffled one the rows were computed in
        ds = _load_tfds(spec, split, shuffle and extra is None, seed, data_dir)
    what = f"split {split!r}"
    if extra_examples is not None:
        ds = _with_transfer(spec, ds, extra_examples, labelled)
        what = f"split {split!r} + transfer" if labelled else "the transfer set"
    extra_keys = ()
    if extra:
        extra_keys = tuple(extra)
        count = int(ds.reduce(0, lambda n, _: n + 1))
        rows = {len(v) for v in extra.values()}
        if rows != {count}:
            raise ValueError(f"extra features have {sorted(rows)} rows but {what} has "
                             f"{count} examples; recompute them on the same examples.")
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(dict(extra)))
        ds = ds.map(lambda ex, more: {**ex, **more})
    ds = _epochs(ds, shuffle, seed, repeat)
    if spec.kind == "token_classification":
        def ner(ex):
            x, y, w = _ner_example(ex[spec.text_keys[0]], ex[spec.label_key], tokenizer, seq_len)
            return {**x, **{k: ex[k] for k in extra_keys}}, y, w

        ds = ds.map(ner, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        if spec.label_key != "label" and extra_examples is None:
            ds = ds.map(lambda ex: {**ex, "label": ex[spec.label_key]})
        ds = _sentence_batches(ds, spec, tokenizer, seq_len, batch_size, drop_remainder,
                               extra_keys)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# --- Local TSV / CSV / JSONL files -----------------------------------------------------------


def _read_rows(path):
    """(line_number, dict) rows of a .tsv/.csv (header row) or .jsonl file."""
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    lower = path.lower()
    if lower.endswith((".jsonl", ".json")):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg}); one object per line.") from None
        return
    if lower.endswith(".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    elif lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
    else:
        raise ValueError(f"{path}: unknown file type; use .tsv, .csv or .jsonl.")
    for row in reader:
        yield reader.line_num, row


def _parse_file(path, columns, label_column, label_required):
    """Reads `columns` (+ label) of every row; a missing value -> one-line ValueError."""
    texts = [[] for _ in columns]
    labels, lines = [], []
    for line, row in _read_rows(path):
        lines.append(line)
        for values, col in zip(texts, columns, strict=True):
            if row.get(col) is None:
                raise ValueError(f"{path}:{line}: missing column {col!r}; found {sorted(row)}.")
            values.append(str(row[col]))
        value = row.get(label_column)
        if value is None and label_required:
            raise ValueError(
                f"{path}:{line}: missing label column {label_column!r}; found {sorted(row)}."
            )
        labels.append(None if value is None else str(value).strip())
    if not labels:
        raise ValueError(f"{path}: no rows; the file needs a header and at least one example.")
    return texts, labels, lines


def _encode_labels(path, labels, lines, spec):
    if spec.kind == "regression":
        out = []
        for line, v in zip(lines, labels, strict=True):
            try:
                out.append(float("nan") if v is None else float(v))
            except ValueError:
                raise ValueError(f"{path}:{line}: label {v!r} is not a number.") from None
        return out
    index = {name: i for i, name in enumerate(spec.label_names)}
    for line, v in zip(lines, labels, strict=True):
        if v is not None and v not in index:
            raise ValueError(
                f"{path}:{line}: label {v!r} not in training labels {list(spec.label_names)}."
            )
    return [-1 if v is None else index[v] for v in labels]


def load_file_task(
    train_file, eval_file=None, test_file=None, *, name="custom", text_column="text",
    text_b_column=None, label_column="label", regression=False,
):
    """Validates local TSV/CSV/JSONL files and returns a TaskSpec for `task_dataset`.

    Labels are the sorted set of training labels (or floats with `regression=True`); eval and
    test labels must be in that set (test files may omit the label column -> y = -1 / NaN).
    """
    columns = (text_column,) + ((text_b_column,) if text_b_column else ())
    _, train_labels, train_lines = _parse_file(train_file, columns, label_column, True)
    names = () if regression else tuple(sorted(set(train_labels)))
    kind = "regression" if regression else "classification"
    if regression:
        metrics = ("pearson", "spearman")
    else:
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
    files = (("train", train_file),)
    files += (("validation", eval_file),) if eval_file else ()
    files += (("test", test_file),) if test_file else ()
    spec = TaskSpec(
        name=name, text_keys=columns, label_key=label_column,
        num_classes=1 if regression else len(names), kind=kind, metrics=metrics,
        train_split="train", eval_splits=("validation",) if eval_file else (), label_names=names,
        test_splits=("test",) if test_file else (), files=files,
    )
    _encode_labels(train_file, train_labels, train_lines, spec)
    for split, path in files[1:]:
        _, labels, lines = _parse_file(path, columns, label_column, split != "test")
        _encode_labels(path, labels, lines, spec)
    return spec


def _file_split_dataset(spec, split):
    """Dataset of {text keys..., label key} for one split of a file task."""
    paths = dict(spec.files)
    if split not in paths:
        raise ValueError(f"Task {spec.name!r} has no {split!r} file; it has {sorted(paths)}.")
    path = paths[split]
    texts, labels, lines = _parse_file(path, spec.text_keys, spec.label_key, split != "test")
    y = _encode_labels(path, labels, lines, spec)
    features = {k: tf.constant(v, tf.string) for k, v in zip(spec.text_keys, texts, strict=True)}
    features[spec.label_key] = tf.constant(y, tf.float32 if spec.kind == "regression" else tf.int32)
    return tf.data.Dataset.from_tensor_slices(features)


def task_splits(task) -> dict[str, str]:
    """{"train": ..., "eval": [...], "test": [...]} split names of a task, for launchers."""
    spec = get_task(task)
    return {"train": spec.train_split, "eval": list(spec.eval_splits), "test": list(spec.test_splits)}

