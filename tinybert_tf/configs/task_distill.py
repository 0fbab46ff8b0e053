"""Task distillation (TinyBERT stage 2) and the steps around it, on GLUE/CoNLL via TFDS or local files.

Modes (--config.mode): finetune (teacher + head on the task), task_distill (step intermediate |
prediction | both), evaluate (teacher vs student report), export (SavedModel for TF Serving).
Paper defaults (GLUE/CoNLL): step 1 10 epochs, batch 32, lr 5e-5; step 2 3 epochs, lr 3e-5;
seq 64 (single sentences) / 128 (pairs). File tasks: every stage up to 10 epochs with early stopping
on the eval split (patience 3).
"""

import ml_collections

from tinybert_tf.launch import config_lib


def _auto():
    return ml_collections.config_dict.placeholder(int)  # None until a flag sets it


def get_config(variant=None):
    config = config_lib.base("task_distill")
    config_lib.task_fields(config)
    # The student: a general-distilled preset dir, from_teacher:N, or an architecture name
    # (students.PRESETS: random weights, which task_distill warns about). finetune trains it
    # alone (the no-teacher baseline) when it names trained weights, else the teacher.
    config.student = "tinybert_4l_312h"
    config.stages = "both"  # which task_distill steps: intermediate | prediction | both
    config.layer_map = ""  # "" = uniform; or last, or teacher layers e.g. "1,2,4,5"
    # Transfer set: unlabelled in-domain text the teacher labels, added to the labelled train
    # split in both task_distill steps (globs, comma-separated; .txt one example per line, or
    # .tsv/.csv/.jsonl with the task's text columns; .tsv read as data.tsv_quoting says). Texts
    # also in the eval/test splits and duplicates are dropped and counted. transfer_only: train
    # on the transfer set alone.
    config.transfer_file = ""
    config.transfer_only = False
    config.augmented_train_file = ""  # plain TSV from tinybert-tf-augment: one more transfer set
    # Each stage has its own learning rate; the global optimizer.learning_rate is for general
    # distillation only, so it is not a key here (setting it says which key to use instead).
    config_lib.remove_key(config, "optimizer.learning_rate")
    # members: N > 1 fine-tunes N teachers (seeds seed..seed+N-1) into workdir/teacher/member_K
    # + members.txt; --config.teacher=<that workdir>/teacher then means the whole ensemble.
    # epochs / patience of every stage: None = the task's default (`config_lib.stage_budget`:
    # GLUE/CoNLL the paper's fixed schedules; file tasks up to 10 epochs, stopping 3 evaluations
    # after the eval score last improved). epochs is the most a stage trains; patience 0 = never
    # stop early.
    config.finetune = ml_collections.ConfigDict(dict(epochs=_auto(), patience=_auto(),
                                                learning_rate=2e-5, members=1))
    # recipe: tinybert_task_intermediate (TinyBERT), minilm or minilm_v2 (relations; no layer
    # map, no width projection, any head count for minilm_v2).
    config.intermediate = ml_collections.ConfigDict(
        dict(epochs=_auto(), patience=_auto(), learning_rate=5e-5,
             recipe="tinybert_task_intermediate",
             relation_heads=0, teacher=0))  # relation_heads: minilm_v2's (0 = the recipe's 48)
    # teacher: which of several teachers (--config.teacher=DIR1,DIR2,...) step 1 distils from;
    # its layers are the student's start. The prediction step uses them all (combine below).
    # cache_teacher_logits: run the frozen teacher once over the training data, not every epoch.
    # logits_cache: a directory keeping those logits for later runs with the same teacher, data
    # and settings (launch/logits_cache.py); "" = computed in every run.
    # hard_weight: weight of the cross-entropy (MSE) on labelled rows beside the soft targets.
    # combine (several teachers): prob = mean of their tempered probabilities; logit = tempered
    # softmax of their mean logits.
    config.prediction = ml_collections.ConfigDict(
        dict(epochs=_auto(), patience=_auto(), learning_rate=3e-5, temperature=1.0,
             cache_teacher_logits=True, logits_cache="",
             hard_weight=0.0, combine="prob")
    )
    config.eval_split = ""  # evaluate: "" = the task's first evaluation split; or e.g. "test"
    config.latency_runs = 20  # evaluate: timed forward passes per model and batch size (median)
    config.export = ml_collections.ConfigDict(
        dict(student="", dir="", model_name="student", version=0, text_signature=True,
             hf=False, tflite=False)
    )  # student "" = workdir/prediction/student; dir "" = workdir/export; version 0 = next free
    if variant == "tiny":
        config_lib.tiny(config)
        config.student = "tiny_2l_32h"
        config.data.seq_len = 32
        for stage in (config.finetune, config.intermediate, config.prediction):
            stage.epochs = 1
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use tiny.")
    return config
