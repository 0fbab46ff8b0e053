"""Several teachers: `finetune.members` trains an ensemble in one command (resumable member by
member: test_launch_selection.py kills one), `task_distill` distils the ensemble's combined
soft targets, teachers that differ in tokenizer or labels are refused before the workdir is
claimed."""

import os

import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf.distill.distiller import CACHED_LOGITS
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import config_lib, evaluate_mode, teacher_logits, teachers
from tinybert_tf.launch.modes import run as run_mode


def _config(**overrides):
    return config_lib.load("task_distill", "tiny", **overrides)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _weights(preset):
    model = keras_hub.models.TextClassifier.from_preset(preset, preprocessor=None)
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    d = tmp_path_factory.mktemp("ensemble")
    common = {"task": "file", "data.train_file": tiny.write_task(d / "train.tsv", 48, 0),
              "data.eval_file": tiny.write_task(d / "dev.tsv", 16, 1),
              "data.test_file": tiny.write_task(d / "test.tsv", 16, 2)}
    c = _config(mode="finetune", teacher=tiny.write_teacher(d / "pre"), **common,
                **{"finetune.members": 2, "finetune.learning_rate": 3e-3})
    return {"dir": d, "common": common, "teacher": run_mode(c, str(d / "ft"))}


def test_members_are_different_teachers_listed_in_members_txt(ensemble):
    out = ensemble["teacher"]
    assert teachers.resolve(out) == [os.path.join(out, "member_0"), os.path.join(out, "member_1")]
    with open(os.path.join(out, "member_0", teachers.LABELS_FILE)) as f:
        assert f.read().split() == ["neg", "pos"]
    a, b = (_weights(os.path.join(out, m)) for m in ("member_0", "member_1"))
    assert max(np.abs(x - y).max() for x, y in zip(a, b)) > 1e-3  # seeds 0 and 1 differ


@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_cached_soft_targets_are_the_members_combined(ensemble, combine):
    dirs = teachers.resolve(ensemble["teacher"])
    c = _config(mode="task_distill", teacher=ensemble["teacher"], **ensemble["common"],
                **{"prediction.temperature": 2.0, "prediction.combine": combine})
    from tinybert_tf.launch import builders, task_data

    spec, tokenizer = task_data.task_spec(c), builders.load_tokenizer(dirs[0])
    data = teacher_logits.cached_logits_data(c, task_data.TaskData(c, spec, tokenizer), dirs,
                                             tf.distribute.get_strategy())
    x = next(iter(data))[0]
    inputs = {k: v for k, v in x.items() if k != CACHED_LOGITS}
    logits = [np.asarray(builders.load_classifier(p)(inputs, training=False)) for p in dirs]
    if combine == "prob":
        want = np.mean([_softmax(z / 2.0) for z in logits], axis=0)
    else:
        want = _softmax(np.mean(logits, axis=0) / 2.0)
    np.testing.assert_allclose(_softmax(np.asarray(x[CACHED_LOGITS]) / 2.0), want, atol=1e-5)
    assert not np.allclose(_softmax(logits[0] / 2.0), want, atol=1e-3)  # both teachers count


@pytest.mark.slow
def test_task_distill_and_evaluate_take_the_ensemble_dir(ensemble, monkeypatch):
    """... and `evaluate_mode.run_splits` writes the dev and test reports of two single-split
    runs with each model loaded once."""
    d = ensemble["dir"]
    student = run_mode(_config(mode="task_distill", teacher=ensemble["teacher"],
                               **ensemble["common"]), str(d / "td"))
    report = run_mode(_config(mode="evaluate", teacher=ensemble["teacher"], student=student,
                              **ensemble["common"]), str(d / "ev"))
    rows = {r["name"]: r for r in report["models"]}
    assert list(rows) == ["teacher 0", "teacher 1", "ensemble", "student"]
    assert rows["ensemble"]["params"] == rows["teacher 0"]["params"] + rows["teacher 1"]["params"]
    assert report["reference"] == "ensemble" and report["also"] in ("teacher 0", "teacher 1")
    assert "share_also" in rows["student"]
    test = run_mode(_config(mode="evaluate", teacher=ensemble["teacher"], student=student,
                            eval_split="test", **ensemble["common"]), str(d / "ev_test"))
    dev = {r["name"]: r["metrics"]["accuracy"] for r in report["models"]}
    assert test["also_chosen_on"] == "dev"  # the test split never picks the model it reports
    assert dev[test["also"]] == max(dev["teacher 0"], dev["teacher 1"])
    loads = []
    load = evaluate_mode.builders.load_task_model
    monkeypatch.setattr(evaluate_mode.builders, "load_task_model",
                        lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    both = evaluate_mode.run_splits(
        _config(mode="evaluate", teacher=ensemble["teacher"], student=student,
                **ensemble["common"]),
        {"validation": (str(d / "both_dev"), 1), "test": (str(d / "both_test"), 1)}, str(d))
    assert sorted(loads) == sorted([*teachers.resolve(ensemble["teacher"]), student])
    for one, split in ((report, "validation"), (test, "test")):
        assert {k: both[split][k] for k in ("split", "also", "also_chosen_on")} == {
            k: one[k] for k in ("split", "also", "also_chosen_on")}
        assert [(r["name"], r["metrics"], r["share"], r["share_also"])
                for r in both[split]["models"]] == [
            (r["name"], r["metrics"], r["share"], r["share_also"]) for r in one["models"]]
    assert (d / "both_test" / "report.md").stat().st_size > 0


def test_teachers_that_differ_are_refused_before_the_workdir_is_claimed(ensemble, tmp_path):
    other = tiny.write_teacher(tmp_path / "three", num_classes=3)
    member = os.path.join(ensemble["teacher"], "member_0")
    c = _config(mode="task_distill", teacher=f"{member},{other}", **ensemble["common"])
    with pytest.raises(LaunchError, match=r"differ in their number of classes \(2 vs 3\)"):
        run_mode(c, str(tmp_path / "td"))
    assert not (tmp_path / "td" / "config.json").exists()
    odd = tiny.write_teacher(tmp_path / "odd", num_classes=2)
    keras_hub.tokenizers.BertTokenizer(vocabulary=list(tiny.VOCAB) + ["extra"]).save_to_preset(odd)
    with pytest.raises(LaunchError, match="differ in their tokenizer"):
        teachers.check_compatible([member, odd])
    with pytest.raises(LaunchError, match="general_distill takes one teacher"):
        teachers.one(f"{member},{other}", "general_distill")
