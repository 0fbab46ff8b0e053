"""General distillation (TinyBERT stage 1): emb + attention + hidden losses on unlabelled text.

python -m tinybert_tf.main --config=general_distill --workdir=/tmp/gd \
    --config.teacher=bert_base_en_uncased --config.data.train='corpus/*.txt'
Variants: `tiny` (2-layer student, a few steps; tests and CI), `distilbert` (DistilBERT recipe:
masked-LM teacher and student initialised from teacher layers).
"""

import ml_collections

from tinybert_tf.launch import config_lib


def get_config(variant=None):
    config = config_lib.base("general_distill")
    config.student = "tinybert_4l_312h"  # a students.PRESETS name, a preset dir, or from_teacher:N
    config.recipe = "tinybert_general"
    config.layer_map = ""  # "" = the recipe's (uniform); or last, or teacher layers e.g. "1,2,4,5"
    # loss_weights: "" = the recipe's; or "term=weight,...", e.g. "att=0.5,pooled_rel=10"
    config.loss_weights = ""
    # relation_heads: minilm_v2's relation heads (0 = the recipe's 48); must divide both widths
    config.relation_heads = 0
    # minilm / minilm_v2: the teacher layer distilled (-1 = the last). MiniLMv2 takes an
    # upper-middle one for large teachers; the teacher then runs only that deep.
    config.teacher_layer = -1
    config.save_initial = False  # also write workdir/student_init (the student before training)
    config.steps = 100_000
    config.batch_size = 256
    config.optimizer.learning_rate = 1e-4
    config.data = ml_collections.ConfigDict(
        dict(train="", format="text", doc_format="line", seq_len=128, shuffle_buffer=10000,
             mask_rate=0.15, whole_word=False)
    )
    if variant == "distilbert":
        config.recipe = "distilbert"
        config.student = "from_teacher:6"
        config.optimizer.learning_rate = 5e-4
    elif variant == "tiny":
        config_lib.tiny(config)
        config.student = "tiny_2l_32h"
        config.steps = 8
        config.data.seq_len = 32
        config.data.shuffle_buffer = 64
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use tiny or distilbert.")
    return config
