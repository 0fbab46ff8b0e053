"""Evaluate mode: teacher vs students on a local TSV task and a mocked CoNLL, report consistency."""

import json
import logging
import os
import shutil

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tiny

from tinybert_tf import evaluate
from tinybert_tf.data import metrics, tasks
from tinybert_tf.distill import heads, students
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import config_lib, evaluate_mode
from tinybert_tf.launch.modes import run as run_mode

SEQ = 32
ROW_FIELDS = {"name", "preset", "metrics", "params", "size_bytes", "latency_b1_s",
              "latency_b32_s", "share"}


def _config(**overrides):
    return config_lib.load("task_distill", "tiny", **{"mode": "evaluate", "latency_runs": 2,
                                                      **overrides})


def _save(model, path, tokenizer=True):
    model.save_to_preset(str(path))
    if tokenizer:
        tiny.tokenizer().save_to_preset(str(path))
    return str(path)


def _classifier(num_layers, seed, vocabulary_size=None):
    tiny.backbone(seed=seed)  # seeds the head too
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size or len(tiny.VOCAB), num_layers=num_layers, num_heads=2,
        hidden_dim=32, intermediate_dim=64, max_sequence_length=SEQ)
    return keras_hub.models.BertTextClassifier(backbone, 2, preprocessor=None)


def _write_tsv(path, n, seed):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i in range(n):
            f.write(" ".join(rng.choice(tiny.WORDS, size=rng.integers(3, 10)))
                    + ("\tpos\n" if i % 3 == 0 else "\tneg\n"))
    return str(path)


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def tsv_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    dirs = {
        "teacher": _save(_classifier(4, 0), d / "teacher"),
        "small": _save(_classifier(2, 1), d / "small"),
        "student2": _save(_classifier(2, 2), d / "s2", tokenizer=False),
    }
    c = _config(teacher=dirs["teacher"], student=f"small={dirs['small']},{dirs['student2']}",
                task="file", **{"data.train_file": _write_tsv(d / "train.tsv", 8, 0),
                                "data.eval_file": _write_tsv(d / "dev.tsv", 10, 1)})
    returned = run_mode(c, str(d / "work"))
    return {"dirs": dirs, "config": c, "returned": returned, "work": str(d / "work")}


def test_report_has_every_field_and_consistent_numbers(tsv_run):
    with open(os.path.join(tsv_run["work"], "report.json")) as f:
        report = json.load(f)
    assert report == tsv_run["returned"]
    assert report["task"] == "file" and report["split"] == "validation"
    assert report["metric_names"] == ["accuracy", "f1"] and report["share_metric"] == "accuracy"
    assert (report["seq_len"], report["latency_runs"], report["batch_sizes"]) == (SEQ, 2, [1, 32])
    rows = {r["name"]: r for r in report["models"]}
    assert list(rows) == ["teacher", "small", "student2"] and report["reference"] == "teacher"
    spec = tasks.load_file_task(tsv_run["config"].data.train_file,
                                tsv_run["config"].data.eval_file, name="file")
    data = tasks.task_dataset(spec, "validation", tiny.tokenizer(),
                              tasks.Batching(seq_len=SEQ, batch_size=3))
    for name, row in rows.items():
        assert set(row) == ROW_FIELDS
        model = keras_hub.models.TextClassifier.from_preset(tsv_run["dirs"][name],
                                                            preprocessor=None)
        preds, labels = [], []
        for x, y in data:
            preds.append(np.argmax(model(x).numpy(), -1))
            labels.append(y.numpy())
        preds, labels = np.concatenate(preds), np.concatenate(labels)
        assert len(labels) == 10
        assert row["metrics"]["accuracy"] == pytest.approx(np.mean(preds == labels))
        assert row["params"] == students.count_params(model)
        assert row["size_bytes"] == _dir_bytes(tsv_run["dirs"][name]) > 0
        assert row["latency_b1_s"] > 0 and row["latency_b32_s"] > 0
        teacher_acc = rows["teacher"]["metrics"]["accuracy"]
        assert row["share"] == pytest.approx(row["metrics"]["accuracy"] / teacher_acc)
    assert rows["teacher"]["params"] > rows["small"]["params"]
    md = open(os.path.join(tsv_run["work"], "report.md")).read()
    for name, row in rows.items():
        assert f"| {name} | {row['metrics']['accuracy']:.4f} |" in md
    assert "Share of teacher accuracy: small " in md and "student2 " in md


def test_refuses_mismatched_vocab_and_architecture_names(tsv_run, tmp_path):
    base = tsv_run["config"]
    other = _save(_classifier(2, 3, vocabulary_size=len(tiny.VOCAB) + 3), tmp_path / "other",
                  tokenizer=False)
    with pytest.raises(evaluate.EvaluateError, match="different vocabulary sizes"):
        run_mode(_config(**{**_flat(base), "student": other}), str(tmp_path / "w1"))
    with pytest.raises(LaunchError, match="not a preset dir"):
        run_mode(_config(**{**_flat(base), "student": "tiny_2l_32h"}), str(tmp_path / "w2"))
    swapped = _save(_classifier(2, 3), tmp_path / "swapped", tokenizer=False)
    keras_hub.tokenizers.BertTokenizer(  # same size, two tokens swapped: read from its file
        vocabulary=[*tiny.VOCAB[:-2], tiny.VOCAB[-1], tiny.VOCAB[-2]]).save_to_preset(swapped)
    assert evaluate_mode._vocabulary(tsv_run["dirs"]["small"]) == list(tiny.VOCAB)
    with pytest.raises(LaunchError, match="different tokenizer vocabulary"):
        run_mode(_config(**{**_flat(base), "student": swapped}), str(tmp_path / "w4"))
    with pytest.raises(LaunchError, match="no task.json"):
        backbone = tiny.write_teacher(tmp_path / "bare", max_sequence_length=SEQ)
        run_mode(_config(**{**_flat(base), "student": backbone}), str(tmp_path / "w3"))


def test_architecture_name_falls_back_to_the_workdir_student(tsv_run, tmp_path):
    shutil.copytree(tsv_run["dirs"]["small"], tmp_path / "prediction" / "student")
    report = run_mode(_config(**{**_flat(tsv_run["config"]), "student": "tiny_2l_32h"}),
                      str(tmp_path))
    rows = report["models"]
    assert [r["name"] for r in rows] == ["teacher", "student"]
    assert rows[1]["preset"] == str(tmp_path / "prediction" / "student")


def _flat(c):
    return {"teacher": c.teacher, "task": c.task, "data.train_file": c.data.train_file,
            "data.eval_file": c.data.eval_file}


def test_parse_students():
    assert evaluate_mode.parse_students("/a/b") == {"student": "/a/b"}
    assert evaluate_mode.parse_students("x=/a, /b ,runs/lr=3e-5/s,TinyBERT-4: (b) 2-step=/c") == {
        "x": "/a", "student2": "/b", "student3": "runs/lr=3e-5/s", "TinyBERT-4: (b) 2-step": "/c"}
    for bad in ("", "teacher=/a", "a=/x,a=/y"):
        with pytest.raises(ValueError):
            evaluate_mode.parse_students(bad)


# ---- token classification ------------------------------------------------------------------------

# Tag of a sentence word, a function of the word alone, so an oracle can be exact.
TAGS = {"teacher": 1, "student": 2, "model": 3, "layer": 4, "data": 5}  # B-PER I-PER B-ORG ...


def _conll_examples(n=6, seed=0):
    rng = np.random.default_rng(seed)
    words = list(TAGS) + tiny.WORDS[:10]
    out = []
    for _ in range(n):
        tokens = list(rng.choice(words, size=rng.integers(4, 9)))
        out.append({"tokens": tokens, "ner": [TAGS.get(t, 0) for t in tokens],
                    "pos": [0] * len(tokens), "chunks": [0] * len(tokens)})
    return out


def _fixed(examples):
    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        cols = {k: tf.ragged.constant([ex[k] for ex in examples]) for k in examples[0]}
        return tf.data.Dataset.from_tensor_slices(cols)  # ragged rows -> one sentence each
    return as_dataset


class Oracle:
    """A 'model' whose logits are one-hot of each token's tag: entity F1 must be 1."""

    token_level = True
    num_classes = len(tasks.CONLL_NER_TAGS)

    def __init__(self):
        table = np.zeros(len(tiny.VOCAB), "int32")
        for word, tag in TAGS.items():
            table[tiny.VOCAB.index(word)] = tag
        self.table = tf.constant(table)

    def __call__(self, x, training=False):
        return tf.one_hot(tf.gather(self.table, x["token_ids"]), self.num_classes)


def test_token_classification_entity_f1(tmp_path):
    examples = _conll_examples()
    spec = tasks.TASKS["conll2003"]
    dirs = {}
    for name, layers, seed in (("teacher", 4, 0), ("student", 2, 1)):
        backbone = tiny.backbone(num_layers=layers, seed=seed, max_sequence_length=SEQ)
        dirs[name] = _save(heads.TokenClassifier(backbone, spec.num_classes), tmp_path / name)
    c = _config(teacher=dirs["teacher"], student=dirs["student"], task="conll2003")
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fixed(examples)):
        report = run_mode(c, str(tmp_path / "work"))
        data = tasks.task_dataset("conll2003", "dev", tiny.tokenizer(),
                                  tasks.Batching(seq_len=SEQ, batch_size=4))
        assert evaluate.evaluate_model(Oracle(), data, spec) == {"entity_f1": 1.0}
        batches = list(data)
    assert report["split"] == "dev" and report["metric_names"] == ["entity_f1"]
    labels = np.concatenate([y.numpy() for _, y, _ in batches])
    assert (labels > 0).any()  # there are entities to find
    for row in report["models"]:
        model = heads.load_task_model(dirs[row["name"]])
        preds = np.concatenate([model(x).numpy().argmax(-1) for x, _, _ in batches])
        expected = metrics.compute(spec, preds, labels)["entity_f1"]
        assert row["metrics"]["entity_f1"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="token-level head"):
        evaluate.check_head(Oracle(), tasks.TASKS["sst2"])


def test_eval_split_picks_the_test_file_and_unknown_splits_name_the_fix(tsv_run, tmp_path):
    test_file = _write_tsv(tmp_path / "test.tsv", 7, 5)
    fields = {**_flat(tsv_run["config"]), "student": tsv_run["dirs"]["small"],
              "data.test_file": test_file, "latency_runs": 1}
    report = run_mode(_config(**fields, eval_split="test"), str(tmp_path / "t"))
    assert report["split"] == "test"
    dev = run_mode(_config(**fields), str(tmp_path / "d"))
    assert dev["split"] == "validation"
    # 7 test rows vs 10 dev rows: the accuracies are over different example sets.
    acc = [r["metrics"]["accuracy"] for r in report["models"]]
    assert all(abs(a * 7 - round(a * 7)) < 1e-6 for a in acc), acc
    with pytest.raises(LaunchError, match="pass --config.eval_split=<one of them>"):
        run_mode(_config(**fields, eval_split="nope"), str(tmp_path / "n"))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_one_compiled_forward_per_model_serves_every_shape():
    """Evaluation batches (one shape per length bucket) and latency runs share one trace."""
    model = _classifier(1, 0)
    xs = [evaluate.latency_inputs(model, seq, b) for b, seq in ((1, SEQ), (3, 8), (5, 16))]
    expected = [model(x, training=False).numpy() for x in xs]
    traces, call = [], model.call
    object.__setattr__(model, "call", lambda *a, **k: traces.append(1) or call(*a, **k))
    forward = evaluate.compiled_forward(model)
    assert evaluate.compiled_forward(model) is forward
    for x, want in zip(xs, expected):
        np.testing.assert_allclose(forward(x), want, atol=1e-5)
    int64 = {k: tf.cast(v, tf.int64) for k, v in xs[1].items()}  # a dataset of int64 ids
    np.testing.assert_allclose(forward(int64), expected[1], atol=1e-5)
    assert len(traces) == 1


def test_timing_many_models_does_not_warn_about_retracing():
    records, logger = _Records(), logging.getLogger("tensorflow")
    logger.addHandler(records)
    try:
        for seed in range(4):  # 4 models x 2 batch sizes: TF warns from the 5th trace of one code
            model = _classifier(1, seed)
            for batch_size in evaluate.BATCH_SIZES:
                assert evaluate.measure_latency(model, SEQ, batch_size, runs=1) > 0
    finally:
        logger.removeHandler(records)
    assert not [m for m in records.messages if "retracing" in m]


def test_keras_predict_with_many_models_does_not_warn_about_retracing():
    """The dev scores and the logit cache predict with Keras, one function per model: a process
    with six models is not warned of retracing (the entry points' `quiet_python_logs` filter);
    the filter keeps TF's other warnings."""
    from tinybert_tf.launch import hardware

    hardware.quiet_python_logs()
    root = _Records()
    logging.getLogger().addHandler(root)  # where absl's handler sits: past the logger's filters
    try:
        x = evaluate.latency_inputs(_classifier(1, 0), SEQ, 2)
        for seed in range(6):
            _classifier(1, seed).predict(x, verbose=0)
        logging.getLogger("tensorflow").warning("another TensorFlow warning")
    finally:
        logging.getLogger().removeHandler(root)
    assert not [m for m in root.messages if "retracing" in m]
    assert "another TensorFlow warning" in root.messages
