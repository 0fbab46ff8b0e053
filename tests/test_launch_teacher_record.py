"""A Distiller's checkpoints hold what training changes (student, projections, optimizer, dropout
seed states) and not the frozen teacher, which every run loads from its preset: a resume through
the launcher ends with the uninterrupted run's weights bit for bit; `teacher.json` beside the
checkpoints records the teacher, and a restore beside another teacher is a one-line LaunchError
that assigns nothing; checkpoints written with the teacher inside (no `teacher.json`) restore as
they were written. The same on JAX (orbax) in a subprocess."""

import json
import os
import shutil
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf.distill import dtypes
from tinybert_tf.distill.distiller import Distiller
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import checkpoints, config_lib, teacher_record
from tinybert_tf.launch.modes import run as run_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    return {"teacher": tiny.write_teacher(d / "teacher"),
            "other": tiny.write_teacher(d / "other", seed=1),
            "corpus": tiny.write_corpus(d / "corpus.txt")}


def _distiller(teacher_dir, student_seed=1, teacher_dtype=None, steps=2):
    """A tiny Distiller (teacher loaded from `teacher_dir`), AdamW, trained `steps` steps."""
    teacher = dtypes.load_preset(keras_hub.models.Backbone, teacher_dir, teacher_dtype)
    student = tiny.backbone(num_layers=2, max_sequence_length=32, seed=student_seed)
    model = Distiller(teacher, student, "tinybert_general")
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    model.optimizer.build(model.trainable_variables)
    if steps:
        model.fit(tiny.dataset(steps=steps), epochs=1, verbose=0, shuffle=False)
    return model


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _assert_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def _kept(model):
    """Every variable a checkpoint should hold: the Distiller's but the teacher's, the optimizer's."""
    teacher = {id(v) for v in model.teacher.variables}
    return [v for v in model.variables if id(v) not in teacher] + list(model.optimizer.variables)


@pytest.fixture(scope="module")
def saved(assets, tmp_path_factory):
    """A Distiller trained 2 steps and its checkpoint (ckpt-2) with teacher.json."""
    directory = str(tmp_path_factory.mktemp("ckpt"))
    model = _distiller(assets["teacher"])
    checkpoints.make(directory, model, teacher_path=assets["teacher"]).save(2)
    return directory, model


def test_checkpoint_holds_no_teacher_variable(saved, assets):
    directory, model = saved
    entries = dict(tf.train.list_variables(os.path.join(directory, "ckpt-2")))
    values = {k: v for k, v in entries.items() if k.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
              and not k.startswith("save_counter")}
    kept = _kept(model)
    assert len(values) == len(kept) == len(model.variables) + len(model.optimizer.variables) \
        - len(model.teacher.variables)
    assert sum(int(np.prod(s)) for s in values.values()) == sum(int(np.prod(v.shape)) for v in kept)
    with open(os.path.join(directory, teacher_record.TEACHER_FILE)) as f:
        record = json.load(f)
    assert record["teacher"] == assets["teacher"]
    assert record["fingerprint"] == teacher_record.teacher_fingerprint(model)
    assert record["fingerprint"] == teacher_record.teacher_fingerprint(model.teacher)
    assert record["fingerprint"] != teacher_record.teacher_fingerprint(
        keras_hub.models.Backbone.from_preset(assets["other"]))


def test_restore_into_a_fresh_distiller(saved, assets):
    """The saved variables come back into a Distiller of other initial weights; its teacher
    (loaded from the preset) is the one it was built with."""
    directory, model = saved
    fresh = _distiller(assets["teacher"], student_seed=2, steps=0)
    teacher = _values(fresh.teacher.variables)
    ck = checkpoints.make(directory, fresh, teacher_path=assets["teacher"])
    assert ck.restore() == os.path.join(directory, "ckpt-2")
    _assert_equal(_values(_kept(fresh)), _values(_kept(model)))
    _assert_equal(_values(fresh.teacher.variables), teacher)


def _copy(directory, tmp_path):
    target = str(tmp_path / "checkpoints")
    shutil.copytree(directory, target)
    return target


@pytest.mark.parametrize("case", ["other", "rewritten", "dtype", "unrecorded"])
def test_other_teacher_is_one_line_error_and_assigns_nothing(saved, assets, tmp_path, case):
    directory, _ = saved
    directory = _copy(directory, tmp_path)
    path, load, dtype = assets["teacher"], assets["other"], None
    if case == "rewritten":  # the same path, the preset written again with other weights
        path = load = tiny.write_teacher(tmp_path / "teacher", seed=1)
        _record(directory, teacher=path)
    elif case == "dtype":
        load, dtype = assets["teacher"], "bfloat16"
    elif case == "unrecorded":
        _record(directory, teacher="")
    model = _distiller(load, student_seed=3, teacher_dtype=dtype, steps=0)
    before = _values([*model.variables, *model.optimizer.variables])
    ck = checkpoints.make(directory, model, teacher_path=path if case != "other" else load)
    with pytest.raises(LaunchError) as err:
        ck.restore()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoints in {directory} were written with teacher ")
    assert message.endswith(f"or move {directory} away to train from step 0.")
    fix = {"other": f"pass --config.teacher={assets['teacher']},",
           "rewritten": f"restore the weights of {path} that they were written with,",
           "dtype": "pass --config.teacher_dtype=float32,",
           "unrecorded": "pass the teacher they were written with,"}[case]
    assert fix in message, message
    _assert_equal(_values([*model.variables, *model.optimizer.variables]), before)


def _record(directory, **fields):
    path = os.path.join(directory, teacher_record.TEACHER_FILE)
    with open(path) as f:
        record = json.load(f)
    with open(path, "w") as f:
        json.dump({**record, **fields}, f)


def test_checkpoints_with_the_teacher_inside_restore_as_before(assets, tmp_path):
    """A directory of checkpoints written with every Distiller variable (no teacher.json) is
    restored and continued in that layout."""
    model = _distiller(assets["teacher"])
    old = tf.train.Checkpoint(model=list(model.variables),
                              optimizer=list(model.optimizer.variables))
    tf.train.CheckpointManager(old, str(tmp_path), 3).save(checkpoint_number=2)
    fresh = _distiller(assets["teacher"], student_seed=2, steps=0)
    ck = checkpoints.make(str(tmp_path), fresh, teacher_path=assets["teacher"])
    assert ck.restore() == str(tmp_path / "ckpt-2")
    _assert_equal(_values([*fresh.variables, *fresh.optimizer.variables]),
                  _values([*model.variables, *model.optimizer.variables]))
    ck.save(3)
    assert not (tmp_path / teacher_record.TEACHER_FILE).exists()
    assert len(tf.train.list_variables(str(tmp_path / "ckpt-3"))) == len(
        tf.train.list_variables(str(tmp_path / "ckpt-2")))


# ---- through the launcher ------------------------------------------------------------------------


def _config(assets):
    return config_lib.load("general_distill", "tiny", teacher=assets["teacher"],
                           **{"data.train": assets["corpus"]})


def _weights(preset):
    return _values(keras_hub.models.Backbone.from_preset(preset).weights)


@pytest.mark.slow
def test_resume_from_a_checkpoint_without_teacher_is_bit_identical(assets, tmp_path, capsys):
    """8 steps uninterrupted == the same run restored at step 4 (student, projections, optimizer
    and dropout states from the checkpoint, the teacher loaded from its preset) and trained on."""
    full = tmp_path / "full"
    run_mode(_config(assets), str(full))
    shutil.copytree(full, tmp_path / "resumed")
    resumed = tmp_path / "resumed"
    ckpt = resumed / "checkpoints"
    for name in os.listdir(ckpt):
        if name.startswith("ckpt-8."):
            os.remove(ckpt / name)
    tf.compat.v1.train.update_checkpoint_state(str(ckpt), str(ckpt / "ckpt-4"),
                                               all_model_checkpoint_paths=[str(ckpt / "ckpt-4")])
    shutil.rmtree(resumed / "student")
    capsys.readouterr()
    run_mode(_config(assets), str(resumed))
    assert f"Resuming from {ckpt / 'ckpt-4'} (step 4 of 8)." in capsys.readouterr().out
    _assert_equal(_weights(str(resumed / "student")), _weights(str(full / "student")))
    # The model's part of each checkpoint: the student's variables (weights, dropout seed states;
    # hidden sizes equal, so no projection), none of the teacher's.
    student = keras_hub.models.Backbone.from_preset(str(full / "student"))
    for name in ("ckpt-4", "ckpt-8"):
        shapes = [tuple(s) for k, s in tf.train.list_variables(str(ckpt / name))
                  if k.startswith("model/")]
        assert sorted(shapes) == sorted(tuple(v.shape) for v in student.variables)
    with open(ckpt / teacher_record.TEACHER_FILE) as f:
        assert json.load(f)["teacher"] == assets["teacher"]


# ---- JAX: orbax, in a subprocess ----------------------------------------------------------------

# Two processes, as a resume is: Keras numbers dropout seed generators per process, and their
# paths name the state tree's entries. "save": train 2 steps, save, and keep every saved value;
# "restore": a fresh Distiller of the same teacher gets them back; one of another teacher raises.
_JAX_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
from test_launch_teacher_record import _distiller, _kept, _values, _assert_equal
from tinybert_tf.errors import LaunchError
from tinybert_tf.launch import checkpoints, teacher_record
phase, teacher, other, directory = sys.argv[2:6]
assert keras.backend.backend() == "jax"
if phase == "save":
    model = _distiller(teacher)
    ck = checkpoints.make(directory, model, teacher_path=teacher)
    assert isinstance(ck, checkpoints.OrbaxCheckpointer)
    ck.save(2)
    tree = ck.manager.restore(2, args=ck.ocp.args.StandardRestore())["state"]
    flat = {g: teacher_record.flat(t) for g, t in tree.items()}
    assert all(k.endswith("seed_generator_state") for k in flat["non_trainable_variables"]), flat
    assert sum(len(flat[g]) for g in ("trainable_variables", "non_trainable_variables",
                                      "optimizer_variables")) == len(_kept(model)), flat.keys()
    np.savez(directory + ".npz", *_values(_kept(model)))
else:
    fresh = _distiller(teacher, student_seed=2, steps=0)
    assert checkpoints.make(directory, fresh, teacher_path=teacher).restore().endswith("/2")
    with np.load(directory + ".npz") as saved:
        _assert_equal(_values(_kept(fresh)), [saved[f"arr_{i}"] for i in range(len(saved))])
    wrong = _distiller(other, student_seed=3, steps=0)
    before = _values([*wrong.variables, *wrong.optimizer.variables])
    try:
        checkpoints.make(directory, wrong, teacher_path=other).restore()
        raise SystemExit("no LaunchError")
    except LaunchError as err:
        assert "\\n" not in str(err) and f"pass --config.teacher={teacher}," in str(err), err
    _assert_equal(_values([*wrong.variables, *wrong.optimizer.variables]), before)
print("JAX OK")
"""


@pytest.mark.slow
def test_orbax_checkpoint_holds_no_teacher_and_checks_it(assets, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    for phase in ("save", "restore"):
        proc = subprocess.run(
            ["timeout", "300", sys.executable, "-c", _JAX_SCRIPT, os.path.join(ROOT, "tests"),
             phase, assets["teacher"], assets["other"], str(tmp_path / "checkpoints")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=330)
        assert proc.returncode == 0 and "JAX OK" in proc.stdout, (phase, proc.stderr[-3000:])
