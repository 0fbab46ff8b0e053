"""Model selection on the eval split: score the model every `every` steps, keep the best on disk.

`EvalSelector` is a Keras callback for `train.run`. After each chunk end by which a multiple of
`every` steps was crossed since the last evaluation (and after the last step) it calls `score()`
-> `{metric: value}` on the eval split (never the test split), adds `val_<metric>` to the chunk's
logs (so `StepLogger` writes TensorBoard `eval/<metric>` and `metrics.jsonl`), prints one line,
and when the selection metric improved writes the model with `save(path)` to
`<workdir>/best_on_eval` (atomically: a temporary dir renamed into place).
`<workdir>/selection.json` keeps the best and the history, so a resumed run keeps selecting as an
uninterrupted one would: a chunk re-run after a kill scores the same weights again and does not
replace an equal best, and a chunk resumed mid-way after a signal (its fit begins mid-chunk) is
scored at its end exactly when an uninterrupted run would score it. `finish()` writes the last
model to `<out>_last` and the best one to `<out>`.

Early stopping (`patience` > 0): after `patience` evaluations in a row without a strictly better
selection metric the selector records `"stopped": {"step", "patience"}` in selection.json and sets
`model.stop_training`; `train.run` then ends the run at that chunk end (checkpoint at that step)
and, on a restart, sees `stopped` and trains no further. The count is derived from the history
and the best in selection.json, not kept in memory, so a run killed and resumed (its chunks
re-scored on the same weights) stops at the same step as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import keras
import tensorflow as tf

from tinybert_tf.launch import distribution


def copy_tree(src, dst):
    """Recursive copy that works on local paths and gs:// (tf.io.gfile)."""
    if tf.io.gfile.exists(dst):
        tf.io.gfile.rmtree(dst)
    for root, _, files in tf.io.gfile.walk(src):
        target = os.path.join(dst, os.path.relpath(root, src))
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)


def current_step(model):
    """The optimizer's step counter as an int, on any backend."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class EvalSelector(keras.callbacks.Callback):
    """Keeps the best-on-eval model of a run (see module docstring).

    score: () -> {name: float}, computed on the eval split; metric: the name selected on;
    higher_is_better: False for losses; save: (path) -> None writes the model; every: steps
    between evaluations (a chunk end at or after each multiple); total_steps: the run's last step;
    chance: what guessing scores on `metric` (`metrics.chance_level`), or None: a best score not
    above it is called out in the summary line (a run that learnt nothing); patience: stop the
    run after this many evaluations without improvement (0: never stop early).
    """

    def __init__(self, model, workdir, score, save, metric, every, total_steps,
                 higher_is_better=True, chance=None, patience=0):
        super().__init__()
        self.set_model(model)
        self.workdir, self.score, self.save = workdir, score, save
        self.metric, self.higher, self.chance = metric, higher_is_better, chance
        self.every, self.total_steps = max(1, int(every)), int(total_steps)
        self.patience = max(0, int(patience))
        self.best_dir = os.path.join(workdir, "best_on_eval")
        self.state_path = os.path.join(workdir, "selection.json")
        self.state = {"metric": metric, "higher_is_better": higher_is_better, "best": None,
                      "history": []}
        if tf.io.gfile.exists(self.state_path):
            with tf.io.gfile.GFile(self.state_path) as f:
                self.state = json.load(f)
        self.chief = distribution.is_chief()  # the other processes score, but write nothing
        tmp = self.best_dir + ".tmp"
        if self.chief and not tf.io.gfile.exists(self.best_dir) and tf.io.gfile.exists(tmp):
            tf.io.gfile.rename(tmp, self.best_dir)  # killed between the two steps of a swap

    def _better(self, value):
        best = self.state["best"]
        if best is None:
            return True
        return value > best["value"] if self.higher else value < best["value"]

    @property
    def stopped(self):
        """True when this run stopped early at or before the model's step: `train.run` trains
        no further. A stop recorded at a later step (a kill between selection.json and that
        step's checkpoint) is not one yet: the resumed run re-scores up to it and stops there."""
        stop = self.state.get("stopped")
        return stop is not None and current_step(self.model) >= stop["step"]

    def since_best(self, step):
        """Evaluations up to `step` after the best one: those without a strict improvement."""
        best = self.state["best"]
        if best is None:
            return 0
        return sum(1 for h in self.state["history"] if best["step"] < h["step"] <= step)

    def on_epoch_end(self, epoch, logs=None):
        step = current_step(self.model)
        # The last evaluation before this chunk end (selection.json survives restarts), not the
        # step this fit began at: the same chunk ends are scored however the run was resumed.
        last = max((h["step"] for h in self.state["history"] if h["step"] < step), default=0)
        if step // self.every <= last // self.every and step < self.total_steps:
            return
        self.evaluate(step, logs)

    def evaluate(self, step, logs=None):
        """Score now, record, keep the model if it is the best so far; returns the scores."""
        scores = {k: float(v) for k, v in self.score().items()}
        if self.metric not in scores:
            raise KeyError(f"selection metric {self.metric!r} not in eval scores {sorted(scores)}")
        value = scores[self.metric]
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in scores.items()})
        history = [h for h in self.state["history"] if h["step"] != step]
        self.state["history"] = [*history, {"step": step, **scores}]
        if self._better(value):
            if self.chief:
                tmp = self.best_dir + ".tmp"
                if tf.io.gfile.exists(tmp):
                    tf.io.gfile.rmtree(tmp)
                with contextlib.redirect_stdout(io.StringIO()):  # its "Saved ... .tmp" line:
                    self.save(tmp)  # the evaluation line says where the best is
                if tf.io.gfile.exists(self.best_dir):
                    tf.io.gfile.rmtree(self.best_dir)
                tf.io.gfile.rename(tmp, self.best_dir)
            self.state["best"] = {"step": step, "value": value, "scores": scores}
        best = self.state["best"]
        print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
              + f" (best {self.metric} {best['value']:.4f} at step {best['step']})", flush=True)
        self._check_patience(step)
        if self.chief:
            tmp_state = self.state_path + ".tmp"
            with tf.io.gfile.GFile(tmp_state, "w") as f:
                json.dump(self.state, f, indent=1)
            tf.io.gfile.rename(tmp_state, self.state_path, overwrite=True)
        return scores

    def _check_patience(self, step):
        """Record an early stop at `step` (before the run's last step) when `patience`
        evaluations in a row brought no improvement; an earlier record is dropped (a later one
        left by a killed run is re-decided as its chunks are re-scored)."""
        self.state.pop("stopped", None)
        if not self.patience or step >= self.total_steps or self.since_best(step) < self.patience:
            return
        best = self.state["best"]
        self.state["stopped"] = {"step": step, "patience": self.patience}
        print(f"Early stop at step {step}: no better {self.metric} in {self.patience} "
              f"evaluations (best {best['value']:.4f} at step {best['step']}).", flush=True)
        self.model.stop_training = True

    def finish(self, out):
        """Write the model as it is now to `<out>_last` and the best-on-eval one to `out`.

        The model is scored first unless it was at its step (the run's last step, or the step
        it stopped early at)."""
        step = current_step(self.model)
        if self.state["best"] is None or not self.state["history"] or \
                self.state["history"][-1]["step"] < step:
            self.evaluate(step)
        if self.chief:
            self.save(out + "_last")
            copy_tree(self.best_dir, out)
        best, stop = self.state["best"], self.state.get("stopped")
        early = f" (stopped early at step {stop['step']} of {self.total_steps})" if stop else ""
        print(f"Best on eval: {self.metric} {best['value']:.4f} at step {best['step']} -> {out} "
              f"(last model: {out}_last){early}{self._chance_note(best['value'])}")
        return out

    def _chance_note(self, value):
        if self.chance is None or (value > self.chance if self.higher else value < self.chance):
            return ""
        return (f"; NOT ABOVE CHANCE ({self.metric} {self.chance:.4f} by guessing): the model "
                "learnt nothing, check the loss in metrics.jsonl, the learning rate and the data")
