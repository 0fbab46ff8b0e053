"""The `export` mode: a student preset published for TF Serving (`tinybert_tf.export.publish`)."""

from __future__ import annotations

import os

from tinybert_tf.launch import builders
from tinybert_tf.launch.task_data import task_spec


def export_student(config, workdir, launch=None):
    """The student preset (`export.student`, default this workdir's task-distilled student) to
    `<export.dir or workdir/export>/<model_name>/<version>/`, verified, with the task's labels;
    returns that path. `launch` (what the dispatcher built) is unused: nothing here trains."""
    from tinybert_tf.export import publish
    from tinybert_tf.export.labels import preset_labels

    e = config.export
    student = e.student or os.path.join(workdir, "prediction", "student")
    builders.check_preset(student, "export.student")
    labels = None  # the names the student's preset carries (what it was trained on) ...
    if preset_labels(student) is None and (config.task != "file" or config.data.train_file):
        labels = list(task_spec(config).label_names) or None  # ... else the task's
    report = publish.export(
        student, e.dir or os.path.join(workdir, "export"), model_name=e.model_name,
        version=e.version or None, labels=labels, text_signature=e.text_signature,
        hf_dir=os.path.join(workdir, "hf_checkpoint") if e.hf else None, tflite=e.tflite,
    )
    return report.path
