"""Labels that travel and are checked by name, the no-teacher baseline in one command, and the
guards on inputs that silently hurt a run (a random student, seq_len past a position table)."""

import contextlib
import io
import os
import shutil

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.distill import dtypes, heads
from tinybert_tf.errors import LaunchError, UserError
from tinybert_tf.export.labels import preset_labels, write_preset_labels
from tinybert_tf.launch import builders, config_lib, teachers
from tinybert_tf.launch.modes import run as run_mode


def _config(**overrides):
    return config_lib.load("task_distill", "tiny", **overrides)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("labels")
    common = {"task": "file", "data.train_file": tiny.write_task(d / "train.tsv", 24, 0),
              "data.eval_file": tiny.write_task(d / "dev.tsv", 8, 1)}
    pre = tiny.write_teacher(d / "pre")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        teacher = run_mode(_config(mode="finetune", teacher=pre, student="tiny_2l_32h", **common),
                           str(d / "ft"))
    return {"dir": d, "pre": pre, "teacher": teacher, "common": common, "out": out.getvalue()}


RANDOM_STUDENT = (
    "Warning: the student tiny_2l_32h starts from random weights; distil a general student "
    "first (--config=general_distill, then --config.student=<its workdir>/student) or start "
    "from the teacher's layers (--config.student=from_teacher:N).")


def _warnings(out):
    return [line for line in out.splitlines() if line.startswith("Warning:")]


def _logits(model):
    return np.asarray(model.predict(tiny.inputs(batch=4, seq=12, seed=5), verbose=0))


def _swapped_teacher(task, tmp_path):
    """The fine-tuned teacher with its two classes swapped in its head and in labels.txt: the
    same model, labelled in another order."""
    out = str(tmp_path / "swapped")
    model = builders.load_classifier(task["teacher"])
    heads.reorder_classes(model, [1, 0])
    builders.save_model(model, tiny.tokenizer(), out)
    write_preset_labels(out, ["pos", "neg"])
    return out


def test_task_presets_carry_their_label_names(task):
    assert preset_labels(task["teacher"]) == ["neg", "pos"]


def test_reorder_classes_permutes_the_logits():
    model = tiny.classifier(tiny.backbone(seed=3), num_classes=3)
    before = _logits(model)
    heads.reorder_classes(model, [2, 0, 1])
    np.testing.assert_allclose(_logits(model), before[:, [2, 0, 1]], rtol=1e-5, atol=1e-6)


def test_a_teacher_labelled_in_another_order_is_remapped_by_name(task, tmp_path, capsys):
    swapped = _swapped_teacher(task, tmp_path)
    order = teachers.label_order(swapped, ["neg", "pos"])
    assert order == [1, 0]
    assert "the task's labels in another order (pos, neg)" in capsys.readouterr().out
    original = _logits(builders.load_classifier(task["teacher"]))
    assert not np.allclose(_logits(builders.load_classifier(swapped)), original)
    remapped = heads.reorder_classes(builders.load_classifier(swapped), order)
    np.testing.assert_allclose(_logits(remapped), original, rtol=1e-5, atol=1e-6)
    assert teachers.label_order(task["teacher"], ["neg", "pos"]) is None


def test_a_teacher_with_other_labels_is_refused_before_the_claim(task, tmp_path):
    other = str(tmp_path / "other")
    shutil.copytree(task["teacher"], other)
    write_preset_labels(other, ["neg", "spam"])
    c = _config(mode="task_distill", teacher=other, **task["common"])
    with pytest.raises(LaunchError, match=r"labelled \['neg', 'spam'\] but the task's labels "
                                          r"are \['neg', 'pos'\]"):
        run_mode(c, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_distilled_students_and_exports_carry_the_labels(task, tmp_path, capsys):
    """A swapped teacher distils (its outputs remapped) into a random student (one warning
    line); the student preset carries the task's names, and an export of it with no labels flag
    reads them from the preset."""
    from tinybert_tf.export.assets import read_labels
    from tinybert_tf.export.serving import describe_student

    c = _config(mode="task_distill", teacher=_swapped_teacher(task, tmp_path), stages="prediction",
                **task["common"])
    student = run_mode(c, str(tmp_path / "td"))
    out = capsys.readouterr().out
    assert "remapped by name" in out and _warnings(out) == [RANDOM_STUDENT]
    assert preset_labels(student) == ["neg", "pos"]
    model = builders.load_task_model(student)
    info = describe_student(model)
    assert read_labels(None, info, preset_labels(student)) == (["neg", "pos"], "preset")
    assert read_labels(None, info, None) == (["LABEL_0", "LABEL_1"], "default")


def test_finetune_of_a_student_is_the_no_teacher_baseline(task, tmp_path, capsys):
    c = _config(mode="finetune", teacher=task["pre"], student="from_teacher:1", **task["common"])
    out = run_mode(c, str(tmp_path / "alone"))
    assert out == str(tmp_path / "alone" / "student")
    assert "[finetune] student from_teacher:1: the student alone, no teacher" in \
        capsys.readouterr().out
    model = keras_hub.models.TextClassifier.from_preset(out, preprocessor=None)
    assert model.backbone.num_layers == 1 and preset_labels(out) == ["neg", "pos"]
    assert not (tmp_path / "alone" / "teacher").exists()
    # An architecture name is not trained weights: finetune (the fixture's, student
    # tiny_2l_32h) trains the teacher, as it says.
    assert task["teacher"] == str(task["dir"] / "ft" / "teacher")
    assert "[finetune] teacher" in task["out"]


def test_a_student_from_the_teachers_layers_does_not_warn(task, tmp_path, capsys):
    """No warning for a student from the teacher's layers (a random one's warning:
    test_distilled_students_and_exports_carry_the_labels)."""
    c = _config(mode="task_distill", teacher=task["teacher"], stages="prediction",
                student="from_teacher:2", **task["common"])
    run_mode(c, str(tmp_path / "td"))
    assert "Warning:" not in capsys.readouterr().out


@pytest.mark.parametrize("mode, extra", [("task_distill", {}), ("finetune", {}),
                                         ("finetune", {"student": "from_teacher:1"})])
def test_seq_len_beyond_the_position_table_is_refused_before_the_claim(task, tmp_path, mode,
                                                                       extra):
    c = _config(mode=mode, teacher=task["teacher"], **task["common"], **extra,
                **{"data.seq_len": 64})
    with pytest.raises(LaunchError, match=r"data.seq_len=64 is longer than the teacher's "
                                          r"position table \(32 positions, .*\); pass "
                                          r"--config.data.seq_len=32 or less"):
        run_mode(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name", ["model.weights.h5", "task.weights.h5"])
def test_a_damaged_weights_file_is_one_line_naming_it(task, tmp_path, name):
    """A teacher preset whose weights file was cut short (an interrupted copy): one line naming
    the file, before the workdir is claimed; an intact preset loads."""
    damaged = str(tmp_path / "damaged")
    shutil.copytree(task["teacher"], damaged)
    path = os.path.join(damaged, name)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    c = _config(mode="task_distill", teacher=damaged, **task["common"])
    with pytest.raises(UserError, match=rf"^{path} is damaged \(.*truncated file.*\); copy the "
                                        r"preset again, or re-run the run that wrote it\.$"):
        run_mode(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
    assert dtypes.damaged_weights(task["teacher"]) is None


def test_task_distillation_from_a_teacher_without_a_task_head_names_finetune(tmp_path):
    backbone = tiny.write_teacher(tmp_path / "backbone")
    with pytest.raises(LaunchError, match=r"teacher .*backbone has no task head .* run "
                                          r"mode=finetune"):
        teachers.label_orders([backbone], ["neg", "pos"])
    assert teachers.label_orders([tiny.write_teacher(tmp_path / "head", num_classes=2)],
                                 ["neg", "pos"]) == {str(tmp_path / "head"): None}
