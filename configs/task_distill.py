"""Task distillation (TinyBERT stage 2) and the steps around it, on GLUE/CoNLL via TFDS or local files.

Modes (--config.mode): finetune (teacher + head on the task), task_distill (step intermediate |
prediction | both), evaluate (teacher vs student report), export (SavedModel for TF Serving).
Paper defaults: step 1 10 epochs, batch 32, lr 5e-5; step 2 3 epochs, lr 3e-5; seq 64 (single
sentences) / 128 (pairs).
"""

import ml_collections

from tinybert_tf import config_lib


def get_config(variant=None):
    c = config_lib.base("task_distill")
    config_lib.task_fields(c)
    c.student = "tinybert_4l_312h"  # general-distilled student preset dir, a PRESETS name, ...
    c.step = "both"  # intermediate | prediction | both
    c.layer_map = ""  # "" = uniform; or last, or teacher layers e.g. "1,2,4,5"
    c.augmented_train_file = ""  # TSV from tools/augment.py, used instead of the train split
    c.finetune = ml_collections.ConfigDict(dict(epochs=3, learning_rate=2e-5))
    c.intermediate = ml_collections.ConfigDict(dict(epochs=10, learning_rate=5e-5))
    # cache_teacher_logits: run the frozen teacher once over the training data, not every epoch.
    c.prediction = ml_collections.ConfigDict(
        dict(epochs=3, learning_rate=3e-5, temperature=1.0, cache_teacher_logits=True)
    )
    c.eval_split = ""  # evaluate: "" = the task's first evaluation split; or e.g. "test"
    c.latency_runs = 20  # evaluate: timed forward passes per model and batch size (median)
    c.export = ml_collections.ConfigDict(
        dict(student="", dir="", model_name="student", version=0, text_signature=True,
             hf=False, tflite=False)
    )  # student "" = workdir/prediction/student; dir "" = workdir/export; version 0 = next free
    if variant == "tiny":
        config_lib.tiny(c)
        c.student = "tiny_2l_32h"
        c.data.seq_len = 32
        c.data.shuffle_buffer = 64
        for stage in (c.finetune, c.intermediate, c.prediction):
            stage.epochs = 1
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use tiny.")
    return c
