"""A task run's data, planned once: the task a config names (`task_spec`), and `TaskData`,
which reads each split once and builds every pipeline a run needs from what it read.

`TaskData` knows the training rows (the labelled split and the transfer set), the training
batches of one epoch (what a stage's plan and learning-rate schedule count), the texts the
packer cuts per split, and builds the training batches (shuffled, repeating), one unshuffled
pass over them (cached teacher logits) and the eval / test batches. The config's data settings
(`data.seq_len`, `batch_size`, `data.buckets`, `seed`, `transfer_only`) are read here once.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tinybert_tf.data import tasks
from tinybert_tf.data.task_batches import count_batches
from tinybert_tf.errors import LaunchError


def task_spec(config):
    """The config's TaskSpec: a TASKS name, or task='file' read from data.* (CoNLL token files
    with data.format=conll), its metrics led by data.metric (`tasks.with_metric`). A mistyped
    data.tsv_quoting is a one-line error for every task: transfer .tsv files read it too. A file
    task keeps the rows it read (`TaskSpec.parsed`): the run reads each file once.

    Args:
        config: a task-mode config (`task`, `data.*`).
    Returns:
        The `tasks.TaskSpec`."""
    from tinybert_tf.data import conll_files, task_files

    d = config.data
    tsv_quoting = task_files.check_tsv_quoting(d.tsv_quoting)
    kind = conll_files.file_kind(config.task, d.format, d.regression, d.text_b_column)
    if config.task != "file":
        spec = tasks.get_task(config.task)
    elif kind == "token_classification":
        spec = tasks.load_conll_task(
            d.train_file, d.eval_file or None, d.test_file or None, name="file",
            label_column=d.label_column, skip_bad_rows=d.skip_bad_rows)
    else:
        spec = tasks.load_file_task(
            d.train_file, d.eval_file or None, d.test_file or None, name="file",
            text_column=d.text_column, text_b_column=d.text_b_column or None,
            label_column=d.label_column, regression=d.regression, skip_bad_rows=d.skip_bad_rows,
            tsv_quoting=tsv_quoting,
        )
    return tasks.with_metric(spec, d.metric, d.positive_label)


def buckets(config):
    """Length buckets from `data.buckets` ("16,32,64"), none on a TPU (one static shape: a
    resolved config's `device_kind`, TF or JAX, or strategy tpu)."""
    text = str(config.data.buckets).strip()
    if config.strategy == "tpu" or config.get("device_kind") == "tpu" or not text:
        return None
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise LaunchError(f"data.buckets={text!r} is not a comma-separated list of lengths, "
                          "e.g. '16,32,64,128'; '' pads every batch to seq_len.") from None


class TaskData:
    """The data of one task run (see the module doc).

    Args:
        config: the run's config (`data.seq_len`, `data.buckets`, `data.tfds_data_dir`,
            `batch_size`, `seed`, `transfer_only`).
        spec: the task (`task_spec`).
        tokenizer: the lead teacher's tokenizer.
        transfer: the run's transfer set (`transfer_set.transfer_set`: `(columns, counts)`) or
            None."""

    def __init__(self, config, spec, tokenizer, transfer=None):
        self.spec, self.tokenizer, self.transfer = spec, tokenizer, transfer
        self.seq_len, self.batch_size = int(config.data.seq_len), int(config.batch_size)
        self.seed, self.buckets = int(config.seed), buckets(config)
        self.data_dir = config.data.tfds_data_dir or None
        self.labelled = not config.get("transfer_only", False)
        self._examples, self._packed = {}, {}

    def examples(self, split):
        """A split's example dicts, read once (a file task's from the rows its spec holds; a
        TFDS split cached in memory at its first pass)."""
        if split not in self._examples:
            found = tasks.split_examples(self.spec, split, self.data_dir)
            self._examples[split] = found if self.spec.files else found.cache()
        return self._examples[split]

    def packed(self, split):
        """A split's rows (the train split's: and the transfer set's) tokenised and packed once,
        held in memory: every pipeline of the run batches these."""
        if split not in self._packed:
            transfer = self.transfer is not None and split == self.spec.train_split
            rows = tasks.Rows(
                examples=self.examples(split) if self.labelled or not transfer else None,
                transfer=self.transfer[0] if transfer else None,
                labelled=self.labelled or not transfer)
            self._packed[split] = tasks.packed_rows_in_memory(
                self.spec, split, self.tokenizer, self.seq_len, rows, self.data_dir)
        return self._packed[split]

    def _dataset(self, split, training, repeat, extra=None, seed=None):
        transfer = self.transfer is not None and split == self.spec.train_split
        rows = tasks.Rows(transfer=self.transfer[0] if transfer else None,
                          labelled=self.labelled or not transfer, extra=extra,
                          packed=self.packed(split))
        return tasks.task_dataset(
            self.spec, split, self.tokenizer,
            tasks.Batching(self.seq_len, self.batch_size, self.buckets, drop_remainder=training),
            tasks.Order(shuffle=training, seed=self.seed if seed is None else seed,
                        repeat=repeat),
            rows, self.data_dir)

    def train(self, extra=None, seed=None):
        """Training batches without end: the train split's rows and the transfer set's,
        shuffled each epoch by (`seed`, default the config's; epoch), the remainder of each
        length bucket dropped. `extra`: `{name: array}` per row of `one_pass`'s order."""
        return self._dataset(self.spec.train_split, True, True, extra, seed)

    def one_pass(self, extra=None):
        """The training rows once, in file order, none dropped (`evaluation`'s batches)."""
        return self.evaluation(self.spec.train_split, extra)

    def evaluation(self, split, extra=None):
        """One pass over `split`, carrying its batch count as its cardinality, so Keras' predict
        / evaluate stop at its end instead of running into it ("Your input ran out of data")."""
        dataset = self._dataset(split, False, False, extra)
        return dataset.apply(tf.data.experimental.assert_cardinality(count_batches(dataset)))

    @functools.cached_property
    def rows(self):
        """The training rows: the train split's (unless transfer_only) plus the transfer set's."""
        own = count_batches(self.examples(self.spec.train_split)) if self.labelled else 0
        return own + (len(next(iter(self.transfer[0].values()))) if self.transfer else 0)

    @functools.cached_property
    def per_epoch(self):
        """Training steps per epoch: the batches of one epoch as trained (shuffled,
        length-bucketed, each bucket's remainder dropped: whatever the order, every epoch has as
        many, so with buckets fewer than `ceil(rows / batch_size)`)."""
        steps = count_batches(self._dataset(self.spec.train_split, True, False))
        if steps == 0:
            raise LaunchError(f"the training data gives no full batch of batch_size "
                              f"{self.batch_size} (the last partial batch of each length bucket "
                              "is dropped); lower --config.batch_size or add rows.")
        return steps

    @functools.cached_property
    def truncation(self):
        """{split: `truncation.count`} of every split at seq_len, each printed as "train: N of
        M texts cut at 64 tokens (longest K)"."""
        from tinybert_tf.data import truncation

        spec = self.spec
        splits = (spec.train_split, *spec.eval_splits, *spec.test_splits)
        records = truncation.count_splits({split: self.examples(split) for split in splits},
                                          spec, self.tokenizer, self.seq_len)
        for split in splits:
            print(truncation.line(split, records[split]))
        return records
