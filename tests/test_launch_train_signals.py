"""Ctrl-C / SIGTERM stop a run cleanly: a checkpoint at the step reached, exit 130 / 143, and the
same command resumes to the weights, metrics and model selection of an uninterrupted run; after
SIGKILL it resumes from the last periodic checkpoint."""

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tiny

from tinybert_tf import errors
from tinybert_tf.launch import selection, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- in process: a small Keras model, the signal sent from a callback at an exact step ----------


def _model():
    return tiny.dense_model()


def _data():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True) ** 2)).batch(4).repeat()


class _SendAt(keras.callbacks.Callback):
    """Sends `sig` to this process at the end of step `step` (before SignalStop looks)."""

    def __init__(self, sig, step):
        super().__init__()
        self.sig, self.step = sig, step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            signal.raise_signal(self.sig)


def _run(model, workdir, extra=()):
    """20 steps in chunks of 5, checkpoints every 10, an EvalSelector every 7 steps (chunk ends
    10, 15 and the last, 20) scoring the weights' sum."""
    def score():
        return {"m": float(sum(np.sum(w.numpy()) for w in model.trainable_weights))}

    selector = selection.EvalSelector(model, workdir, score, os.makedirs, "m", 7, 20)
    return train.run(model, _data(), workdir, total_steps=20, log_every=5, checkpoint_every=10,
                     callbacks=[*extra, selector])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    model = _model()
    _run(model, workdir)
    return workdir, [w.numpy() for w in model.weights]


@pytest.mark.parametrize("sig, at, stop", [
    (signal.SIGINT, 8, 8),     # mid-chunk: the resumed run first trains steps 9-10
    (signal.SIGTERM, 10, 10),  # a chunk's last step: that chunk ends (metrics, eval, save) first
    (signal.SIGINT, 20, 20),   # the last step: the run ends, still exit 130
], ids=["SIGINT-mid-chunk", "SIGTERM-chunk-end", "SIGINT-last-step"])
def test_signal_stops_with_checkpoint_and_resumes_exactly(uninterrupted, tmp_path, capfd, sig, at,
                                                          stop):
    full_dir, full_weights = uninterrupted
    workdir = str(tmp_path)
    before = signal.getsignal(sig)
    with pytest.raises(errors.Interrupted) as err:
        _run(_model(), workdir, [_SendAt(sig, at)])
    assert str(err.value) == (f"stopped at step {stop}, checkpoint written; run the same "
                              "command (or Python call) again to resume.")
    assert err.value.exit_code == 128 + sig == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
    assert signal.getsignal(sig) is before  # the previous handler is back
    assert f"{signal.Signals(sig).name}: stopping after this step" in capfd.readouterr().err
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), os.path.join(workdir,
                                                                             "checkpoints"), 3)
    assert manager.latest_checkpoint.endswith(f"ckpt-{stop}")
    # No record, evaluation or save for a partial chunk: only at chunk ends reached.
    assert [r["step"] for r in train.read_metrics(workdir)] == list(range(5, stop + 1, 5))
    resumed = _model()
    _run(resumed, workdir)
    for a, b in zip(full_weights, [w.numpy() for w in resumed.weights]):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in train.read_metrics(workdir)] == [5, 10, 15, 20]
    states = [json.load(open(os.path.join(d, "selection.json"))) for d in (full_dir, workdir)]
    assert [h["step"] for h in states[0]["history"]] == [10, 15, 20]
    assert states[0] == states[1]


@pytest.mark.parametrize("done", [False, True], ids=["fresh", "complete"])
def test_signal_during_the_restore_stops_before_any_step(uninterrupted, tmp_path, monkeypatch,
                                                         done):
    """The handlers are in place from before the restore (a launcher's "Resuming from" line):
    a SIGTERM there stops at the restored step, with no step trained, also when the run was
    already complete (a multi-stage launch goes no further)."""
    workdir = str(tmp_path / "run")
    if done:
        shutil.copytree(uninterrupted[0], workdir)
    restore = train._restore

    def restore_then_signal(*args, **kwargs):
        checkpointer = restore(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)
        return checkpointer

    monkeypatch.setattr(train, "_restore", restore_then_signal)
    model = _model()
    with pytest.raises(errors.Interrupted) as err:
        _run(model, workdir)
    step = 20 if done else 0
    assert err.value.exit_code == 143 and str(err.value).startswith(f"stopped at step {step}, ")
    assert int(model.optimizer.iterations.numpy()) == step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.setattr(train, "_restore", restore)
    resumed = _model()
    _run(resumed, workdir)
    for a, b in zip(uninterrupted[1], [w.numpy() for w in resumed.weights]):
        np.testing.assert_array_equal(a, b)


def test_second_signal_exits_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stopper = train.SignalStop()
    stopper._handle(signal.SIGINT, None)
    assert stopper.signum == signal.SIGINT and exits == []
    stopper._handle(signal.SIGINT, None)
    assert exits == [130]


# ---- the launcher: a real signal from outside while it trains ---------------------------------

# 2 chunks of ~1 s each on a tiny model; the signal lands in the second. The corpus (~270 batches)
# is not repeated within the run: resuming exactly past a corpus pass is the data pipeline's job.
STEPS, CHUNK = 200, 100


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets")
    args = ["--config=general_distill:tiny",
            f"--config.teacher={tiny.write_teacher(d / 'teacher')}",
            f"--config.data.train={tiny.write_corpus(d / 'corpus.txt', docs=1000)}",
            f"--config.steps={STEPS}", f"--config.log_every={CHUNK}",
            f"--config.checkpoint_every={CHUNK}"]

    def start(workdir, stderr=subprocess.PIPE, stdout=subprocess.PIPE):
        return subprocess.Popen([sys.executable, "-m", "tinybert_tf.main", *args,
                                 f"--workdir={workdir}"], cwd=ROOT, stdout=stdout,
                                stderr=stderr, text=True)

    full = start(d / "full")
    _, err = full.communicate(timeout=600)
    assert full.returncode == 0, err[-2000:]
    return start, _weights(d / "full" / "student")


def _weights(preset):
    return [w.numpy() for w in keras_hub.models.Backbone.from_preset(str(preset)).weights]


def _wait_for_second_chunk(terminal):
    """Read the child's terminal (a pseudo-terminal: the launcher draws its progress bar there)
    until the bar shows a step of the second chunk; returns what was read, the reading goes on
    in a thread until the child closes the terminal."""
    out, seen = [], threading.Event()
    pattern = re.compile(rf"step (\d+)/{STEPS}\b")

    def read():
        while True:
            try:
                piece = os.read(terminal, 1024).decode(errors="replace")
            except OSError:  # EIO: the child closed its side
                break
            if not piece:
                break
            out.append(piece)
            steps = [int(n) for n in pattern.findall("".join(out)[-4000:])]
            if not seen.is_set() and any(CHUNK < n < STEPS for n in steps):
                seen.set()
        seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout=300), "".join(out)[-2000:]
    return out, reader


@pytest.mark.slow
def test_launcher_signal_mid_chunk_then_same_command_resumes(launch, tmp_path):
    """Ctrl-C's SIGINT from outside, mid-chunk. Both signals take one handler (`SignalStop`,
    each checked in process above); SIGTERM from outside, its exit 143 and the restart's resume
    are the launcher runs of tests/test_launch_workdir_lock.py."""
    start, full_weights = launch
    sig = signal.SIGINT
    terminal, child_side = pty.openpty()
    with open(tmp_path / "stderr.txt", "w") as err_file:
        proc = start(tmp_path / "run", stderr=err_file, stdout=child_side)
        os.close(child_side)
        out, reader = _wait_for_second_chunk(terminal)
        assert proc.poll() is None, "".join(out)[-2000:]
        proc.send_signal(sig)
        proc.wait(timeout=300)
        reader.join(timeout=60)
    os.close(terminal)
    text = "".join(out) + (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, text[-2000:]
    lines = [line for line in text.splitlines() if "checkpoint written" in line]
    assert len(lines) == 1, text[-2000:]
    step = int(lines[0].split("stopped at step ")[1].split(",")[0])
    assert CHUNK < step < STEPS, f"stopped at {step}, not mid-chunk"
    assert lines[0].endswith(f"stopped at step {step}, checkpoint written; run the same "
                             "command (or Python call) again to resume.")
    assert f"{signal.Signals(sig).name}: stopping after this step" in text
    assert "Traceback" not in text
    run = tmp_path / "run"
    assert (run / "checkpoints" / f"ckpt-{step}.index").exists() and not (run / "student").exists()
    again = start(run)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert f"ckpt-{step} (step {step} of {STEPS})" in out
    assert [r["step"] for r in train.read_metrics(str(run))] == [CHUNK, STEPS]
    for a, b in zip(full_weights, _weights(run / "student")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_launcher_sigkill_after_a_checkpoint_then_same_command_resumes(launch, tmp_path):
    """SIGKILL (no handler, no checkpoint at the signal) right after the first periodic
    checkpoint: the same command resumes from it to the uninterrupted run's weights."""
    start, full_weights = launch
    run = tmp_path / "run"
    proc = start(run)
    code = tiny.sigkill_once_written(proc, run / "checkpoints" / "checkpoint", timeout=300)
    assert code == -signal.SIGKILL
    assert not (run / "student").exists(), "run finished before the kill; raise STEPS"
    again = start(run)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert f"ckpt-{CHUNK} (step {CHUNK} of {STEPS})" in out
    for a, b in zip(full_weights, _weights(run / "student")):
        np.testing.assert_array_equal(a, b)
