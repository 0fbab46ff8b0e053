"""The console of a training stage: one progress display that counts the stage's real steps.

`train.run` fits in chunks (one Keras "epoch" each, for metrics records, checkpoints and
evaluations), so Keras' own progress bar would count chunks, not the stage's epochs or steps.
`Progress` is the one display of a stage (Keras' is off, `fit(verbose=0)`): it knows the stage's
last step, its steps per epoch (task stages) and the step a resumed run starts at.

- On a terminal: one tqdm bar, `[finetune] epoch 2/3 |████   | step 250/504, loss 0.4113 ·
  lr 2.1e-05 · 00:41<00:39`. While it is drawn, `print` goes through the bar (`tqdm.write`), so
  an evaluation line or a warning printed at a chunk end gets its own line and the bar is redrawn
  below it.
- In a Jupyter notebook: the same bar as a notebook widget (`tqdm.auto`); printed lines go
  below it as usual.
- Anywhere else (CI, tests, a log file): no carriage-return redraws, one plain line per chunk
  end, with every logged term, the learning rate, the time taken and the time left.

Only the chief process of a multi-process run shows anything.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time

import keras
import numpy as np

# Seconds between two redraws of the bar's loss and learning rate (reading the learning rate is
# a device read; the step count itself is redrawn as tqdm sees fit).
STATS_EVERY = 0.5


def _clock(seconds):
    """Seconds as h:mm:ss (m:ss under an hour)."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _value(v):
    return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3e}"


def in_notebook():
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell), where tqdm draws a
    widget; a terminal IPython or a plain interpreter is not."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _size(stream):
    """tqdm's size: the terminal's as it changes, or 80 x 24 on a terminal that reports 0 x 0
    (a bare pseudo-terminal), where tqdm would draw nothing."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, OSError, ValueError):
        pass
    fallback = shutil.get_terminal_size()
    return {"ncols": fallback.columns, "nrows": fallback.lines}


class _ThroughBar:
    """A stdout stand-in that writes whole lines with `tqdm.write` (the bar is cleared, the line
    printed, the bar redrawn below it)."""

    def __init__(self, bar, stream):
        self.bar, self.stream, self.pending = bar, stream, ""

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.bar.write(line, file=self.stream)
        return len(text)

    def flush(self):
        if self.pending:
            self.bar.write(self.pending, file=self.stream)
            self.pending = ""
        self.stream.flush()

    def isatty(self):
        return True

    def __getattr__(self, name):  # encoding, fileno, ... of the real stream
        return getattr(self.stream, name)


class Progress(keras.callbacks.Callback):
    """The progress display of one `train.run` (see module doc); a Keras callback and a context
    manager (the bar lives for the `with` block, across the run's `fit` calls).

    total: the stage's last step; start: the step the run starts at (a resume);
    per_epoch: steps per epoch (0: a run counted in steps alone, general distillation);
    label: the stage's name; optimizer: read for the learning rate at the step shown (its
    schedule, so no model state is read mid-chunk); live: a redrawn bar (default: stdout is a
    terminal, or a notebook's widget in Jupyter); stream: where it all goes (default sys.stdout).
    """

    def __init__(self, total, start=0, per_epoch=0, label="", optimizer=None, live=None,
                 stream=None):
        super().__init__()
        self.total, self.start, self.per_epoch = int(total), int(start), int(per_epoch or 0)
        self.label, self.optimizer = label, optimizer
        self.stream = stream or sys.stdout
        self.notebook = live is None and in_notebook()
        self.live = (self.stream.isatty() or self.notebook) if live is None else live
        self.step = self.chunk_first = self.start
        self.bar, self.began, self.shown = None, time.monotonic(), 0.0
        self.reference = None  # (time, step) of the first chunk end: what the time left is from
        self._redirect = None

    # -- what is shown ---------------------------------------------------------------------------

    def epoch_text(self, step):
        """`epoch e/E` of the step being trained (a step that ends an epoch belongs to it)."""
        if not self.per_epoch:
            return ""
        epochs = max(1, math.ceil(self.total / self.per_epoch))
        return f"epoch {min(epochs, (max(step, 1) - 1) // self.per_epoch + 1)}/{epochs}"

    def learning_rate(self, step):
        """The learning rate at `step` (None without an optimizer)."""
        if self.optimizer is None:
            return None
        rate = getattr(self.optimizer, "_learning_rate", None)
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            return float(keras.ops.convert_to_numpy(rate(step)))  # at our step: no state read
        return float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))

    def stats(self, step, logs, every_term):
        """`loss 0.6931 · accuracy 0.5000 · lr 2.0e-05`: the loss (with `every_term`, each
        logged term; `val_*` scores are the evaluation line's) and the learning rate."""
        logs = {k: float(v) for k, v in (logs or {}).items() if not k.startswith("val_")}
        names = sorted(logs, key=lambda k: (k != "loss", k)) if every_term else ["loss"]
        parts = [f"{k} {_value(logs[k])}" for k in names if k in logs]
        lr = self.learning_rate(step)
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        return " · ".join(parts)

    def line(self, step, logs):
        """The plain line of a chunk end. The time left is timed from the first chunk end on
        (the first chunk also builds and compiles the step)."""
        now = time.monotonic()
        if self.reference is None:
            self.reference = (now, step)
        since, first = self.reference if step > self.reference[1] else (self.began, self.start)
        eta = _clock((now - since) / (step - first) * (self.total - step)) if step > first else "?"
        label = f"[{self.label}] " if self.label else ""
        head = " · ".join(p for p in (self.epoch_text(step), f"step {step}/{self.total}") if p)
        return (f"{label}{head} · {self.stats(step, logs, True)} · {_clock(now - self.began)} "
                f"elapsed, eta {eta}")

    # -- the bar's lifetime ----------------------------------------------------------------------

    def __enter__(self):
        self.began = time.monotonic()
        if self.notebook:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, unit="step", leave=True,
                            smoothing=0.1)
            self._describe(self.start)
        elif self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, file=self.stream,
                            **_size(self.stream), unit="step", leave=True, smoothing=0.1,
                            bar_format="{desc} {bar:20} step {n_fmt}/{total_fmt}{postfix} · "
                                       "{elapsed}<{remaining}")
            self._describe(self.start)
            self._redirect = contextlib.redirect_stdout(_ThroughBar(self.bar, self.stream))
            self._redirect.__enter__()
        return self

    def __exit__(self, *exc):
        if self._redirect is not None:
            sys.stdout.flush()
            self._redirect.__exit__(*exc)
            self._redirect = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return False

    def _describe(self, step):
        label = f"[{self.label}]" if self.label else ""
        self.bar.set_description_str(" ".join(p for p in (label, self.epoch_text(step)) if p),
                                     refresh=False)

    # -- Keras hooks ------------------------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        self.chunk_first = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.chunk_first + batch + 1
        if self.bar is None:
            return
        self._describe(self.step)
        now = time.monotonic()
        if now - self.shown >= STATS_EVERY:
            self.shown = now
            self.bar.set_postfix_str(self.stats(self.step, logs, False), refresh=False)
        self.bar.update(self.step - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self._describe(self.step)
            self.bar.set_postfix_str(self.stats(self.step, logs, False), refresh=False)
            self.bar.update(self.step - self.bar.n)
            self.bar.refresh()
        else:
            print(self.line(self.step, logs), file=self.stream, flush=True)
