"""Model selection on the eval split: the best-on-eval model is the output, the last one beside it,
and a run killed mid-way resumes to the same selection and weights."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.launch import config_lib, selection, train
from tinybert_tf.launch.modes import run as run_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_task(path, n, seed):
    """An easy task: 'pos' rows say 'teacher', 'neg' rows 'student', among random words."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i in range(n):
            words = list(rng.choice(tiny.WORDS[:30], size=3)) + ["teacher" if i % 2 else "student"] * 4
            f.write(" ".join(words) + "\t" + ("pos" if i % 2 else "neg") + "\n")
    return str(path)


def _flipped(src, dst):
    """The same texts with the two labels swapped: learning the train split makes this worse."""
    lines = open(src).read().splitlines()
    swap = {"pos": "neg", "neg": "pos"}
    with open(dst, "w") as f:
        f.write(lines[0] + "\n")
        for line in lines[1:]:
            text, label = line.rsplit("\t", 1)
            f.write(f"{text}\t{swap[label]}\n")
    return str(dst)


def _weights(preset):
    model = keras_hub.models.TextClassifier.from_preset(preset, preprocessor=None)
    return [w.numpy() for w in model.weights]


def _finetune_config(d, **overrides):
    train_file = _write_task(d / "train.tsv", 48, 0)
    return config_lib.load("task_distill", "tiny", mode="finetune",
                           teacher=tiny.write_teacher(d / "pre"), student_dropout=0.0, **{
                               "task": "file", "data.train_file": train_file,
                               "data.eval_file": _flipped(train_file, d / "dev.tsv"),
                               "finetune.epochs": 6, "finetune.learning_rate": 5e-3,
                               "log_every": 4, "checkpoint_every": 12, **overrides})


@pytest.mark.slow
def test_best_on_eval_is_the_output_when_eval_gets_worse(tmp_path):
    out = run_mode(_finetune_config(tmp_path, eval_every=4), str(tmp_path / "run"))
    state = json.load(open(tmp_path / "run" / "finetune" / "selection.json"))
    steps = [h["step"] for h in state["history"]]
    assert steps == list(range(4, 73, 4))
    accuracies = [h["accuracy"] for h in state["history"]]
    assert accuracies[-1] < max(accuracies)  # eval got worse as the model learnt the train split
    assert state["best"]["step"] == steps[int(np.argmax(accuracies))] < 72
    best, last = _weights(out), _weights(out + "_last")
    assert max(np.abs(a - b).max() for a, b in zip(best, last)) > 1e-4
    # The output really is the model scored best: re-scoring it gives the recorded value.
    from tinybert_tf.launch import builders
    from tinybert_tf.launch.task_modes import task_scores

    c = _finetune_config(tmp_path)
    spec = builders.task_spec(c)
    data = builders.task_data(c, spec, "validation", builders.load_tokenizer(out), False)
    model = keras_hub.models.TextClassifier.from_preset(out, preprocessor=None)
    assert task_scores(model, data, spec)["accuracy"] == state["best"]["value"]
    # eval/<metric> is logged with the chunk's training metrics.
    records = {r["step"]: r for r in train.read_metrics(str(tmp_path / "run" / "finetune"))}
    assert records[4]["val_accuracy"] == accuracies[0] and "loss" in records[4]


def test_default_selection_is_once_per_epoch(tmp_path):
    run_mode(_finetune_config(tmp_path, **{"finetune.epochs": 2}), str(tmp_path / "run"))
    state = json.load(open(tmp_path / "run" / "finetune" / "selection.json"))
    assert [h["step"] for h in state["history"]] == [12, 24]  # epochs of 12 steps
    records = {r["step"]: r for r in train.read_metrics(str(tmp_path / "run" / "finetune"))}
    assert "val_accuracy" in records[12] and "val_accuracy" not in records[8]


def test_selector_keeps_the_first_of_equal_scores_and_survives_a_restart(tmp_path):
    model = tiny.backbone()
    model.compile(optimizer=keras.optimizers.Adam())
    model.optimizer.build(model.trainable_variables)
    saved = []
    scores = iter([{"m": 0.5}, {"m": 0.7}, {"m": 0.7}, {"m": 0.6}])

    def make():
        return selection.EvalSelector(model, str(tmp_path), lambda: next(scores),
                                      lambda p: (os.makedirs(p), saved.append(p)), "m", 10, 40)

    sel = make()
    for step in (10, 20):
        model.optimizer.iterations.assign(step)
        sel.evaluate(step)
    again = make()  # a restarted process reads selection.json
    for step in (30, 40):
        model.optimizer.iterations.assign(step)
        again.evaluate(step)
    assert again.state["best"]["step"] == 20 and again.state["best"]["value"] == 0.7
    assert [h["step"] for h in again.state["history"]] == [10, 20, 30, 40]
    assert len(saved) == 2 and os.path.isdir(tmp_path / "best_on_eval")


def _launch(args):
    return subprocess.Popen([sys.executable, "-m", "tinybert_tf.main", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_with_evaluation_on_resumes_bit_identical(tmp_path):
    c = _finetune_config(tmp_path, **{"finetune.epochs": 14, "log_every": 2,
                                      "checkpoint_every": 12})
    args = ["--config=configs/task_distill.py:tiny", "--config.mode=finetune",
            f"--config.teacher={c.teacher}", "--config.task=file", "--config.student_dropout=0",
            f"--config.data.train_file={c.data.train_file}",
            f"--config.data.eval_file={c.data.eval_file}", "--config.finetune.epochs=14",
            "--config.finetune.learning_rate=1e-3", "--config.log_every=2",
            "--config.checkpoint_every=12", "--config.deterministic=True"]
    full = _launch([*args, f"--workdir={tmp_path / 'full'}"])
    assert full.wait(timeout=600) == 0, full.stderr.read()[-2000:]
    killed = tmp_path / "killed"
    proc = _launch([*args, f"--workdir={killed}"])
    state = killed / "finetune" / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "teacher").exists(), "run finished before the kill; raise epochs"
    again = _launch([*args, f"--workdir={killed}"])
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert "Resuming from" in out
    for name in ("teacher", "teacher_last"):
        for a, b in zip(_weights(str(tmp_path / "full" / name)), _weights(str(killed / name))):
            np.testing.assert_array_equal(a, b)
    sel = [json.load(open(d / "finetune" / "selection.json")) for d in (tmp_path / "full", killed)]
    assert sel[0] == sel[1]
