"""Length-bucketed task batches: every row in exactly one batch, batches cut to the smallest
bucket that holds them, and the same model outputs as batches padded to seq_len."""

import keras_hub
import numpy as np
import tiny

from tinybert_tf.data import task_batches, tasks
from tinybert_tf.evaluate import evaluate_model

SEQ = 32


def _task(tmp_path, n=41, seed=0):
    rng = np.random.default_rng(seed)
    with open(tmp_path / "train.tsv", "w") as f:
        f.write("text\tlabel\n")
        for i in range(n):
            words = rng.choice(tiny.WORDS, size=int(rng.integers(1, 40)))  # 3..42 tokens
            f.write(" ".join(words) + "\t" + ("pos" if i % 3 else "neg") + "\n")
    return tasks.load_file_task(str(tmp_path / "train.tsv"))


def _rows(ds):
    out = []
    for x, y in ds:
        out.append((x["row"].numpy(), x["padding_mask"].numpy(), y.numpy()))
    return out


def test_bucket_lengths():
    assert task_batches.bucket_lengths((16, 32, 64, 128), 64) == (16, 32, 64)
    assert task_batches.bucket_lengths((16, 32), 48) == (16, 32, 48)
    assert task_batches.bucket_lengths((), 64) == (64,)


def test_every_row_once_in_the_smallest_bucket_that_holds_it(tmp_path):
    spec = _task(tmp_path)
    tok = tiny.tokenizer()
    buckets = (8, 16, SEQ)
    rows = tasks.Rows(extra={"row": np.arange(41)})
    plain = _rows(tasks.task_dataset(spec, "train", tok, tasks.Batching(seq_len=SEQ, batch_size=4),
                                     rows=rows))
    lengths = {int(r): int(m.sum()) for rows, mask, _ in plain for r, m in zip(rows, mask)}
    labels = {int(r): int(v) for rows, _, y in plain for r, v in zip(rows, y)}
    bucketed = _rows(tasks.task_dataset(
        spec, "train", tok, tasks.Batching(seq_len=SEQ, batch_size=4, buckets=buckets), rows=rows))
    seen = np.concatenate([rows for rows, _, _ in bucketed]).tolist()
    assert sorted(seen) == list(range(41))  # every row exactly once
    assert len({lengths[r] for r in seen}) > 3  # the task really has varied lengths
    for rows, mask, y in bucketed:
        width = mask.shape[1]
        assert width in buckets
        bucket_of = [min(b for b in buckets if b >= lengths[int(r)]) for r in rows]
        assert len(set(bucket_of)) == 1 and bucket_of[0] == width  # one bucket per batch
        assert [lengths[int(r)] for r in rows] == mask.sum(1).tolist()  # nothing cut off
        assert [labels[int(r)] for r in rows] == y.tolist()  # labels travel with their rows
    widths = [mask.shape[1] for _, mask, _ in bucketed]
    assert min(widths) < SEQ  # something was padded less


def test_metrics_equal_bucketed_and_padded_to_seq_len(tmp_path):
    spec = _task(tmp_path)
    tok = tiny.tokenizer()
    model = keras_hub.models.BertTextClassifier(tiny.backbone(max_sequence_length=SEQ), 2,
                                                preprocessor=None)
    rows = tasks.Rows(extra={"row": np.arange(41)})

    def outputs(buckets):
        ds = tasks.task_dataset(spec, "train", tok,
                                tasks.Batching(seq_len=SEQ, batch_size=4, buckets=buckets),
                                rows=rows)
        by_row = {}
        for x, _ in ds:
            logits = model({k: v for k, v in x.items() if k != "row"}, training=False)
            by_row.update(zip(x["row"].numpy().tolist(), np.asarray(logits)))
        return np.stack([by_row[i] for i in range(41)])

    np.testing.assert_allclose(outputs((8, 16, SEQ)), outputs(None), atol=1e-5)
    plain = tasks.task_dataset(spec, "train", tok, tasks.Batching(seq_len=SEQ, batch_size=4))
    bucketed = tasks.task_dataset(spec, "train", tok,
                                  tasks.Batching(seq_len=SEQ, batch_size=4, buckets=(8, 16, SEQ)))
    a, b = evaluate_model(model, plain, spec), evaluate_model(model, bucketed, spec)
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) < 1e-5


def test_training_epochs_with_buckets_are_seeded(tmp_path):
    spec = _task(tmp_path)
    tok = tiny.tokenizer()

    def first(n, seed):
        ds = tasks.task_dataset(
            spec, "train", tok,
            tasks.Batching(seq_len=SEQ, batch_size=4, buckets=(8, 16, SEQ), drop_remainder=True),
            tasks.Order(shuffle=True, seed=seed, repeat=True),
            tasks.Rows(extra={"row": np.arange(41)}))
        return [x["row"].numpy().tolist() for x, _ in ds.take(n)]

    assert first(12, 0) == first(12, 0)
    assert first(12, 0) != first(12, 1)


def test_count_batches_of_one_epoch_equals_the_batches_of_each_repeated_epoch(tmp_path):
    """`task_batches.count_batches` of the one-epoch pipeline (`repeat=False`) is the number of
    batches an epoch of the repeated pipeline yields before its rows come round again."""
    spec = _task(tmp_path)
    tok = tiny.tokenizer()

    def build(repeat):
        return tasks.task_dataset(
            spec, "train", tok,
            tasks.Batching(seq_len=SEQ, batch_size=4, buckets=(8, 16, SEQ), drop_remainder=True),
            tasks.Order(shuffle=True, seed=3, repeat=repeat),
            tasks.Rows(extra={"row": np.arange(41)}))

    per_epoch = task_batches.count_batches(build(False))
    one_epoch = [x["row"].numpy().tolist() for x, _ in build(False)]
    assert len(one_epoch) == per_epoch
    plain = [x["row"].numpy().tolist() for x, _ in build(True).take(3 * per_epoch)]
    assert plain[:per_epoch] == one_epoch  # the one-epoch pipeline is the first epoch
    seen, epoch_ends = set(), []
    for i, rows in enumerate(plain):
        if seen & set(rows):  # a row seen again: a new epoch started at batch i
            epoch_ends.append(i)
            seen = set()
        seen |= set(rows)
    assert epoch_ends[0] == per_epoch
    # each bucket drops its own remainder: fewer batches than 41 // 4 without buckets
    assert 0 < per_epoch <= 41 // 4
