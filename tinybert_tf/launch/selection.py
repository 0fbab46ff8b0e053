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
"""

from __future__ import annotations

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


class EvalSelector(keras.callbacks.Callback):
    """Keeps the best-on-eval model of a run (see module docstring).

    score: () -> {name: float}, computed on the eval split; metric: the name selected on;
    higher_is_better: False for losses; save: (path) -> None writes the model; every: steps
    between evaluations (a chunk end at or after each multiple); total_steps: the run's last step.
    """

    def __init__(self, model, workdir, score, save, metric, every, total_steps,
                 higher_is_better=True):
        super().__init__()
        self.set_model(model)
        self.workdir, self.score, self.save = workdir, score, save
        self.metric, self.higher = metric, higher_is_better
        self.every, self.total_steps = max(1, int(every)), int(total_steps)
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

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
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
                self.save(tmp)
                if tf.io.gfile.exists(self.best_dir):
                    tf.io.gfile.rmtree(self.best_dir)
                tf.io.gfile.rename(tmp, self.best_dir)
            self.state["best"] = {"step": step, "value": value, "scores": scores}
        best = self.state["best"]
        print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
              + f" (best {self.metric} {best['value']:.4f} at step {best['step']})", flush=True)
        if self.chief:
            tmp_state = self.state_path + ".tmp"
            with tf.io.gfile.GFile(tmp_state, "w") as f:
                json.dump(self.state, f, indent=1)
            tf.io.gfile.rename(tmp_state, self.state_path, overwrite=True)
        return scores

    def finish(self, out):
        """Write the model as it is now to `<out>_last` and the best-on-eval one to `out`."""
        if self.state["best"] is None or not self.state["history"] or \
                self.state["history"][-1]["step"] < self.total_steps:
            self.evaluate(int(self.model.optimizer.iterations.numpy()))
        if self.chief:
            self.save(out + "_last")
            copy_tree(self.best_dir, out)
        best = self.state["best"]
        print(f"Best on eval: {self.metric} {best['value']:.4f} at step {best['step']} -> {out} "
              f"(last model: {out}_last)")
        return out
