"""The real-data proof of task distillation (README "Task distillation on real data").

On the stdlib docstring task (tinybert_tf.data.stdlib_task.build_task: docstrings labelled by
library area, split by source file) with the packaged MiniLM-L6 teacher:
  teacher fine-tuned; then from two starting points -- a narrow TinyBERT-4 general-distilled by
  this package on stdlib text, and a 3-layer student of the teacher's width initialised from
  teacher layers (DistilBERT-style) -- three students each:
  (a) fine-tuned without a teacher, (b) two-step TinyBERT task distillation,
  (c) (b) on TinyBERT-augmented training data.
Every stage goes through `tinybert_tf.modes.run` (the launcher's code path); a stage whose output
exists is skipped, so the script resumes. Writes report.json / report.md into --workdir.

python tools/task_proof.py --workdir=proof_out
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "proof_out", "Output directory.")
_GD_STUDENT = flags.DEFINE_string("general_student", "", "A general-distilled TinyBERT-4 preset "
                                  "dir (default: distil one here for --gd_steps).")
_GD_STEPS = flags.DEFINE_integer("gd_steps", 800, "General distillation steps (batch 32, seq 64).")
_TEACHER_EPOCHS = flags.DEFINE_integer("teacher_epochs", 3, "Teacher fine-tuning epochs.")
_TEACHER_LR = flags.DEFINE_float("teacher_lr", 1e-4, "Teacher fine-tuning peak learning rate.")
_FT_EPOCHS = flags.DEFINE_integer("student_epochs", 5, "(a) student fine-tuning epochs (default: "
                                  "as many as (b)'s two steps together).")
_STUDENT_LR = flags.DEFINE_float("student_lr", 1e-4, "Peak learning rate of every student stage "
                                 "((a), and both steps of (b) and (c)).")
_INT_EPOCHS = flags.DEFINE_integer("intermediate_epochs", 3, "(b) step-1 epochs.")
_PRED_EPOCHS = flags.DEFINE_integer("prediction_epochs", 2, "(b) step-2 epochs.")
_N_AUG = flags.DEFINE_integer("n_aug", 3, "(c) augmented copies per training example.")
_AUG_EPOCHS = flags.DEFINE_integer("aug_epochs", 1, "(c) epochs of each step on augmented data.")
_LONG = flags.DEFINE_bool("paper_epochs_narrow", True, "Also (b) from the narrow start with the "
                          "paper's epochs: 10 intermediate + 3 prediction.")
_MLM_STEPS = flags.DEFINE_integer("mlm_head_steps", 300, "Steps to fit a masked-LM head on the "
                                  "frozen teacher for augmentation (MiniLM ships none).")
_SEQ = flags.DEFINE_integer("seq_len", 64, "Sequence length.")


def _config(name, **fields):
    from tinybert_tf import config_lib

    return config_lib.load(name, **fields)


class Stages:
    """Runs named stages once (an output path that exists means done) and records wall-clock."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = os.path.join(workdir, "timings.json")
        self.timings = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def run(self, name, output, fn):
        if os.path.exists(output):
            print(f"== {name}: done ({output})")
            return output
        print(f"== {name} ...", flush=True)
        start = time.time()
        result = fn()
        self.timings[name] = round(time.time() - start, 1)
        with open(self.path, "w") as f:
            json.dump(self.timings, f, indent=2)
        return result or output


def fit_mlm_head(teacher_dir, corpus, out_dir, steps, seq_len):
    """A BertMaskedLM on the frozen teacher: only the head (tied to the input embeddings) learns."""
    import keras
    import keras_hub

    from tinybert_tf.data import corpus as corpus_data
    from tinybert_tf.data import masking

    backbone = keras_hub.models.Backbone.from_preset(teacher_dir)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(teacher_dir)
    backbone.trainable = False
    mlm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    data = corpus_data.corpus_dataset(corpus, tokenizer, seq_len=seq_len, batch_size=32,
                                      drop_remainder=True)
    data = masking.mask_dataset(data, tokenizer)
    mlm.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    mlm.fit(data, steps_per_epoch=steps, epochs=1)
    mlm.optimizer = None
    mlm.save_to_preset(out_dir)
    tokenizer.save_to_preset(out_dir)
    return out_dir


def main(argv):
    del argv
    import keras_hub

    from tinybert_tf import demo, evaluate, students
    from tinybert_tf.data import augment, stdlib_task, stdlib_text
    from tinybert_tf.modes import run

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
    task = {"task": "file", "data.train_file": os.path.join(task_dir, "train.tsv"),
            "data.eval_file": os.path.join(task_dir, "dev.tsv"),
            "data.test_file": os.path.join(task_dir, "test.tsv"), "data.seq_len": _SEQ.value,
            "batch_size": 32, "log_every": 20, "checkpoint_every": 100}

    teacher = stages.run("teacher fine-tuning", os.path.join(w, "teacher", "teacher"), lambda: run(
        _config("task_distill", mode="finetune", teacher=teacher_pre,
                **{**task, "finetune.epochs": _TEACHER_EPOCHS.value,
                   "finetune.learning_rate": _TEACHER_LR.value}), os.path.join(w, "teacher")))

    # Starting points.
    narrow = _GD_STUDENT.value or stages.run(
        "general distillation (TinyBERT-4)", os.path.join(w, "general", "student"), lambda: run(
            _config("general_distill", teacher=teacher_pre, layer_map="1,2,4,5",
                    steps=_GD_STEPS.value, batch_size=32, log_every=50, checkpoint_every=200,
                    **{"optimizer.learning_rate": 3e-4, "data.train":
                       os.path.join(corpus_dir, "train.txt"), "data.seq_len": _SEQ.value}),
            os.path.join(w, "general")))
    wide = os.path.join(w, "start_from_teacher_3l")

    def make_wide():
        backbone = students.init_from_teacher(keras_hub.models.Backbone.from_preset(teacher_pre), 3)
        backbone.save_to_preset(wide)
        keras_hub.tokenizers.Tokenizer.from_preset(teacher_pre).save_to_preset(wide)

    stages.run("3-layer student from teacher layers", wide, make_wide)

    # Augmented training data (c).
    mlm_dir = os.path.join(w, "mlm_head")
    stages.run("masked-LM head for augmentation", mlm_dir, lambda: fit_mlm_head(
        teacher_pre, os.path.join(corpus_dir, "train.txt"), mlm_dir, _MLM_STEPS.value,
        _SEQ.value))
    aug_dir = os.path.join(w, "augmented")

    def do_augment():
        mlm = keras_hub.models.MaskedLM.from_preset(mlm_dir, preprocessor=None)
        tok = keras_hub.tokenizers.Tokenizer.from_preset(mlm_dir)
        augment.Augmenter(mlm, tok, seed=0, batch_size=256, seq_len=_SEQ.value).augment_file(
            os.path.join(task_dir, "train.tsv"), aug_dir, n_aug=_N_AUG.value, shard_size=500)

    stages.run("augmentation", os.path.join(aug_dir, "augmented.tsv"), do_augment)

    models = {"teacher (MiniLM-L6, fine-tuned)": teacher}
    starts = {"narrow": ("TinyBERT-4 general-distilled", narrow, "1,2,4,5"),
              "wide": ("3-layer from teacher", wide, "")}
    lr = _STUDENT_LR.value
    variants = {
        "b": ("two-step distillation", {"intermediate.epochs": _INT_EPOCHS.value,
                                        "prediction.epochs": _PRED_EPOCHS.value}),
        "b10": ("two-step with the paper's epochs (10 + 3)", {"intermediate.epochs": 10,
                                                   "prediction.epochs": 3}),
        "c": ("two-step on augmented data", {
            "intermediate.epochs": _AUG_EPOCHS.value, "prediction.epochs": _AUG_EPOCHS.value,
            "augmented_train_file": os.path.join(aug_dir, "augmented.tsv")}),
    }
    # Cheapest and most telling first: (a) and (b) for both starts, then (c).
    for variant, tag in [("a", "narrow"), ("b", "narrow"), ("a", "wide"), ("b", "wide"),
                         ("c", "narrow"), ("c", "wide")] + [("b10", "narrow")] * _LONG.value:
        start_name, start, layer_map = starts[tag]
        out = os.path.join(w, f"{tag}_{variant}")
        if variant == "a":
            models[f"{start_name}: (a) fine-tuned"] = stages.run(
                f"{tag} (a) fine-tuning", os.path.join(out, "teacher"), lambda start=start, out=out:
                run(_config("task_distill", mode="finetune", teacher=start,
                            **{**task, "finetune.epochs": _FT_EPOCHS.value,
                               "finetune.learning_rate": lr}), out))
            continue
        label, extra = variants[variant]
        models[f"{start_name}: ({variant}) {label}"] = stages.run(
            f"{tag} ({variant}) {label}", os.path.join(out, "prediction", "student"),
            lambda start=start, out=out, extra=extra, layer_map=layer_map: run(_config(
                "task_distill", mode="task_distill", teacher=teacher, student=start,
                layer_map=layer_map, **{**task, **extra, "intermediate.learning_rate": lr,
                                        "prediction.learning_rate": lr}), out))

    teacher_row = models.pop("teacher (MiniLM-L6, fine-tuned)")
    models = {"teacher (MiniLM-L6, fine-tuned)": teacher_row,
              **dict(sorted(models.items(), key=lambda kv: (kv[0].startswith("3-layer"), kv[0])))}
    config = _config("task_distill", mode="evaluate", teacher=teacher,
                     student=",".join(f"{k}={v}" for k, v in models.items()
                                      if not k.startswith("teacher")),
                     eval_split="test", **task)
    report = evaluate.run_from_config(config, os.path.join(w, "report"))
    report["timings_s"] = stages.timings
    with open(os.path.join(w, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    print(json.dumps(stages.timings, indent=2))


if __name__ == "__main__":
    app.run(main)
