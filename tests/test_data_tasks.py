"""Tasks: the TASKS table, GLUE / CoNLL-2003 through real TFDS builders (download mocked),
and local TSV/CSV/JSONL files."""

import json

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tinybert_tf.data import tasks
from tinybert_tf.errors import UserError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a dog cat is good bad day hello world peter lives in paris . , ! ? jump walk "
    "##ed ##ing ##s 中 文 café"
).split()
GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax"]
USE_CODE = tfds.testing.MockPolicy.USE_CODE


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return keras_hub.tokenizers.BertTokenizer(vocabulary=str(path), lowercase=True)


def detok(tok, ids):
    out = tok.detokenize(tf.constant([i for i in ids if i not in (0, 2, 3)]))
    out = out.numpy() if hasattr(out, "numpy") else out
    return out.decode() if isinstance(out, bytes) else out


def fixed_examples(examples):
    """An `as_dataset_fn` for tfds.testing.mock_data that serves the given examples."""

    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        cols = {k: [ex[k] for ex in examples] for k in examples[0]}
        return tf.data.Dataset.from_tensor_slices(cols)

    return as_dataset


def test_tasks_table_covers_glue_and_conll():
    assert set(tasks.TASKS) == set(GLUE) | {"conll2003"}
    assert tasks.TASKS["cola"].metrics == ("matthews_corr",)
    assert tasks.TASKS["mrpc"].metrics == ("accuracy", "f1") == tasks.TASKS["qqp"].metrics
    stsb = tasks.TASKS["stsb"]
    assert (stsb.kind, stsb.num_classes, stsb.metrics) == ("regression", 1, ("pearson", "spearman"))
    assert tasks.TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert tasks.TASKS["sst2"].text_keys == ("sentence",) and tasks.TASKS["rte"].is_pair
    assert tasks.TASKS["ax"].train_split is None
    conll = tasks.TASKS["conll2003"]
    assert conll.kind == "token_classification" and conll.label_names[:3] == ("O", "B-PER", "I-PER")
    for spec in tasks.TASKS.values():
        if spec.kind == "classification":
            assert spec.num_classes == len(spec.label_names) >= 2
        # The table agrees with the real TFDS builder's features (names and class labels).
        with tfds.testing.mock_data(policy=USE_CODE):
            features = tfds.builder(spec.tfds_name).info.features
        assert set(spec.text_keys) | {spec.label_key} <= set(features)
        if spec.label_names:
            label = features[spec.label_key]
            label = getattr(label, "feature", label)
            assert tuple(label.names) == spec.label_names
    assert tasks.task_splits("mnli")["eval"] == ["validation_matched", "validation_mismatched"]
    assert tasks.get_task(tasks.TASKS["rte"]) is tasks.TASKS["rte"]
    with pytest.raises(ValueError, match="Unknown task 'glue'"):
        tasks.get_task("glue")


@pytest.mark.parametrize("name", GLUE)
def test_every_glue_config_loads_through_tfds(tok, name):
    spec = tasks.TASKS[name]
    split = spec.train_split or spec.eval_splits[0]
    with tfds.testing.mock_data(num_examples=6, policy=USE_CODE):
        ds = tasks.task_dataset(name, split, tok,
                                tasks.Batching(seq_len=16, batch_size=4, drop_remainder=True))
        x, y = next(iter(ds))
    assert x["token_ids"].shape == (4, 16) and x["token_ids"].dtype == tf.int32
    ids, seg, mask = (x[k].numpy() for k in ("token_ids", "segment_ids", "padding_mask"))
    assert (ids[:, 0] == 2).all() and ((ids == 3).sum(1) == (2 if spec.is_pair else 1)).all()
    np.testing.assert_array_equal(mask, (ids != 0).astype(np.int32))
    assert (seg.max(1) == (1 if spec.is_pair else 0)).all()
    if spec.kind == "regression":
        assert y.dtype == tf.float32
    else:
        assert y.dtype == tf.int32 and ((-1 <= y.numpy()) & (y.numpy() < spec.num_classes)).all()


def test_pair_packing_content_and_seeded_shuffle(tok):
    examples = [
        {"sentence1": f"hello world {w}", "sentence2": "the dog is good .", "label": i * 0.5,
         "idx": i}
        for i, w in enumerate(["cat", "dog", "day", "paris", "café", "peter"])
    ]
    with tfds.testing.mock_data(policy=USE_CODE, as_dataset_fn=fixed_examples(examples)):
        batches = [
            next(iter(tasks.task_dataset("stsb", "train", tok,
                                         tasks.Batching(seq_len=16, batch_size=6),
                                         tasks.Order(shuffle=True, seed=s))))
            for s in (7, 7, 8)
        ]
    (x, y), orders = batches[0], [b[1].numpy() for b in batches]
    assert y.dtype == tf.float32
    np.testing.assert_array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], orders[2])
    assert sorted(orders[0]) == [0, 0.5, 1, 1.5, 2, 2.5]
    ids, seg = x["token_ids"].numpy(), x["segment_ids"].numpy()
    for row, label in enumerate(orders[0]):
        first = ids[row][: np.argmax(ids[row] == 3) + 1]  # [CLS] sentence1 [SEP]
        assert detok(tok, first) == examples[int(label * 2)]["sentence1"]
        assert detok(tok, ids[row][seg[row] == 1]) == "the dog is good ."


def test_conll_labels_land_on_first_word_pieces(tok):
    examples = [{
        "tokens": ["Peter", "jumped", "in", "中文", "Paris", "\u200b"],  # last: no pieces -> [UNK]
        "ner": [1, 0, 0, 7, 5, 0],
        "pos": [0] * 6,
        "chunks": [0] * 6,
    }]
    with tfds.testing.mock_data(policy=USE_CODE, as_dataset_fn=fixed_examples(examples)):
        x, y, w = next(iter(tasks.task_dataset("conll2003", "dev", tok,
                                               tasks.Batching(seq_len=12, batch_size=1))))
    ids, y, w = x["token_ids"].numpy()[0], y.numpy()[0], w.numpy()[0]
    pieces = [VOCAB[i] for i in ids[: int(x["padding_mask"].numpy().sum())]]
    assert pieces == ["[CLS]", "peter", "jump", "##ed", "in", "中", "文", "paris", "[UNK]", "[SEP]"]
    np.testing.assert_array_equal(y[:10], [-100, 1, 0, -100, 0, 7, -100, 5, 0, -100])
    assert (y[10:] == -100).all()
    np.testing.assert_array_equal(w, (y != -100).astype(np.float32))
    # Random TFDS mock data (tokens/tags of unequal length, spaces in words) still works.
    with tfds.testing.mock_data(num_examples=4, policy=USE_CODE):
        x, y, w = next(iter(tasks.task_dataset("conll2003", "train", tok,
                                               tasks.Batching(seq_len=32, batch_size=4))))
    assert y.shape == (4, 32) and w.dtype == tf.float32 and (y.numpy()[:, 0] == -100).all()
    assert (w.numpy().sum(1) >= 1).all()


def write_files(tmp_path):
    (tmp_path / "train.tsv").write_text(
        "text\ttext_b\tlabel\nthe dog\thello\tpos\na cat\tworld\tneg\ngood day\tthe\tpos\n",
        encoding="utf-8",
    )
    rows = [{"text": "bad day", "text_b": "a dog", "label": "neg"}]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "test.csv").write_text('text,text_b\n"the cat, a dog",hello\n')


def test_local_files_task(tok, tmp_path):
    write_files(tmp_path)
    spec = tasks.load_file_task(str(tmp_path / "train.tsv"), str(tmp_path / "dev.jsonl"),
                                str(tmp_path / "test.csv"), text_b_column="text_b")
    assert spec.label_names == ("neg", "pos") and spec.metrics == ("accuracy", "f1")
    x, y = next(iter(tasks.task_dataset(spec, "train", tok,
                                        tasks.Batching(seq_len=12, batch_size=3))))
    np.testing.assert_array_equal(y.numpy(), [1, 0, 1])
    assert detok(tok, x["token_ids"].numpy()[1]) == "a cat world"
    x_test, y_test = next(iter(tasks.task_dataset(spec, "test", tok,
                                                  tasks.Batching(seq_len=12, batch_size=3))))
    assert y_test.numpy().tolist() == [-1]
    assert detok(tok, x_test["token_ids"].numpy()[0]) == "the cat , a dog hello"
    (tmp_path / "scores.csv").write_text("text,label\nthe dog,0.5\na cat,4\n")
    reg = tasks.load_file_task(str(tmp_path / "scores.csv"), regression=True)
    assert (reg.kind, reg.num_classes, reg.metrics) == ("regression", 1, ("pearson", "spearman"))
    x, y = next(iter(tasks.task_dataset(reg, "train", tok, tasks.Batching(seq_len=8, batch_size=2))))
    assert y.dtype == tf.float32 and y.numpy().tolist() == [0.5, 4.0]
    assert (x["segment_ids"].numpy() == 0).all()


def test_extra_features_follow_their_examples_through_the_shuffle(tok, tmp_path):
    write_files(tmp_path)
    spec = tasks.load_file_task(str(tmp_path / "train.tsv"), text_b_column="text_b")
    batching = tasks.Batching(seq_len=12, batch_size=3)
    plain = next(iter(tasks.task_dataset(spec, "train", tok, batching)))[0]
    tag = np.arange(3, dtype="float32")[:, None] * [1.0, 10.0]  # row i -> [i, 10 i]
    ds = tasks.task_dataset(spec, "train", tok, batching, tasks.Order(shuffle=True, seed=0),
                            tasks.Rows(extra={"teacher_logits": tag}))
    x, _ = next(iter(ds))
    assert x["teacher_logits"].numpy()[:, 0].tolist() != [0, 1, 2]  # the shuffle did move rows
    for row, logits in zip(x["token_ids"].numpy(), x["teacher_logits"].numpy()):
        i = int(logits[0])  # each row's extra feature is the one computed for that example
        np.testing.assert_array_equal(row, plain["token_ids"].numpy()[i])
        assert logits[1] == 10 * i
    with pytest.raises(ValueError, match="have \\[2\\] rows but split 'train' has 3 examples"):
        tasks.task_dataset(spec, "train", tok, batching,
                           rows=tasks.Rows(extra={"teacher_logits": tag[:2]}))


def test_local_file_errors_name_file_and_line(tmp_path):
    write_files(tmp_path)
    (tmp_path / "bad_dev.tsv").write_text("text\tlabel\nthe dog\tpos\na cat\tmaybe\n")
    (tmp_path / "no_col.tsv").write_text("text\tlabel\nthe dog\tpos\na cat\n")
    train = str(tmp_path / "train.tsv")
    with pytest.raises(ValueError, match=r"bad_dev.tsv:3: label 'maybe' not in training labels"):
        tasks.load_file_task(train, str(tmp_path / "bad_dev.tsv"))
    with pytest.raises(tasks.TaskFileError,
                       match=r"no_col.tsv:3: 1 field, the header has 2 \(text, label\)"):
        tasks.load_file_task(str(tmp_path / "no_col.tsv"))
    (tmp_path / "no_label.tsv").write_text("text\nthe dog\n")
    with pytest.raises(ValueError, match=r"no_label.tsv:1: missing label column 'label'; "
                       r"found \['text'\]"):
        tasks.load_file_task(str(tmp_path / "no_label.tsv"))
    with pytest.raises(UserError, match=r"train.tsv:1: missing column 'sentence'"):
        tasks.load_file_task(train, text_column="sentence")
    with pytest.raises(ValueError, match=r"train.tsv:2: label 'pos' is not a number"):
        tasks.load_file_task(train, regression=True)
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        tasks.load_file_task(str(tmp_path / "bad.jsonl"))
    spec = tasks.load_file_task(train)
    with pytest.raises(ValueError, match="no 'test' file"):
        tasks.task_dataset(spec, "test", None)
