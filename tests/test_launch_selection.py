"""Model selection on the eval split: the best-on-eval model is the output, the last one beside it,
and a run killed mid-way (an ensemble, in its second member) resumes to the same selection and
weights."""

import json
import os
import subprocess
import sys

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
    out = run_mode(_finetune_config(tmp_path, eval_every=4, **{"finetune.patience": 0}), str(tmp_path / "run"))
    state = json.load(open(tmp_path / "run" / "finetune" / "selection.json"))
    steps = [h["step"] for h in state["history"]]
    assert steps == list(range(4, 73, 4))
    accuracies = [h["accuracy"] for h in state["history"]]
    assert accuracies[-1] < max(accuracies)  # eval got worse as the model learnt the train split
    assert state["best"]["step"] == steps[int(np.argmax(accuracies))] < 72
    best, last = _weights(out), _weights(out + "_last")
    assert max(np.abs(a - b).max() for a, b in zip(best, last)) > 1e-4
    # The output really is the model scored best: re-scoring it gives the recorded value.
    from tinybert_tf.launch import builders, task_data
    from tinybert_tf.launch.task_modes import task_scores

    c = _finetune_config(tmp_path)
    spec = task_data.task_spec(c)
    data = task_data.TaskData(c, spec, builders.load_tokenizer(out)).evaluation("validation")
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


@pytest.mark.parametrize("scores,chance,flagged", [
    ([0.0625, 0.014], 1 / 16, True),  # below chance: the bf16 run that trained nothing
    ([0.5, 0.5], 0.5, True),  # at chance is not above it
    ([0.5, 0.75], 0.5, False),
    ([0.9], None, False),  # no chance level known (e.g. F1): nothing said
])
def test_finish_says_when_the_best_is_not_above_chance(tmp_path, capsys, scores, chance,
                                                        flagged):
    model = tiny.backbone()
    model.compile(optimizer=keras.optimizers.Adam())
    model.optimizer.build(model.trainable_variables)
    values = iter([{"accuracy": v} for v in scores])
    sel = selection.EvalSelector(model, str(tmp_path), lambda: next(values),
                                 lambda p: os.makedirs(p, exist_ok=True), "accuracy", 10,
                                 10 * len(scores), chance=chance)
    for i in range(len(scores)):
        model.optimizer.iterations.assign(10 * (i + 1))
        sel.evaluate(10 * (i + 1))
    sel.finish(str(tmp_path / "out"))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"Best on eval: accuracy {max(scores):.4f}")
    assert ("NOT ABOVE CHANCE" in line) == flagged, line
    if flagged:
        assert f"accuracy {chance:.4f} by guessing" in line


def test_chance_levels():
    from tinybert_tf.data import metrics, tasks

    assert metrics.chance_level(tasks.get_task("mnli"), "accuracy") == pytest.approx(1 / 3)
    assert metrics.chance_level(tasks.get_task("cola"), "matthews_corr") == 0.0
    assert metrics.chance_level(tasks.get_task("mrpc"), "f1") is None


def _launch(args):
    return subprocess.Popen([sys.executable, "-m", "tinybert_tf.main", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_in_the_second_member_with_evaluation_on_resumes_bit_identical(tmp_path):
    """A two-member ensemble killed at the second member's first checkpoint (after its first
    evaluation; the flipped dev split makes an early step the best) resumes to the weights and
    selections of an uninterrupted run: the finished member is kept, the second goes on."""
    c = _finetune_config(tmp_path)
    args = ["--config=task_distill:tiny", "--config.mode=finetune",
            f"--config.teacher={c.teacher}", "--config.task=file",
            f"--config.data.train_file={c.data.train_file}",
            f"--config.data.eval_file={c.data.eval_file}", "--config.finetune.members=2",
            "--config.finetune.epochs=14", "--config.finetune.learning_rate=1e-3",
            "--config.log_every=2", "--config.checkpoint_every=12", "--config.deterministic=True"]
    full = _launch([*args, f"--workdir={tmp_path / 'full'}"])
    assert full.wait(timeout=900) == 0, full.stderr.read()[-2000:]
    killed = tmp_path / "killed"
    proc = _launch([*args, f"--workdir={killed}"])
    tiny.sigkill_once_written(proc, killed / "finetune" / "member_1" / "checkpoints" / "checkpoint")
    assert not (killed / "teacher" / "members.txt").exists(), "finished before the kill"
    again = _launch([*args, f"--workdir={killed}"])
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-2000:]
    assert "Resuming from" in out
    for member in ("member_0", "member_0_last", "member_1", "member_1_last"):
        for a, b in zip(_weights(str(tmp_path / "full" / "teacher" / member)),
                        _weights(str(killed / "teacher" / member))):
            np.testing.assert_array_equal(a, b)
    for member in ("member_0", "member_1"):
        sel = [json.load(open(d / "finetune" / member / "selection.json"))
               for d in (tmp_path / "full", killed)]
        assert sel[0] == sel[1] and len(sel[0]["history"]) > 1, member


def _scripted(tmp_path, scores, patience, total=100, chance=None, restart_after=2):
    """Evaluate a scripted score sequence every 10 steps with a selector of this `patience`,
    reading selection.json afresh (a restarted process) after `restart_after` evaluations, until
    the selector stops the run; returns (selector, the step it stopped at or None, model)."""
    model = tiny.dense_model()
    model.optimizer.build(model.trainable_variables)
    values = iter([{"m": v} for v in scores])

    def make():
        return selection.EvalSelector(model, str(tmp_path), lambda: next(values),
                                      lambda p: os.makedirs(p, exist_ok=True), "m", 10, total,
                                      chance=chance, patience=patience)

    sel = make()
    for i in range(len(scores)):
        if i == restart_after:
            sel = make()
        step = 10 * (i + 1)
        model.optimizer.iterations.assign(step)
        sel.evaluate(step)
        if model.stop_training:
            return sel, step, model
    return sel, None, model


@pytest.mark.parametrize("scores,patience,stop,best", [
    ([0.5, 0.7, 0.7, 0.6, 0.9], 2, 40, 20),  # an equal score is no improvement
    ([0.5, 0.4, 0.6, 0.5, 0.5, 0.9], 2, 50, 30),  # an improvement restarts the count
    ([0.5, 0.7, 0.7, 0.6, 0.9], 3, None, 50),  # 0.9 came within the patience
    ([0.5, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6], 0, None, 20),  # patience 0 never stops
], ids=["equal-is-no-improvement", "improvement-resets", "within-patience", "patience-0"])
def test_patience_stops_after_that_many_evaluations_without_improvement(
        tmp_path, capsys, scores, patience, stop, best):
    sel, stopped_at, model = _scripted(tmp_path, scores, patience)
    assert stopped_at == stop
    state = json.load(open(tmp_path / "selection.json"))
    assert state["best"]["step"] == best
    assert sel.stopped == (stop is not None) == model.stop_training
    out = capsys.readouterr().out
    if stop is None:
        assert "stopped" not in state and "Early stop" not in out
        return
    assert state["stopped"] == {"step": stop, "patience": patience}
    assert [h["step"] for h in state["history"]] == list(range(10, stop + 1, 10))
    value = scores[best // 10 - 1]
    assert out.strip().splitlines()[-1] == (
        f"Early stop at step {stop}: no better m in {patience} evaluations (best {value:.4f} at "
        f"step {best}).")


def test_no_early_stop_recorded_at_the_last_step(tmp_path, capsys):
    sel, stopped_at, model = _scripted(tmp_path, [0.5, 0.4, 0.4], 2, total=30)
    assert stopped_at is None and not sel.stopped and "stopped" not in sel.state
    sel.finish(str(tmp_path / "out"))
    assert "stopped early" not in capsys.readouterr().out


@pytest.mark.parametrize("chance,flagged", [(None, False), (0.8, True)])
def test_finish_after_an_early_stop_does_not_score_again(tmp_path, capsys, chance, flagged):
    # The script has no value left after the stop: a further evaluation would raise.
    sel, stopped_at, _ = _scripted(tmp_path, [0.5, 0.7, 0.6, 0.6], 2, chance=chance)
    assert stopped_at == 40
    sel.finish(str(tmp_path / "out"))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"Best on eval: m 0.7000 at step 20 -> {tmp_path / 'out'} (last "
                           f"model: {tmp_path / 'out'}_last) (stopped early at step 40 of 100)")
    assert ("NOT ABOVE CHANCE" in line) == flagged, line
    assert [h["step"] for h in sel.state["history"]] == [10, 20, 30, 40]


def test_a_stop_left_by_a_killed_run_is_decided_again(tmp_path):
    """Killed after recording a stop at step 40 but before its checkpoint (restored at 30): the
    record does not count yet, and when the re-run chunk scores differently (a nondeterministic
    kernel) and improves, it is dropped and the run goes on."""
    sel, stopped_at, model = _scripted(tmp_path, [0.5, 0.7, 0.6, 0.6], 2)
    assert stopped_at == 40
    model.optimizer.iterations.assign(30)
    model.stop_training = False
    again = selection.EvalSelector(model, str(tmp_path), lambda: {"m": 0.8},
                                   lambda p: os.makedirs(p, exist_ok=True), "m", 10, 100,
                                   patience=2)
    assert not again.stopped
    model.optimizer.iterations.assign(40)
    again.evaluate(40)
    state = json.load(open(tmp_path / "selection.json"))
    assert "stopped" not in state and not again.stopped and not model.stop_training
    assert state["best"]["step"] == 40
