"""Downstream tasks: the `TASKS` table, GLUE / CoNLL-2003 via TFDS, local TSV/CSV/JSONL files
(`task_files`) and local CoNLL-format token files (`conll_files`, run as CoNLL-2003 is).

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

import tensorflow as tf

from tinybert_tf.data.conll_files import conll_split_dataset, load_conll_task
from tinybert_tf.data.task_batches import WEIGHT as _WEIGHT
from tinybert_tf.data.task_batches import (
    batch_rows,
    bucket_lengths,
    ner_example,
    seeded_epochs,
    sentence_examples,
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

__all__ = ["CONLL_NER_TAGS", "IGNORE_LABEL", "TASKS", "TaskFileError", "TaskSpec", "get_task",
           "load_conll_task", "load_file_task", "task_dataset", "task_splits", "with_metric"]


def _load_tfds(spec, split, shuffle, seed, data_dir):
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=seed)
    return tfds.load(
        spec.tfds_name, split=split, data_dir=data_dir, shuffle_files=shuffle,
        read_config=read_config,
    )


def _with_transfer(spec, ds, extra_examples, labelled):
    """{text keys, label, weight} rows: the split's (`ds`, weight 1; none if not `labelled`),
    then the transfer rows (`extra_examples` `{text key: [str]}`, label -1 / NaN, weight 0)."""
    if set(extra_examples) != set(spec.text_keys):
        raise TaskFileError(f"extra_examples has columns {sorted(extra_examples)}; task "
                            f"{spec.name!r} needs exactly {list(spec.text_keys)}.")
    sizes = {len(v) for v in extra_examples.values()}
    if len(sizes) != 1:
        raise TaskFileError(f"extra_examples columns differ in length: {sorted(sizes)}.")
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
    buckets=None,
    count=False,
):
    """Tokenised, packed, batched dataset for a TASKS name or a file TaskSpec (see module doc).

    Training order: each epoch a full permutation that is a function of (`seed`, epoch) alone
    (`seeded_epochs`), so a resumed run sees the batches an uninterrupted one does.
    extra: `{name: array [N, ...]}`, one row per example of the split in its unshuffled order,
    added to `x` (e.g. cached teacher logits); a count that does not match the split is an error.
    extra_examples: `{text key: [str, ...]}` transfer rows appended after the split's own
    examples (label -1 / NaN, sample_weight 0; the split's rows get weight 1); `extra` then
    covers split + transfer rows in that order. `labelled=False` uses the transfer rows alone.
    buckets: lengths (e.g. (16, 32, 64, 128)); rows are batched with rows of their bucket and
    each batch is cut to the smallest bucket that holds it (`task_batches.batch_rows`), so short
    texts are not padded to `seq_len`. Batch order then follows the buckets, not the rows: map
    per-row outputs back with a row index, not by position.
    count: return `(dataset, batches of one epoch)` (`seeded_epochs`), the split read once.
    """
    spec = get_task(task)
    ds, what = _examples(spec, split, shuffle and extra is None, seed, data_dir, extra_examples,
                         labelled)
    extra_keys = ()
    if extra:
        extra_keys = tuple(extra)
        ds = _with_extra(ds, extra, what)
    # Token tasks keep seq_len: their per-token outputs [B, S, C] must stack across batches.
    if spec.kind == "token_classification":
        buckets = None
    else:
        buckets = bucket_lengths(buckets or (), seq_len)
    rows_of = _rows_fn(spec, tokenizer, seq_len, extra_keys, relabel=extra_examples is None)
    ds = seeded_epochs(
        ds, shuffle, seed, repeat,
        lambda examples: batch_rows(rows_of(examples), batch_size, drop_remainder, buckets),
        count=count,
    )
    ds, batches = ds if count else (ds, None)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return (ds, batches) if count else ds


def _examples(spec, split, shuffle_files, seed, data_dir, extra_examples, labelled):
    """``(examples, what)``: the split's example dicts (TFDS or files; with `extra_examples`
    followed or replaced by the transfer rows, `_with_transfer`) and how an error names them.
    `shuffle_files` only for TFDS; with `extra` the file order must be the unshuffled one."""
    if not labelled and extra_examples is None:
        raise TaskFileError("labelled=False (transfer rows only) needs extra_examples.")
    if extra_examples is not None:
        check_transfer_kind(spec)
    if extra_examples is not None and not labelled:
        ds = None
    elif spec.files:
        read = conll_split_dataset if spec.file_format == "conll" else file_split_dataset
        ds = read(spec, split)
    else:
        ds = _load_tfds(spec, split, shuffle_files, seed, data_dir)
    if extra_examples is None:
        return ds, f"split {split!r}"
    what = f"split {split!r} + transfer" if labelled else "the transfer set"
    return _with_transfer(spec, ds, extra_examples, labelled), what


def _with_extra(ds, extra, what):
    """`ds` with the `extra` arrays (one row per example, in order) added to each example."""
    count = int(ds.reduce(0, lambda n, _: n + 1))
    rows = {len(v) for v in extra.values()}
    if rows != {count}:
        raise TaskFileError(f"extra features have {sorted(rows)} rows but {what} has "
                            f"{count} examples; recompute them on the same examples.")
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(dict(extra)))
    return ds.map(lambda ex, more: {**ex, **more})


def _rows_fn(spec, tokenizer, seq_len, extra_keys, relabel):
    """``rows(examples)``: the tokenised, packed rows of an examples dataset (one epoch);
    `relabel` copies the task's label key to "label" (transfer rows already have one)."""
    def rows(examples):
        if spec.kind == "token_classification":
            def ner(ex):
                x, y, w = ner_example(ex[spec.text_keys[0]], ex[spec.label_key], tokenizer,
                                      seq_len)
                return {**x, **{k: ex[k] for k in extra_keys}}, y, w

            return examples.map(ner, num_parallel_calls=tf.data.AUTOTUNE)
        if spec.label_key != "label" and relabel:
            examples = examples.map(lambda ex: {**ex, "label": ex[spec.label_key]})
        return sentence_examples(examples, spec, tokenizer, seq_len, extra_keys)

    return rows


def split_examples(spec, split, data_dir=None):
    """A split's example dicts in file / TFDS order (what `task_dataset` tokenises), e.g. to
    count the texts the packer cuts (`truncation.count`)."""
    return _examples(get_task(spec), split, False, 0, data_dir, None, True)[0]
