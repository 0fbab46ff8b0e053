"""Export a distilled student preset for TF Serving (and optionally HF / TFLite).

Example (`tinybert-tf-export ...` is the same):
  python -m tinybert_tf.tools.export --student=out/student_preset --export_dir=serving \\
      --model_name=student --labels=labels.json --hf_dir=out/student_hf --tflite

Writes serving/student/<next version>/ (SavedModel + assets.extra/), verifies it in a fresh
process and prints the report. Exit code 1 with a one-line ``error: ...`` on bad input or a
failed check.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from tinybert_tf.launch import hardware, heap  # os, gc: before TensorFlow is imported

FLAGS = flags.FLAGS


def define_flags():
    """Registers the tool's flags on absl's global FLAGS."""
    flags.DEFINE_string("student", None, "Student keras-hub preset directory (backbone or task).")
    flags.DEFINE_string(
        "export_dir", None, "TF Serving base directory (local or gs://); writes <model_name>/<version>."
    )
    flags.DEFINE_string("model_name", "student", "Model name (sub-directory and warm-up model_spec).")
    flags.DEFINE_integer("version", None, "Integer version; default: the next free one.")
    flags.DEFINE_string("labels", None, "JSON file with the class names (list or {id: name}).")
    flags.DEFINE_bool("text_signature", True, "Add serving_text/serving_text_pair (raw strings).")
    flags.DEFINE_bool("warmup", True, "Write assets.extra/tf_serving_warmup_requests.")
    flags.DEFINE_string("hf_dir", None, "Also write a Hugging Face BERT checkpoint here.")
    flags.DEFINE_bool("tflite", False, "Also write fp32 and int8 TFLite files of serving_default.")
    flags.DEFINE_bool("verify", True, "Op check, saved_model_cli and fresh-process parity.")
    flags.DEFINE_string("report_json", None, "Also write the ExportReport as JSON here.")
    flags.DEFINE_bool("verbose", False, "Traceback of a user error too (one line otherwise).")
    flags.mark_flags_as_required(["student", "export_dir"])


def main(argv):
    del argv
    from tinybert_tf import cli

    hardware.quiet_python_logs(FLAGS.verbose)
    heap.import_settled(*heap.RUN_MODULES)
    from tinybert_tf.export.publish import export

    report = cli.report(  # a user error (ExportError, a missing file, ...): one line, exit 1
        export,
        FLAGS.student,
        FLAGS.export_dir,
        model_name=FLAGS.model_name,
        version=FLAGS.version,
        labels=FLAGS.labels,
        text_signature=FLAGS.text_signature,
        warmup=FLAGS.warmup,
        hf_dir=FLAGS.hf_dir,
        tflite=FLAGS.tflite,
        verify=FLAGS.verify,
        verbose=FLAGS.verbose,
        prefix="error",
    )
    if FLAGS.report_json:  # any tf.io.gfile path, like --export_dir
        import tensorflow as tf

        with tf.io.gfile.GFile(FLAGS.report_json, "w") as f:
            f.write(json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if report.ok else 1


def entry():
    """`python -m tinybert_tf.tools.export` and the console script `tinybert-tf-export`."""
    hardware.enable_onednn()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    app.run(main)


if __name__ == "__main__":
    entry()
