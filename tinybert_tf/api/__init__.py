"""The Python API: `finetune`, `distill_task`, `distill_general`, `compare`, `export_model`
(`functions`), the records they return (`results`), and the package's error types.

    import tinybert_tf

    teacher = tinybert_tf.finetune("runs/teacher", "bert_base_en_uncased",
                                   train="train.tsv", eval="dev.tsv")
    student = tinybert_tf.distill_task("runs/student", teacher.preset, "from_teacher:4",
                                       train="train.tsv", eval="dev.tsv")
    tinybert_tf.export_model("runs/student")

docs/python_api.md has a runnable example per function.
"""

from tinybert_tf.api.functions import (
    compare,
    distill_general,
    distill_task,
    export_model,
    finetune,
)
from tinybert_tf.api.results import Comparison, Export, Run, Score
from tinybert_tf.errors import Interrupted, UserError

__all__ = ["finetune", "distill_task", "distill_general", "compare", "export_model", "Run",
           "Score", "Comparison", "Export", "UserError", "Interrupted"]
