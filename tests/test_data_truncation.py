"""Texts cut at seq_len are counted per split: against lengths counted here word piece by word
piece, for single texts, pairs and token tasks, and through the launcher (console line and the
head of each stage's metrics.jsonl)."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf.data import task_batches, task_spec, truncation
from tinybert_tf.launch import config_lib
from tinybert_tf.launch.modes import run as run_mode

RNG = np.random.default_rng(0)
TEXTS = [" ".join(RNG.choice(tiny.WORDS, size=n)) for n in (3, 10, 14, 20, 31)]


def _pieces(tokenizer, text):
    return len(np.asarray(tokenizer(text)))


def _spec(pair=False, kind="classification"):
    keys = ("a", "b") if pair else ("a",)
    return task_spec.TaskSpec(name="t", text_keys=keys, label_key="label", num_classes=2,
                              kind=kind, metrics=("accuracy",), train_split="train",
                              eval_splits=())


@pytest.fixture(params=[("in_process", None), ("pipeline", -1), ("mixed", 100)],
                ids=lambda p: p[0])
def path(request, monkeypatch):
    """Small splits are measured batch by batch in this process, larger ones (over EAGER_ROWS)
    through one tf.data pipeline: every split that way (-1), or splits of over 100 rows."""
    if request.param[1] is not None:
        monkeypatch.setattr(task_batches, "EAGER_ROWS", request.param[1])
    return request.param[0]


def test_single_texts_against_counted_pieces(path):
    tokenizer = tiny.tokenizer()
    lengths = [_pieces(tokenizer, t) + 2 for t in TEXTS]
    examples = tf.data.Dataset.from_tensor_slices({"a": TEXTS, "label": [0] * len(TEXTS)})
    got = truncation.count(examples, _spec(), tokenizer, 16)
    assert got == {"texts": 5, "cut": sum(n > 16 for n in lengths), "longest": max(lengths),
                   "seq_len": 16}
    assert 0 < got["cut"] < 5
    assert truncation.line("train", got) == (
        f"train: {got['cut']} of 5 texts cut at 16 tokens (longest {max(lengths)})")


def test_pairs_count_both_segments_and_three_special_tokens(path):
    tokenizer = tiny.tokenizer()
    a, b = TEXTS, TEXTS[::-1]
    lengths = [_pieces(tokenizer, x) + _pieces(tokenizer, y) + 3 for x, y in zip(a, b)]
    examples = tf.data.Dataset.from_tensor_slices({"a": a, "b": b, "label": [0] * 5})
    got = truncation.count(examples, _spec(pair=True), tokenizer, 40)
    assert (got["cut"], got["longest"]) == (sum(n > 40 for n in lengths), max(lengths))


def test_splits_counted_together_as_each_alone(path):
    """count_splits: each split's record is its own count, with a split of 300 rows (more than
    one batch of 256) between two others and a label key only one split has."""
    tokenizer = tiny.tokenizer()
    long = [TEXTS[i % 5] for i in range(300)]
    splits = {"train": tf.data.Dataset.from_tensor_slices({"a": TEXTS, "label": [0] * 5}),
              "dev": tf.data.Dataset.from_tensor_slices({"a": long}),
              "test": tf.data.Dataset.from_tensor_slices({"a": TEXTS[:2], "label": [1, 0]})}
    got = truncation.count_splits(splits, _spec(), tokenizer, 16)
    assert list(got) == ["train", "dev", "test"] and got["dev"]["texts"] == 300
    for split, examples in splits.items():
        assert got[split] == truncation.count(examples, _spec(), tokenizer, 16), split


def test_token_tasks_count_word_pieces():
    tokenizer = tiny.tokenizer()
    sentences = [t.split() for t in TEXTS]
    lengths = [sum(_pieces(tokenizer, w) for w in words) + 2 for words in sentences]
    examples = tf.data.Dataset.from_generator(
        lambda: ({"a": np.array(w, dtype=object), "label": np.zeros(len(w), "int64")}
                 for w in sentences),
        output_signature={"a": tf.TensorSpec([None], tf.string),
                          "label": tf.TensorSpec([None], tf.int64)})
    got = truncation.count(examples, _spec(kind="token_classification"), tokenizer, 12)
    assert (got["texts"], got["cut"], got["longest"]) == (5, sum(n > 12 for n in lengths),
                                                          max(lengths))


def test_the_launcher_prints_and_records_the_counts(tmp_path, capsys):
    with open(tmp_path / "train.tsv", "w") as f:
        f.write("text\tlabel\n" + "".join(f"{t}\t{'pos' if i % 2 else 'neg'}\n"
                                          for i, t in enumerate(TEXTS * 2)))
    c = config_lib.load("task_distill", "tiny", mode="finetune", task="file",
                        teacher=tiny.write_teacher(tmp_path / "pre"), eval_every=-1, **{
                            "data.train_file": str(tmp_path / "train.tsv"),
                            "data.seq_len": 16})
    run_mode(c, str(tmp_path / "ft"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "texts cut at" in line]
    tokenizer = tiny.tokenizer()
    lengths = [_pieces(tokenizer, t) + 2 for t in TEXTS * 2]
    cut = sum(n > 16 for n in lengths)
    assert lines == [f"train: {cut} of 10 texts cut at 16 tokens (longest {max(lengths)})"]
    with open(tmp_path / "ft" / "finetune" / "metrics.jsonl") as f:
        head = json.loads(f.readline())
    assert head == {"truncation": {"train": {"texts": 10, "cut": cut, "longest": max(lengths),
                                             "seq_len": 16}}}
