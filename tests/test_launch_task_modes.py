"""Task modes end to end on a tiny local TSV task: finetune -> task_distill (both steps) -> export."""

import json
import os
import shutil

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.launch import config_lib, logits_cache, train
from tinybert_tf.launch.modes import run as run_mode


def _config(**overrides):
    return config_lib.load("task_distill", "tiny", **overrides)




@pytest.fixture(scope="module")
def task_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    common = {
        "task": "file",
        "data.train_file": tiny.write_task(d / "train.tsv", 48, 0),
        "data.eval_file": tiny.write_task(d / "dev.tsv", 16, 1),
    }
    teacher = run_mode(_config(mode="finetune", teacher=tiny.write_teacher(d / "pre"), **common),
                       str(d / "ft"))
    out = run_mode(_config(mode="task_distill", teacher=teacher, **{
        **common, "prediction.learning_rate": 1e-12, "intermediate.epochs": 2}), str(d / "td"))
    return {"dir": d, "teacher": teacher, "student": out, "common": common}


@pytest.mark.slow
def test_finetune_writes_a_teacher_classifier(task_run):
    teacher = keras_hub.models.TextClassifier.from_preset(task_run["teacher"], preprocessor=None)
    assert teacher.num_classes == 2 and teacher.backbone.num_layers == 4
    assert os.path.exists(os.path.join(task_run["teacher"], "tokenizer.json"))


def test_prediction_step_starts_from_intermediate_weights(task_run):
    td = task_run["dir"] / "td"
    step1 = keras_hub.models.TextClassifier.from_preset(str(td / "intermediate" / "student"),
                                                        preprocessor=None)
    step2 = keras_hub.models.TextClassifier.from_preset(task_run["student"], preprocessor=None)
    assert step2.backbone.num_layers == 2 and step2.backbone.hidden_dim == 32
    # Step 2 ran at a ~0 learning rate: its weights are step 1's, carried over from disk.
    for a, b in zip(step1.backbone.weights, step2.backbone.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # ... and step 1 did train the encoder away from a fresh student.
    fresh = tiny.backbone(num_layers=2, max_sequence_length=32, seed=0)
    moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in
             zip(fresh.transformer_layers[0].weights, step1.backbone.transformer_layers[0].weights)]
    assert max(moved) > 1e-4


@pytest.mark.slow
def test_cached_teacher_logits_train_the_same_student(task_run):
    """prediction.cache_teacher_logits (one teacher pass) == the teacher at every step."""
    students = []
    for cache in (True, False):
        out = run_mode(_config(mode="task_distill", teacher=task_run["teacher"], stages="prediction",
                               deterministic=True, **{
                                   **task_run["common"], "prediction.epochs": 2,
                                   "prediction.learning_rate": 1e-3,
                                   "prediction.cache_teacher_logits": cache}),
                       str(task_run["dir"] / f"cache_{cache}"))
        students.append(keras_hub.models.TextClassifier.from_preset(out, preprocessor=None))
    fresh = keras_hub.models.TextClassifier.from_preset(task_run["student"], preprocessor=None)
    assert np.abs(students[0].output_dense.kernel.numpy()
                  - fresh.output_dense.kernel.numpy()).max() > 1e-4  # it trained
    for a, b in zip(students[0].weights, students[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.slow
def test_logits_cache_serves_a_later_run_the_same_logits(task_run, capsys):
    """prediction.logits_cache: the first run stores the teacher's logits, the next run with the
    same teacher, data and settings reads them (no teacher pass) and trains the same student;
    what the file holds is what trains."""
    cache = task_run["dir"] / "logits_cache"

    def run(name):
        out = run_mode(_config(mode="task_distill", teacher=task_run["teacher"],
                               stages="prediction", deterministic=True, **{
                                   **task_run["common"], "prediction.learning_rate": 1e-3,
                                   "prediction.logits_cache": str(cache)}),
                       str(task_run["dir"] / name))
        model = keras_hub.models.TextClassifier.from_preset(out, preprocessor=None)
        return [w.numpy() for w in model.weights], capsys.readouterr().out

    stored, out = run("cache_cold")
    assert "logits read from" not in out and len(list(cache.iterdir())) == 1
    read, out = run("cache_warm")
    assert f"Teacher {task_run['teacher']}: logits read from {cache}." in out
    for a, b in zip(stored, read):
        np.testing.assert_array_equal(a, b)
    (path,) = cache.iterdir()
    logits = np.load(path)
    assert logits.shape == (48, 2)
    np.save(path, -logits)  # the file is what trains: flipped logits, another student
    flipped, _ = run("cache_flipped")
    assert max(np.abs(a - b).max() for a, b in zip(stored, flipped)) > 1e-4


def test_logits_cache_key_changes_with_the_teacher_the_inputs_and_the_settings(task_run, tmp_path):
    """Another teacher (one byte of its weights), other input batches (a token, or the order),
    or another setting is another key; the same ones give the same key."""
    batches = [{"token_ids": np.array([[2, 5, 3]]), "__row__": np.array([0])},
               {"token_ids": np.array([[2, 7, 3]]), "__row__": np.array([1])}]
    digest = logits_cache.batches_digest(batches)
    assert logits_cache.batches_digest(batches[::-1]) != digest
    changed = [dict(batches[0], token_ids=np.array([[2, 6, 3]])), batches[1]]
    assert logits_cache.batches_digest(changed) != digest
    teacher = shutil.copytree(task_run["teacher"], tmp_path / "teacher")
    key = logits_cache.key(str(teacher), digest, policy="float32")
    assert logits_cache.key(str(teacher), digest, policy="float32") == key
    assert logits_cache.key(str(teacher), digest, policy="mixed_bfloat16") != key
    weights = teacher / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert logits_cache.key(str(teacher), digest, policy="float32") != key


def test_export_mode_publishes_a_version_with_labels(task_run):
    c = _config(mode="export", teacher=task_run["teacher"], **task_run["common"],
                **{"export.student": task_run["student"]})
    path = run_mode(c, str(task_run["dir"] / "td"))
    assert path.endswith(os.path.join("export", "student", "1"))
    with open(os.path.join(path, "assets.extra", "labels.txt")) as f:
        assert f.read().split() == ["neg", "pos"]


@pytest.mark.slow
def test_conll_token_classification_end_to_end(tmp_path):
    """finetune -> task_distill -> evaluate on mock CoNLL-2003 (real TFDS builder, no download)."""
    import tensorflow_datasets as tfds
    from test_evaluate import SEQ, _conll_examples, _fixed
    from test_evaluate import _config as eval_config

    from tinybert_tf.distill import heads

    pre = tiny.write_teacher(tmp_path / "pre", max_sequence_length=SEQ)
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fixed(_conll_examples(16))):
        teacher = run_mode(eval_config(mode="finetune", task="conll2003", teacher=pre),
                           str(tmp_path / "ft"))
        assert isinstance(heads.load_task_model(teacher), heads.TokenClassifier)
        student = run_mode(eval_config(mode="task_distill", task="conll2003", teacher=teacher),
                           str(tmp_path / "td"))
        assert isinstance(heads.load_task_model(student), heads.TokenClassifier)
        report = run_mode(eval_config(mode="evaluate", task="conll2003", teacher=teacher,
                                      student="tiny_2l_32h"), str(tmp_path / "td"))
    assert [r["name"] for r in report["models"]] == ["teacher", "student"]
    assert "entity_f1" in report["models"][1]["metrics"]


def test_transfer_set_counts_and_two_step_distillation(task_run, tmp_path):
    """A transfer file with known leaks, duplicates and blanks: exact counts, then both steps
    train on labelled + transfer rows (step 1 with minilm_v2, step 2 soft + hard terms)."""
    d = task_run["dir"]
    dev_rows = [line.split("\t")[0] for line in open(d / "dev.tsv").read().splitlines()[1:]]
    train_rows = [line.split("\t")[0] for line in open(d / "train.tsv").read().splitlines()[1:]]
    new = [f"teacher model {w} small text" for w in tiny.WORDS[:10]]
    lines = new + [dev_rows[0], "  " + dev_rows[1] + " ", train_rows[0], new[0], "", "   "]
    (tmp_path / "transfer.txt").write_text("\n".join(lines) + "\n")
    c = _config(mode="task_distill", teacher=task_run["teacher"], **{
        **task_run["common"], "transfer_file": str(tmp_path / "transfer.txt"),
        "intermediate.recipe": "minilm_v2", "intermediate.relation_heads": 4,
        "prediction.hard_weight": 1.0})
    workdir = tmp_path / "td"
    out = run_mode(c, str(workdir))
    counts = json.load(open(workdir / "transfer.json"))
    assert {k: counts[k] for k in ("read", "used", "leaked", "duplicate", "empty")} == {
        "read": 16, "used": 10, "leaked": 2, "duplicate": 2, "empty": 2}
    # 48 labelled + 10 transfer rows = 14 full batches of 4 per epoch (the remainder is dropped,
    # as trained); the epoch, its schedule and its evaluation end at step 14, not at a log step.
    state = json.load(open(workdir / "prediction" / "selection.json"))
    assert state["history"][-1]["step"] == 14
    last = train.read_metrics(str(workdir / "prediction"))[-1]
    assert {"pred_loss", "hard_loss"} <= set(last)
    assert {"qq_loss", "kk_loss", "vv_loss"} <= set(train.read_metrics(str(workdir / "intermediate"))[-1])
    assert keras_hub.models.TextClassifier.from_preset(out, preprocessor=None).num_classes == 2


def test_hard_term_counts_labelled_rows_only(task_run):
    """On a batch of labelled + transfer rows the hard term is the cross-entropy of the
    labelled rows alone (NumPy reference), the soft term averages over every row."""
    from tinybert_tf.distill.distiller import Distiller
    from tinybert_tf.launch import builders, task_data

    c = _config(mode="task_distill", teacher=task_run["teacher"], **task_run["common"])
    spec = task_data.task_spec(c)
    tok = builders.load_tokenizer(task_run["teacher"])
    extra = {"text": ["teacher data small"] * 3}
    ds = task_data.TaskData(c, spec, tok, (extra, {})).one_pass()
    batches = list(ds)
    x, y, w = batches[-1]  # the last batch holds the 3 transfer rows (48 + 3 rows, batch 4)
    assert w.numpy().tolist() == [0.0, 0.0, 0.0]
    x, y, w = batches[-2]
    teacher = builders.load_classifier(task_run["teacher"])
    student = builders.load_classifier(task_run["student"], what="student")
    distiller = Distiller(teacher, student, config_lib.make_recipe(
        "tinybert_task_prediction", weights={"pred": 1.0, "hard": 1.0}))
    x = {k: v[:4] for k, v in x.items()}
    mixed_w = np.array([1, 0, 1, 0], "float32")
    terms = distiller.compute_terms(x, y, mixed_w, distiller.teacher_features(x),
                                    distiller.student_features(x, training=False))
    logits = np.asarray(student(x, training=False), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -log_p[np.arange(4), y.numpy()]
    np.testing.assert_allclose(float(terms["hard"]), nll[[0, 2]].mean(), rtol=1e-5)


def test_scoring_predicts_every_batch_shape_with_one_trace():
    """Length buckets and a short last batch: three shapes, one trace of Keras' predict function
    (Keras alone traces one per new shape); the scores those of the model called directly."""
    import tensorflow as tf

    from tinybert_tf.data import metrics
    from tinybert_tf.data.task_spec import TaskSpec
    from tinybert_tf.launch import task_modes

    model = tiny.classifier(tiny.backbone())
    batches = [(tiny.inputs(batch=4, seq=12), np.array([0, 1, 2, 0])),
               (tiny.inputs(batch=4, seq=8, seed=1), np.array([1, 1, 2, 0])),
               (tiny.inputs(batch=3, seq=8, seed=2), np.array([2, 0, 1]))]
    signature = ({k: tf.TensorSpec([None, None], tf.int32) for k in batches[0][0]},
                 tf.TensorSpec([None], tf.int64))
    data = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    data = data.apply(tf.data.experimental.assert_cardinality(len(batches)))
    spec = TaskSpec("t", ("text",), "label", 3, "classification", ("accuracy",), "train",
                    ("validation",))
    scores = task_modes.task_scores(model, data, spec)
    assert len(model.predict_function._list_all_concrete_functions()) == 1
    logits = np.concatenate([np.asarray(model(x, training=False)) for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert scores == metrics.compute(spec, logits.argmax(-1), labels)
    model.predict_function = None  # Keras' own tracing, for contrast: one per new shape
    model.predict(data.map(lambda x, y: x), verbose=0)
    assert len(model.predict_function._list_all_concrete_functions()) == 3
