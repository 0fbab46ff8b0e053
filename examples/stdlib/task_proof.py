"""The real-data proof of task distillation (README "Task distillation on real data").

On the stdlib docstring task (examples.stdlib.stdlib_task.build_task: docstrings labelled by
library area, split by source file) with the packaged MiniLM-L6 teacher:
  the teacher fine-tuned with best-on-dev selection; then from each start -- `narrow` (TinyBERT-4
  general-distilled here with tinybert_general), `narrow_minilm` (the same with minilm_v2) and
  `wide` (3 layers of the teacher's width initialised from teacher layers) -- the rows:
  (a) fine-tuned without a teacher; (b) two-step distillation on the labels;
  (d) two-step distillation on the labels + a transfer set: stdlib prose from the *train*
      split's source files that is not a task example (stdlib_task.build_transfer);
  (e) wide start only: the prediction step alone (soft + hard targets) on labels + transfer set;
  (b10) (b)'s step-1 model, then the prediction step for as many epochs as (a).
Every row uses the same labelled data, its start, and the same rule: the model with the best
dev accuracy (evaluated every --eval_every steps) is the row's model; the test split is only
read by the final report. General distillation reads stdlib text with the task's dev and test
source files removed. Every stage goes through `tinybert_tf.launch.modes.run` (the launcher's code
path); a stage whose output exists is skipped, so the script resumes, and `--rows` runs a subset
(e.g. two processes on different rows). Writes report_test.* / report_dev.* into --workdir.

python examples/stdlib/task_proof.py --workdir=proof_out
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tinybert_tf.launch import hardware  # noqa: E402  (os only: before TensorFlow is imported)

hardware.enable_onednn()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "proof_out", "Output directory.")
_GD_STEPS = flags.DEFINE_integer("gd_steps", 600, "General distillation steps (batch 32, seq 64).")
_TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 10, "Teacher fine-tuning epochs.")
_TEACHER_LR = flags.DEFINE_float("teacher_lr", 1e-4, "Teacher fine-tuning peak learning rate.")
_FT_EPOCHS = flags.DEFINE_integer("student_epochs", 10, "(a) fine-tuning epochs.")
_STUDENT_LR = flags.DEFINE_float("student_lr", 1e-4, "Peak learning rate of every student stage.")
_INT_EPOCHS = flags.DEFINE_integer("intermediate_epochs", 3, "(b) step-1 epochs.")
_PRED_EPOCHS = flags.DEFINE_integer("prediction_epochs", 3, "(b) step-2 epochs.")
_T_INT_EPOCHS = flags.DEFINE_integer("transfer_intermediate_epochs", 1,
                                     "(d) step-1 epochs over labels + transfer set.")
_T_PRED_EPOCHS = flags.DEFINE_integer("transfer_prediction_epochs", 2,
                                      "(d) step-2 epochs over labels + transfer set.")
_E_EPOCHS = flags.DEFINE_integer("transfer_only_prediction_epochs", 3,
                                 "(e) prediction-step epochs over labels + transfer set.")
_HARD = flags.DEFINE_float("hard_weight", 1.0, "(b)/(d) step-2 weight of the hard-label term.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 120, "Steps between dev evaluations (all rows).")
_ROWS = flags.DEFINE_list("rows", [], "Rows to run, e.g. wide_a,wide_b (default: all).")
_REPORT = flags.DEFINE_bool("report", True, "Write the report (dev and test) at the end.")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Sequence length.")

STARTS = {"wide": "3-layer from teacher", "narrow": "TinyBERT-4 general-distilled",
          "narrow_minilm": "TinyBERT-4 general-distilled (minilm_v2)"}
VARIANTS = {"a": "fine-tuned without teacher", "b": "two-step distillation",
            "d": "two-step distillation + transfer set",
            "e": "prediction-layer distillation + transfer set",
            "b10": "(b)'s step 1 then 10 prediction epochs"}


def _config(name, **fields):
    from tinybert_tf.launch import config_lib

    return config_lib.load(name, **fields)


class Stages:
    """Runs named stages once (an output path that exists means done); wall-clock per stage in
    `timings/<stage>.json` (one file each, so several processes can share a workdir)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "timings")
        os.makedirs(self.dir, exist_ok=True)

    def run(self, name, output, fn):
        if os.path.exists(output):
            print(f"== {name}: done ({output})")
            return output
        print(f"== {name} ...", flush=True)
        start = time.time()
        result = fn()
        with open(os.path.join(self.dir, name.replace(" ", "_") + ".json"), "w") as f:
            json.dump({"stage": name, "seconds": round(time.time() - start, 1)}, f)
        return result or output

    def timings(self):
        out = {}
        for name in sorted(os.listdir(self.dir)):
            with open(os.path.join(self.dir, name)) as f:
                record = json.load(f)
            out[record["stage"]] = record["seconds"]
        return out


def _filtered_corpus(corpus_dir, task_dir):
    """The general-distillation corpus without any document of a dev or test source file."""
    held_out = set()
    for split in ("dev", "test"):
        with open(os.path.join(task_dir, f"{split}.src")) as f:
            held_out |= {line.strip() for line in f if line.strip()}
    out = os.path.join(corpus_dir, "train_no_task_eval.txt")
    with open(os.path.join(corpus_dir, "train.txt")) as docs, \
            open(os.path.join(corpus_dir, "train.src")) as srcs, open(out, "w") as f:
        f.writelines(d for d, s in zip(docs, srcs) if s.strip() not in held_out)
    return out


def plot_dev_curves(w, path):
    """Dev accuracy against training step of every row's selected stage (from the runs'
    selection.json): the curves the best-on-dev rule chose from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STARTS), figsize=(5 * len(STARTS), 3.6), sharey=True)
    teacher = json.load(open(os.path.join(w, "teacher", "finetune", "selection.json")))
    for ax, start in zip(axes, STARTS):
        ax.axhline(teacher["best"]["value"], color="k", ls="--", lw=1, label="teacher (best)")
        for variant, label in VARIANTS.items():
            stage = "finetune" if variant == "a" else "prediction"
            sel = os.path.join(w, f"{start}_{variant}", stage, "selection.json")
            if not os.path.exists(sel):
                continue
            hist = json.load(open(sel))["history"]
            ax.plot([h["step"] for h in hist], [h["accuracy"] for h in hist], marker=".",
                    label=f"({variant}) {label}")
        ax.set_title(STARTS[start], fontsize=10)
        ax.set_xlabel("step (batch 32)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dev accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv):
    del argv
    import keras_hub

    from examples.stdlib import demo, stdlib_task, stdlib_text
    from tinybert_tf import evaluate
    from tinybert_tf.distill import students
    from tinybert_tf.launch.modes import run

    w = os.path.abspath(_WORKDIR.value)
    os.makedirs(w, exist_ok=True)
    stages = Stages(w)
    teacher_pre = demo.minilm_dir()
    task_dir = os.path.join(w, "task")
    stages.run("build task", os.path.join(task_dir, "stats.json"),
               lambda: stdlib_task.build_task(task_dir))
    corpus_dir = os.path.join(w, "corpus")
    stages.run("build corpus", os.path.join(corpus_dir, "stats.json"),
               lambda: stdlib_text.build_corpus(corpus_dir))
    corpus = stages.run("corpus without dev/test files",
                        os.path.join(corpus_dir, "train_no_task_eval.txt"),
                        lambda: _filtered_corpus(corpus_dir, task_dir))
    transfer = os.path.join(w, "transfer", "transfer.txt")
    stages.run("build transfer set", transfer,
               lambda: stdlib_task.build_transfer(task_dir, transfer))
    task = {"task": "file", "data.train_file": os.path.join(task_dir, "train.tsv"),
            "data.eval_file": os.path.join(task_dir, "dev.tsv"),
            "data.test_file": os.path.join(task_dir, "test.tsv"), "data.seq_len": _SEQ.value,
            "batch_size": 32, "log_every": 20, "checkpoint_every": 120,
            "eval_every": _EVAL_EVERY.value,
            # As measured: every batch padded to seq_len, float32 (the table's runs predate
            # length buckets and precision=auto).
            "data.buckets": "", "precision": "float32", "teacher_dtype": "", "jit_compile": "False"}
    teacher = stages.run("teacher fine-tuning", os.path.join(w, "teacher", "teacher"), lambda: run(
        _config("task_distill", mode="finetune", teacher=teacher_pre,
                **{**task, "eval_every": 0, "checkpoint_every": 100,
                   "finetune.epochs": _TEACHER_EPOCHS.value,
                   "finetune.learning_rate": _TEACHER_LR.value}), os.path.join(w, "teacher")))

    def general(recipe, name):
        extra = {"relation_heads": 12} if recipe == "minilm_v2" else {"layer_map": "1,2,4,5"}
        return stages.run(f"general distillation ({recipe})", os.path.join(w, name, "student"),
                          lambda: run(_config(
                              "general_distill", teacher=teacher_pre, recipe=recipe,
                              steps=_GD_STEPS.value, batch_size=32, log_every=50,
                              checkpoint_every=100, teacher_dtype="bfloat16", **extra,
                              **{"optimizer.learning_rate": 3e-4, "data.train": corpus,
                                 "data.seq_len": _SEQ.value}), os.path.join(w, name)))

    wide = os.path.join(w, "start_from_teacher_3l")

    def make_wide():
        backbone = students.init_from_teacher(keras_hub.models.Backbone.from_preset(teacher_pre), 3)
        backbone.save_to_preset(wide)
        keras_hub.tokenizers.Tokenizer.from_preset(teacher_pre).save_to_preset(wide)

    lr = _STUDENT_LR.value
    layer_maps = {"wide": "", "narrow": "1,2,4,5", "narrow_minilm": "1,2,4,5"}
    distil = {
        "b": {"intermediate.epochs": _INT_EPOCHS.value, "prediction.epochs": _PRED_EPOCHS.value},
        "d": {"intermediate.epochs": _T_INT_EPOCHS.value,
              "prediction.epochs": _T_PRED_EPOCHS.value, "transfer_file": transfer},
        # Hinton-style: soft targets (+ hard labels) on labels + transfer set, no step 1, as
        # many updates as (a).
        "e": {"stages": "prediction", "prediction.epochs": _E_EPOCHS.value,
              "transfer_file": transfer},
        # (b)'s step-1 model (copied in), then step 2 with as many epochs as (a).
        "b10": {"stages": "prediction", "prediction.epochs": _FT_EPOCHS.value},
    }
    order = [f"{s}_{v}" for s in STARTS for v in ("a", "b", "d")] + [
        "wide_e", "wide_b10", "narrow_minilm_b10"]
    rows = _ROWS.value or order
    models = {}
    for row in order:
        start_name, variant = row.rsplit("_", 1)
        out = os.path.join(w, row)
        label = f"{STARTS[start_name]}: ({variant}) {VARIANTS[variant]}"
        final = os.path.join(out, "teacher" if variant == "a" else "prediction/student")
        if row not in rows:
            if os.path.exists(final):
                models[label] = final
            continue
        if start_name == "wide":
            start = stages.run("3-layer student from teacher layers", wide, make_wide)
        elif start_name == "narrow":
            start = general("tinybert_general", "general")
        else:
            start = general("minilm_v2", "general_minilm")
        if variant == "b10" and not os.path.exists(os.path.join(out, "intermediate", "student")):
            from tinybert_tf.launch.selection import copy_tree

            copy_tree(os.path.join(w, f"{start_name}_b", "intermediate", "student"),
                      os.path.join(out, "intermediate", "student"))
        if variant == "a":
            config = _config("task_distill", mode="finetune", teacher=start, **{
                **task, "finetune.epochs": _FT_EPOCHS.value, "finetune.learning_rate": lr})
        else:
            minilm = {"intermediate.recipe": "minilm_v2", "intermediate.relation_heads": 12} \
                if start_name == "narrow_minilm" else {}
            config = _config("task_distill", mode="task_distill", teacher=teacher, student=start,
                             layer_map=layer_maps[start_name], **{
                                 **task, **distil[variant], **minilm,
                                 "intermediate.learning_rate": lr,
                                 "prediction.learning_rate": lr,
                                 "prediction.hard_weight": _HARD.value})
        models[label] = stages.run(f"{row} {VARIANTS[variant]}", final,
                                   lambda config=config, out=out: run(config, out))
    if not _REPORT.value:
        return
    students_arg = ",".join(f"{k}={v}" for k, v in models.items())
    for split in ("validation", "test"):
        config = _config("task_distill", mode="evaluate", teacher=teacher, student=students_arg,
                         eval_split=split, latency_runs=10 if split == "test" else 1, **task)
        report = evaluate.run_from_config(config, os.path.join(w, f"report_{split}"))
        report["timings_s"] = stages.timings()
        with open(os.path.join(w, f"report_{split}.json"), "w") as f:
            json.dump(report, f, indent=2, default=str)
    plot_dev_curves(w, os.path.join(w, "dev_curves.png"))
    print(json.dumps(stages.timings(), indent=2))


if __name__ == "__main__":
    app.run(main)
