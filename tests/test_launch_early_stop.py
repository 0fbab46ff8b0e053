"""Early stopping on the eval split through `train.run`: the run ends at the evaluation that
used up the patience, with a checkpoint there; a restart trains no further; a run interrupted
before the stop (a signal, or a kill between selection.json and the checkpoint) resumes to the
same stop step, weights and selection as an uninterrupted one."""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf import errors
from tinybert_tf.launch import selection, train

TOTAL, STOP, BEST = 100, 30, 20
# The eval score at each chunk end (every 5 steps), by step, so a re-scored chunk scores the
# same: best 0.6 at step 20, then 0.5 twice; with patience 2 the run stops at step 30, where the
# 0.9 afterwards would have been an improvement.
SCORES = {5: 0.1, 10: 0.5, 15: 0.4, 20: 0.6, 25: 0.5, 30: 0.5}


def _data():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True) ** 2)).batch(4).repeat()


class _Raise(keras.callbacks.Callback):
    """Raises at the chunk end of `step`, after the selector wrote selection.json and before the
    chunk's checkpoint: a process killed there."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_epoch_end(self, epoch, logs=None):
        if selection.current_step(self.model) == self.step:
            raise RuntimeError(f"killed at step {self.step}")


class _SignalAt(keras.callbacks.Callback):
    """Sends `sig` to this process at the end of step `step` (before SignalStop looks)."""

    def __init__(self, sig, step):
        super().__init__()
        self.sig, self.step = sig, step

    def on_train_batch_end(self, batch, logs=None):
        if selection.current_step(self.model) == self.step:
            signal.raise_signal(self.sig)


def _selector(model, workdir, scored=None):
    def score():
        step = selection.current_step(model)
        if scored is not None:
            scored.append(step)
        return {"m": SCORES.get(step, 0.9)}

    return selection.EvalSelector(model, workdir, score, os.makedirs, "m", 5, TOTAL, patience=2)


def _run(model, workdir, extra=(), scored=None):
    """100 steps in chunks of 5, an evaluation at each chunk end, checkpoints every 20 steps (so
    the stop step, 30, gets its checkpoint from the early stop, not from checkpoint_every)."""
    selector = _selector(model, workdir, scored)
    train.run(model, _data(), workdir, total_steps=TOTAL, log_every=5, checkpoint_every=20,
              callbacks=[selector, *extra])
    return selector


def _weights(model):
    return [w.numpy() for w in model.weights]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    model = tiny.dense_model()
    _run(model, workdir)
    return workdir, model


def _latest(workdir):
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), os.path.join(workdir,
                                                                             "checkpoints"), 3)
    return manager.latest_checkpoint


def test_run_ends_at_the_stop_with_a_checkpoint_and_a_restart_trains_no_further(
        uninterrupted, capsys):
    workdir, model = uninterrupted
    assert selection.current_step(model) == STOP < TOTAL
    assert _latest(workdir).endswith(f"ckpt-{STOP}")
    state = json.load(open(os.path.join(workdir, "selection.json")))
    assert state["stopped"] == {"step": STOP, "patience": 2}
    assert state["best"]["step"] == BEST
    assert [h["step"] for h in state["history"]] == list(range(5, STOP + 1, 5))
    assert [r["step"] for r in train.read_metrics(workdir)] == list(range(5, STOP + 1, 5))
    # The same command again: restored at the stop, nothing trained, nothing scored.
    again, scored = tiny.dense_model(seed=1), []
    selector = _run(again, workdir, scored=scored)
    assert f"Run already stopped early at step {STOP}." in capsys.readouterr().out
    assert selector.stopped and scored == [] and selection.current_step(again) == STOP
    for a, b in zip(_weights(model), _weights(again)):
        np.testing.assert_array_equal(a, b)
    assert _latest(workdir).endswith(f"ckpt-{STOP}")
    selector.finish(os.path.join(workdir, "out"))
    assert scored == []
    assert f"(stopped early at step {STOP} of {TOTAL})" in capsys.readouterr().out


@pytest.mark.parametrize("interrupt,resumed_at", [
    (lambda: _SignalAt(signal.SIGINT, 13), 13),  # a signal mid-chunk, before the stop
    (lambda: _SignalAt(signal.SIGTERM, 28), 28),  # in the chunk that stops: no fit after it
    (lambda: _Raise(25), 20),  # killed after scoring step 25: that chunk is re-run and re-scored
    (lambda: _Raise(STOP), 20),  # killed after recording the stop, before its checkpoint
], ids=["signal-mid-chunk", "signal-in-stop-chunk", "kill-after-eval", "kill-after-stop-recorded"])
def test_an_interrupted_run_resumes_to_the_same_stop(uninterrupted, tmp_path, capsys, interrupt,
                                                     resumed_at):
    full_dir, full = uninterrupted
    workdir = str(tmp_path)
    with pytest.raises((errors.Interrupted, RuntimeError)):
        _run(tiny.dense_model(), workdir, [interrupt()])
    resumed = tiny.dense_model()
    selector = _run(resumed, workdir)
    out = capsys.readouterr().out
    assert f"(step {resumed_at} of {TOTAL})" in out and "already stopped" not in out
    assert f"Early stop at step {STOP}: no better m in 2 evaluations (best 0.6000 at step " \
           f"{BEST})." in out
    assert selection.current_step(resumed) == STOP and selector.stopped
    assert _latest(workdir).endswith(f"ckpt-{STOP}")
    for a, b in zip(_weights(full), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    states = [json.load(open(os.path.join(d, "selection.json"))) for d in (full_dir, workdir)]
    assert states[0] == states[1]
