"""A damaged latest checkpoint (truncated, bit-flipped, a file missing) is skipped with one line and
the next older one restores every variable; none restorable is a one-line UserError; a missing or
unreadable `checkpoint` state file falls back to the checkpoint files found by name."""

import os
import re
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf import errors
from tinybert_tf.launch import checkpoints, train

STEPS, EVERY = 30, 10  # checkpoints 10, 20, 30 (max_to_keep 3)


def _model(seed=0):
    return tiny.dense_model(seed)


def _data():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(4).repeat()


def _state(model):
    """Every checkpointed value: model variables (dropout seed state included) and optimizer."""
    return [v.numpy().copy() for v in (*model.variables, *model.optimizer.variables)]


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_end(self, epoch, logs=None):
        self.states[int(self.model.optimizer.iterations.numpy())] = _state(self.model)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run's workdir (pristine: tests copy it) and the state at each chunk end."""
    workdir = tmp_path_factory.mktemp("run")
    model, record = _model(), _Record()
    train.run(model, _data(), str(workdir), STEPS, log_every=EVERY, checkpoint_every=EVERY,
              callbacks=[record])
    return workdir, record.states


def _copy(trained, tmp_path):
    src, _ = trained
    dst = tmp_path / "run"
    for root, _, files in os.walk(src):
        target = dst / os.path.relpath(root, src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            (target / name).write_bytes(open(os.path.join(root, name), "rb").read())
    return dst / "checkpoints"


def _damage(ckpt_dir, step, how):
    data = ckpt_dir / f"ckpt-{step}.data-00000-of-00001"
    if how == "truncate":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "flip":
        raw = bytearray(data.read_bytes())
        for i in range(len(raw) // 3, len(raw) // 3 + 8):
            raw[i] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "no_index":
        (ckpt_dir / f"ckpt-{step}.index").unlink()
    elif how == "no_data":
        data.unlink()
    else:
        raise ValueError(how)


def _restore(ckpt_dir, seed=1):
    """A fresh model (other initial weights) and optimizer restored from `ckpt_dir`."""
    model = _model(seed)
    model.optimizer.build(model.trainable_variables)
    return model, checkpoints.Checkpointer(str(ckpt_dir), model, model.optimizer)


def _assert_state(model, expected):
    got = _state(model)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("how", ["truncate", "flip", "no_index", "no_data"])
def test_damaged_latest_falls_back_to_the_older_one(trained, tmp_path, capfd, how):
    ckpt_dir = _copy(trained, tmp_path)
    _damage(ckpt_dir, 30, how)
    model, ck = _restore(ckpt_dir)
    assert ck.restore() == str(ckpt_dir / "ckpt-20")
    assert int(model.optimizer.iterations.numpy()) == 20
    _assert_state(model, trained[1][20])
    lines = [line for line in capfd.readouterr().err.splitlines() if "Skipping" in line]
    assert len(lines) == 1 and lines[0].startswith(f"Skipping checkpoint {ckpt_dir}/ckpt-30: ")


def test_resume_after_fallback_matches_uninterrupted_run(trained, tmp_path):
    """The run goes on from step 20, rewrites ckpt-30 and ends as the undamaged run did."""
    ckpt_dir = _copy(trained, tmp_path)
    _damage(ckpt_dir, 30, "flip")
    model = _model(1)
    train.run(model, _data(), str(ckpt_dir.parent), STEPS, log_every=EVERY, checkpoint_every=EVERY)
    _assert_state(model, trained[1][30])
    _, ck = _restore(ckpt_dir)
    assert ck.restore() == str(ckpt_dir / "ckpt-30")


class _SigintAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            signal.raise_signal(signal.SIGINT)


def test_stop_again_at_a_damaged_checkpoints_step_rewrites_it(tmp_path, capfd):
    """Stopped at 25 (ckpt-25), ckpt-25 damaged, resumed from ckpt-20 and stopped at 25 again:
    a new ckpt-25 is written (not taken for the damaged one) and the next resume uses it."""
    workdir = str(tmp_path)

    def go(*extra):
        model = _model(1)
        train.run(model, _data(), workdir, STEPS, log_every=EVERY, checkpoint_every=EVERY,
                  callbacks=list(extra))
        return model

    with pytest.raises(errors.Interrupted, match="stopped at step 25"):
        go(_SigintAt(25))
    _damage(tmp_path / "checkpoints", 25, "flip")
    with pytest.raises(errors.Interrupted, match="stopped at step 25"):
        go(_SigintAt(25))
    assert capfd.readouterr().err.count("Skipping checkpoint") == 1
    _, ck = _restore(tmp_path / "checkpoints")
    assert ck.restore().endswith("ckpt-25")
    assert "Skipping" not in capfd.readouterr().err


def test_two_damaged_fall_back_two(trained, tmp_path, capfd):
    ckpt_dir = _copy(trained, tmp_path)
    _damage(ckpt_dir, 30, "truncate")
    _damage(ckpt_dir, 20, "no_index")
    model, ck = _restore(ckpt_dir)
    assert ck.restore().endswith("ckpt-10")
    _assert_state(model, trained[1][10])
    assert capfd.readouterr().err.count("Skipping checkpoint") == 2


def test_all_damaged_is_one_line_user_error(trained, tmp_path):
    ckpt_dir = _copy(trained, tmp_path)
    for step, how in ((30, "flip"), (20, "truncate"), (10, "no_data")):
        _damage(ckpt_dir, step, how)
    _, ck = _restore(ckpt_dir)
    with pytest.raises(errors.UserError, match=re.escape(f"no checkpoint in {ckpt_dir} can be "
                                                         "restored")) as err:
        ck.restore()
    assert "\n" not in str(err.value) and "delete it" in str(err.value)
    assert "ckpt-30, ckpt-20, ckpt-10" in str(err.value)


@pytest.mark.parametrize("state", ["missing", "garbage"])
def test_unreadable_state_file_uses_checkpoints_by_name(trained, tmp_path, capfd, state):
    ckpt_dir = _copy(trained, tmp_path)
    if state == "missing":
        (ckpt_dir / "checkpoint").unlink()
    else:
        (ckpt_dir / "checkpoint").write_text("model_checkpoint_path: {{{ not a proto\n")
    _damage(ckpt_dir, 30, "flip")
    model, ck = _restore(ckpt_dir)
    assert ck.restore() == str(ckpt_dir / "ckpt-20")
    _assert_state(model, trained[1][20])
    err = capfd.readouterr().err
    assert f"Skipping checkpoint {ckpt_dir}/ckpt-30" in err
    assert "missing or unreadable; found 3 checkpoint(s) by name" in err
    # The state file is rebuilt: the restored one is the latest, the older ones are kept track of
    # (max_to_keep sweeps them as usual).
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), str(ckpt_dir), 3)
    assert manager.latest_checkpoint == str(ckpt_dir / "ckpt-20")
    assert sorted(os.path.basename(p) for p in manager.checkpoints) == [
        "ckpt-10", "ckpt-20", "ckpt-30"]


def test_no_state_file_and_no_complete_checkpoint_starts_fresh(tmp_path):
    """A first save killed mid-write leaves data without an index: nothing to restore."""
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    (ckpt_dir / "ckpt-10.data-00000-of-00001").write_bytes(b"\0" * 64)
    model, ck = _restore(ckpt_dir)
    assert ck.restore() is None
    assert int(model.optimizer.iterations.numpy()) == 0
