"""A task run's plan (`launch.task_data`): each split read once, the epoch's batches counted as
trained, the batches a fresh read would give; a whole task_distill run reads and tokenises each
task file once, loads each teacher once, and gives bit-identical outputs when run again."""

import collections
import dataclasses
import os

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.data import task_batches, task_files, tasks
from tinybert_tf.distill import dtypes
from tinybert_tf.launch import config_lib, task_data
from tinybert_tf.launch.modes import run as run_mode


def _config(tmp_path, **overrides):
    common = {"task": "file", "data.train_file": tiny.write_task(tmp_path / "train.tsv", 42, 0),
              "data.eval_file": tiny.write_task(tmp_path / "dev.tsv", 12, 1),
              "data.seq_len": 16, "data.buckets": "8,16"}
    return config_lib.load("task_distill", "tiny", **{**common, **overrides})


def _count_calls(monkeypatch, module, name, key):
    """Wrap `module.name` (the real function) to count its calls by `key(args)`."""
    calls = collections.Counter()
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls[key(args, kwargs)] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _flat(dataset):
    return [[np.asarray(t) for t in _leaves(batch)] for batch in dataset]


def _leaves(batch):
    x, *rest = batch
    return [x[k] for k in sorted(x)] + list(rest)


def test_the_plan_reads_each_split_once_and_feeds_what_a_fresh_read_gives(tmp_path,
                                                                          monkeypatch):
    config = _config(tmp_path, batch_size=4)
    reads = _count_calls(monkeypatch, task_files, "parse_file", lambda a, k: a[0])
    spec = task_data.task_spec(config)
    transfer = ({"text": [f"extra words {i} teacher" for i in range(6)]}, {})
    tokenizer = tiny.tokenizer()
    traces = _count_calls(monkeypatch, tokenizer, "tokenize", lambda a, k: "traced")
    data = task_data.TaskData(config, spec, tokenizer, transfer)
    trained = _flat(data.train().take(3 * data.per_epoch))
    once = _flat(data.one_pass())
    data.evaluation("validation"), data.truncation, data.rows  # noqa: B018
    assert reads == {config.data.train_file: 1, config.data.eval_file: 1}  # the spec's reads
    assert traces == {"traced": 1}  # one tokenizer graph for both splits and the counts
    assert data.rows == 42 + 6 and sum(len(b[-1]) for b in once) == 48
    # The same batches as a pipeline that reads the file again (the plan changes no row).
    fresh = tasks.task_dataset(dataclasses.replace(spec, parsed=()), "train", tiny.tokenizer(),
                               tasks.Batching(16, 4, (8, 16), True),
                               tasks.Order(True, config.seed, True),
                               tasks.Rows(transfer=transfer[0]))
    for a, b in zip(trained, _flat(fresh.take(3 * data.per_epoch)), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    # Each bucket drops its own remainder: fewer steps than ceil(48 / 4), every epoch as many.
    one_epoch = _flat(data._dataset("train", True, False))
    assert data.per_epoch == len(one_epoch) <= 12
    assert sum(len(b[-1]) for b in trained[:data.per_epoch]) == 4 * data.per_epoch


def test_a_small_split_packs_without_a_pipeline_into_the_pipelines_rows(tmp_path, monkeypatch):
    # 600 rows + 300 transfer rows: four pack batches of 256, the last one partial.
    spec = tasks.load_file_task(tiny.write_task(tmp_path / "train.tsv", 600, 0), name="file")
    transfer = tasks.Rows(transfer={"text": [f"extra words {i} the teacher" for i in range(300)]})
    tokenizer = tiny.tokenizer()
    maps = _count_calls(monkeypatch, tasks, "sentence_examples", lambda a, k: "map")
    eager = tasks.packed_rows_in_memory(spec, "train", tokenizer, 12, transfer)
    assert maps == {}  # no tf.data map: the pack function called batch by batch
    monkeypatch.setattr(task_batches, "EAGER_ROWS", 100)  # now "large": through a tf.data map
    piped = tasks.packed_rows_in_memory(spec, "train", tokenizer, 12, transfer)
    assert maps == {"map": 1}
    rows = [_leaves(r) for r in eager]
    assert len(rows) == 900
    for a, b in zip(rows, [_leaves(r) for r in piped], strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_no_full_batch_is_a_one_line_error(tmp_path):
    config = _config(tmp_path, batch_size=64)
    data = task_data.TaskData(config, task_data.task_spec(config), tiny.tokenizer())
    with pytest.raises(ValueError, match="no full batch of batch_size 64"):
        data.per_epoch  # noqa: B018


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same task_distill run twice (both steps, a transfer set, two teachers' cached
    logits), the first with its task-file reads and preset loads counted."""
    d = tmp_path_factory.mktemp("plan")
    teachers = [tiny.write_teacher(d / f"t{k}", num_classes=2, seed=k) for k in range(2)]
    (d / "transfer.tsv").write_text("text\n" + "".join(f"more words {i}\n" for i in range(10)))
    overrides = dict(teacher=",".join(teachers), transfer_file=str(d / "transfer.tsv"),
                     **{"intermediate.epochs": 1, "prediction.epochs": 1,
                        "intermediate.teacher": 1})
    counts = {}
    with pytest.MonkeyPatch.context() as patch:
        counts["reads"] = _count_calls(patch, task_files, "parse_file", lambda a, k: a[0])
        counts["loads"] = _count_calls(patch, dtypes, "load_preset", lambda a, k: a[1])
        counts["packed"] = _count_calls(patch, tasks, "packed_rows_in_memory",
                                         lambda a, k: a[1])
        first = run_mode(_config(d, **overrides), str(d / "first"))
    second = run_mode(_config(d, **overrides), str(d / "second"))
    return {"dir": d, "teachers": teachers, "counts": counts, "outputs": (first, second),
            "config": _config(d, **overrides)}


@pytest.mark.slow
def test_a_run_reads_each_task_file_once_and_loads_each_teacher_once(two_runs):
    config, counts = two_runs["config"], two_runs["counts"]
    assert counts["reads"] == {config.data.train_file: 1, config.data.eval_file: 1}
    loads = {path: n for path, n in counts["loads"].items() if path in two_runs["teachers"]}
    assert loads == {path: 1 for path in two_runs["teachers"]}
    # each split tokenised once: both steps, the epoch count and the cached logits batch it
    assert counts["packed"] == {"train": 1, "validation": 1}


@pytest.mark.slow
def test_the_same_run_gives_bit_identical_outputs(two_runs):
    first, second = two_runs["outputs"]
    assert first != second
    for stage in ("intermediate", "prediction"):
        a, b = (keras_hub.models.TextClassifier.from_preset(
            os.path.join(os.path.dirname(out), "..", stage, "student"), preprocessor=None)
            for out in (first, second))
        assert len(a.weights) == len(b.weights) > 0
        for x, y in zip(a.weights, b.weights, strict=True):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
    with open(os.path.join(os.path.dirname(first), "metrics.jsonl")) as f1, \
            open(os.path.join(os.path.dirname(second), "metrics.jsonl")) as f2:
        lines = f1.read().splitlines()
        assert lines == f2.read().splitlines() and "truncation" in lines[0]
