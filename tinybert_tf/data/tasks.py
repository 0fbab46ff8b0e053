"""Downstream tasks: the `TASKS` table, GLUE / CoNLL-2003 via TFDS, local TSV/CSV/JSONL files
(`task_files`) and local CoNLL-format token files (`conll_files`, run as CoNLL-2003 is).

`task_dataset` yields keras-hub inputs `x = {"token_ids","segment_ids","padding_mask"}` (int32
`[B, seq_len]`) packed in-graph with `keras_hub.layers.MultiSegmentPacker`:
  * classification: `(x, y)` with y int32 `[B]` (-1 on unlabelled GLUE test splits);
  * regression (stsb): `(x, y)` with y float32 `[B]`;
  * token classification (NER): `(x, y, sample_weight)`, y int32 `[B, seq_len]` holding the tag
    id on the **first** word piece of each word and `IGNORE_LABEL` (-100) elsewhere
    ([CLS]/[SEP]/padding/continuation pieces); sample_weight float32 is 1 where y != -100.

With transfer rows (`Rows.transfer`: a transfer set, see `transfer.py`) sentence tasks yield
`(x, y, sample_weight)`: the split's rows (weight 1) then the transfer rows (weight 0, y = -1 or
NaN), so hard-label losses see only labelled rows while soft (teacher) targets see all.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tinybert_tf.data import task_batches
from tinybert_tf.data.conll_files import conll_split_dataset, load_conll_task
from tinybert_tf.data.task_batches import WEIGHT as _WEIGHT
from tinybert_tf.data.task_batches import (
    batch_rows,
    bucket_lengths,
    count_batches,
    ner_example,
    packed_in_memory,
    seeded_epochs,
    sentence_examples,
    unfused,
)
from tinybert_tf.data.task_files import file_split_dataset, load_file_task
from tinybert_tf.data.task_spec import (
    CONLL_NER_TAGS,
    IGNORE_LABEL,
    TASKS,
    TaskFileError,
    TaskSpec,
    check_transfer_kind,
    get_task,
    task_splits,
    with_metric,
)

__all__ = ["CONLL_NER_TAGS", "IGNORE_LABEL", "TASKS", "Batching", "Order", "Rows", "TaskFileError",
           "TaskSpec", "get_task", "in_memory", "load_conll_task", "load_file_task",
           "packed_rows", "packed_rows_in_memory", "task_dataset",
           "task_splits", "with_metric"]


def _load_tfds(spec, split, shuffle, seed, data_dir):
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=seed)
    return tfds.load(
        spec.tfds_name, split=split, data_dir=data_dir, shuffle_files=shuffle,
        read_config=read_config,
    )


def _with_transfer(spec, ds, transfer, labelled):
    """{text keys, label, weight} rows: the split's (`ds`, weight 1; none if not `labelled`),
    then the transfer rows (`transfer` `{text key: [str]}`, label -1 / NaN, weight 0)."""
    if set(transfer) != set(spec.text_keys):
        raise TaskFileError(f"the transfer rows have columns {sorted(transfer)}; task "
                            f"{spec.name!r} needs exactly {list(spec.text_keys)}.")
    sizes = {len(v) for v in transfer.values()}
    if len(sizes) != 1:
        raise TaskFileError(f"the transfer columns differ in length: {sorted(sizes)}.")
    regression = spec.kind == "regression"
    y_dtype = tf.float32 if regression else tf.int32
    n = sizes.pop()
    rows = {k: tf.constant(list(transfer[k]), tf.string, [n]) for k in spec.text_keys}
    rows["label"] = tf.fill([n], float("nan")) if regression else tf.fill([n], -1)
    rows[_WEIGHT] = tf.zeros([n], tf.float32)
    transfer = tf.data.Dataset.from_tensor_slices(rows)
    if not labelled:
        return transfer
    own = ds.map(lambda ex: {**{k: ex[k] for k in spec.text_keys},
                             "label": tf.cast(ex[spec.label_key], y_dtype),
                             _WEIGHT: tf.constant(1.0, tf.float32)})
    return own.concatenate(transfer)


@dataclasses.dataclass(frozen=True)
class Batching:
    """How rows become batches: packed to `seq_len`, `batch_size` rows each; `buckets`
    (lengths, e.g. (16, 32, 64, 128)): rows batched with rows of their bucket, each batch cut to
    the smallest bucket that holds it (`task_batches.batch_rows`); `drop_remainder`: no partial
    batch (of each bucket)."""

    seq_len: int = 128
    batch_size: int = 32
    buckets: tuple | None = None
    drop_remainder: bool = False


@dataclasses.dataclass(frozen=True)
class Order:
    """The order of the rows: each epoch a seeded permutation when `shuffle` (`seeded_epochs`);
    `repeat`: epochs without end (training), else one pass."""

    shuffle: bool = False
    seed: int = 0
    repeat: bool = False


@dataclasses.dataclass(frozen=True)
class Rows:
    """Which rows, with what: `examples` (the split's example dicts, already read: a run reads
    each split once) instead of reading the split; `transfer` (`{text key: [str, ...]}`) rows
    appended after the split's own (label -1 / NaN, sample_weight 0; the split's rows weight 1),
    or alone when not `labelled`; `extra` (`{name: array [N, ...]}`, one row per example of the
    split (+ transfer) in its unshuffled order) added to `x`, e.g. cached teacher logits."""

    examples: object = None
    transfer: dict | None = None
    labelled: bool = True
    extra: dict | None = None
    packed: object = None  # `packed_rows(...)` held by the caller: then read and tokenise nothing


def task_dataset(task, split, tokenizer, batching=Batching(), order=Order(), rows=Rows(),
                 data_dir=None):
    """Tokenised, packed, batched dataset for a TASKS name or a file TaskSpec (see module doc):
    `batching` (a `Batching`), `order` (an `Order`), `rows` (a `Rows`; `rows.packed`: the rows
    `packed_rows` gave, tokenised once for every pipeline of a run), `data_dir` (TFDS's).

    Training order: each epoch a full permutation that is a function of (seed, epoch) alone
    (`seeded_epochs`), so a resumed run sees the batches an uninterrupted one does. A count of
    `rows.extra` that does not match the rows is an error. With buckets, batch order follows the
    buckets, not the rows: map per-row outputs back with a row index, not by position.
    """
    spec = get_task(task)
    what = f"split {split!r}" if rows.transfer is None else (
        f"split {split!r} + transfer" if rows.labelled else "the transfer set")
    ds = rows.packed
    if ds is None:
        ds = packed_rows(spec, split, tokenizer, batching.seq_len, rows, data_dir,
                         shuffle_files=order.shuffle and rows.extra is None, seed=order.seed)
    if rows.extra:
        ds = _with_extra(ds, rows.extra, what)
    # Token tasks keep seq_len: their per-token outputs [B, S, C] must stack across batches.
    buckets = None if spec.kind == "token_classification" else bucket_lengths(
        batching.buckets or (), batching.seq_len)
    ds = seeded_epochs(
        ds, order.shuffle, order.seed, order.repeat,
        lambda packed: batch_rows(packed, batching.batch_size, batching.drop_remainder, buckets),
    )
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def packed_rows(task, split, tokenizer, seq_len, rows=Rows(), data_dir=None, shuffle_files=False,
                seed=0):
    """A split's rows (`rows`' examples / transfer rows, else read) tokenised and packed at
    `seq_len`, one pass in their order: `(x, y[, sample_weight])` per row (see module doc).
    `shuffle_files` / `seed`: TFDS's file order."""
    spec = get_task(task)
    examples = _examples(spec, split, shuffle_files, seed, data_dir, rows)[0]
    return _rows_fn(spec, tokenizer, seq_len, relabel=rows.transfer is None)(examples)


def packed_rows_in_memory(task, split, tokenizer, seq_len, rows=Rows(), data_dir=None):
    """`packed_rows` read now and held as tensors (`in_memory`). A sentence split of at most
    `task_batches.EAGER_ROWS` rows packs without a tf.data pipeline (`packed_in_memory`: the
    same rows); larger ones pack in parallel through tf.data."""
    spec = get_task(task)
    examples = _examples(spec, split, False, 0, data_dir, rows)[0]
    if not task_batches.in_process(examples, spec):
        return in_memory(_rows_fn(spec, tokenizer, seq_len, rows.transfer is None)(examples))
    return packed_in_memory(examples, spec, tokenizer, seq_len,
                            _label_key(spec, rows.transfer is None))


def in_memory(ds):
    """A finite dataset of equal-shaped rows read now, in one pass, and held as tensors."""
    whole = list(unfused(ds.batch(2**31 - 1)).take(1))
    return tf.data.Dataset.from_tensor_slices(whole[0]) if whole else ds


def _examples(spec, split, shuffle_files, seed, data_dir, rows=Rows()):
    """``(examples, what)``: the split's example dicts (`rows.examples`, else read from TFDS or
    files; with `rows.transfer` followed or replaced by the transfer rows, `_with_transfer`) and
    how an error names them. `shuffle_files` only for TFDS; with `extra` the file order must be
    the unshuffled one."""
    transfer = rows.transfer
    if not rows.labelled and transfer is None:
        raise TaskFileError("labelled=False (transfer rows only) needs transfer rows.")
    if transfer is not None:
        check_transfer_kind(spec)
    if transfer is not None and not rows.labelled:
        ds = None
    elif rows.examples is not None:
        ds = rows.examples
    elif spec.files:
        read = conll_split_dataset if spec.file_format == "conll" else file_split_dataset
        ds = read(spec, split)
    else:
        ds = _load_tfds(spec, split, shuffle_files, seed, data_dir)
    if transfer is None:
        return ds, f"split {split!r}"
    what = f"split {split!r} + transfer" if rows.labelled else "the transfer set"
    return _with_transfer(spec, ds, transfer, rows.labelled), what


def _with_extra(ds, extra, what):
    """`ds`'s `(x, ...)` rows with the `extra` arrays (one row per example, in order) in x."""
    count = count_batches(ds)
    rows = {len(v) for v in extra.values()}
    if rows != {count}:
        raise TaskFileError(f"extra features have {sorted(rows)} rows but {what} has "
                            f"{count} examples; recompute them on the same examples.")
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(dict(extra)))
    return ds.map(lambda row, more: ({**row[0], **more}, *row[1:]))


def _rows_fn(spec, tokenizer, seq_len, relabel):
    """``rows(examples)``: the tokenised, packed rows of an examples dataset (one epoch);
    `relabel` copies the task's label key to "label" (transfer rows already have one)."""
    def rows(examples):
        if spec.kind == "token_classification":
            def ner(ex):
                return ner_example(ex[spec.text_keys[0]], ex[spec.label_key], tokenizer, seq_len)

            return examples.map(ner, num_parallel_calls=tf.data.AUTOTUNE)
        return sentence_examples(examples, spec, tokenizer, seq_len, _label_key(spec, relabel))

    return rows


def _label_key(spec, relabel):
    """The key of an example's label: the task's (`relabel`), else "label" (transfer rows)."""
    return spec.label_key if relabel else "label"


def split_examples(spec, split, data_dir=None):
    """A split's example dicts in file / TFDS order (what `task_dataset` tokenises), e.g. to
    count the texts the packer cuts (`truncation.count`)."""
    return _examples(get_task(spec), split, False, 0, data_dir)[0]
