"""General distillation (TinyBERT stage 1): emb + attention + hidden losses on unlabelled text.

python -m tinybert_tf.main --config=general_distill --workdir=/tmp/gd \
    --config.teacher=bert_base_en_uncased --config.data.train='corpus/*.txt'
Variants: `tiny` (2-layer student, a few steps; tests and CI), `distilbert` (DistilBERT recipe:
masked-LM teacher and student initialised from teacher layers).
"""

import ml_collections

from tinybert_tf.launch import config_lib


def get_config(variant=None):
    c = config_lib.base("general_distill")
    c.student = "tinybert_4l_312h"  # a students.PRESETS name, a preset dir, or from_teacher:N
    c.recipe = "tinybert_general"
    c.layer_map = ""  # "" = the recipe's (uniform); or last, or teacher layers e.g. "1,2,4,5"
    c.loss_weights = ""  # "" = the recipe's; or "term=weight,...", e.g. "att=0.5,pooled_rel=10"
    c.relation_heads = 0  # minilm_v2: relation heads (0 = the recipe's 48); must divide both widths
    # minilm / minilm_v2: the teacher layer distilled (-1 = the last). MiniLMv2 takes an upper-middle
    # one for large teachers; the teacher then runs only that deep.
    c.teacher_layer = -1
    c.save_initial = False  # also write workdir/student_init (the student before training)
    c.steps = 100_000
    c.batch_size = 256
    c.optimizer.learning_rate = 1e-4
    c.data = ml_collections.ConfigDict(
        dict(train="", format="text", doc_format="line", seq_len=128, shuffle_buffer=10000,
             mask_rate=0.15, whole_word=False)
    )
    if variant == "distilbert":
        c.recipe = "distilbert"
        c.student = "from_teacher:6"
        c.optimizer.learning_rate = 5e-4
    elif variant == "tiny":
        config_lib.tiny(c)
        c.student = "tiny_2l_32h"
        c.steps = 8
        c.data.seq_len = 32
        c.data.shuffle_buffer = 64
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use tiny or distilbert.")
    return c
