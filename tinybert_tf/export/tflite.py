"""TFLite files of an export: the token-id signature as fp32 and dynamic-range int8 models,
each compared with the Keras student on the export's parity cases (`checks`)."""

from __future__ import annotations

import os
import warnings

import numpy as np


def check_tflite(model, info, out_dir: str, cases: dict) -> dict:
    """Convert the token-id signature to TFLite (fp32 and dynamic-range int8) and compare.

    The TFLite graph has the same named inputs/outputs as ``serving_default`` (no length
    assertion: TFLite has no Assert op; callers must keep ``s <= max_sequence_length``).
    ``out_dir`` may be any `tf.io.gfile` path.

    Returns:
        ``{"fp32_path", "fp32_bytes", "fp32_max_abs_diff", "fp32_mean_abs_diff", "int8_path",
        "int8_bytes", "int8_max_abs_diff", "int8_mean_abs_diff", "output_scale"}`` (diffs
        over the token-id parity cases, all outputs including padded positions).
    """
    import tensorflow as tf

    from tinybert_tf.export.serving import (
        forward_fn,
        ids_input_spec,
        student_variable_dict,
    )

    holder = tf.Module(name="tflite_student")
    holder.student_variables = student_variable_dict(model)
    serving_default = tf.function(
        forward_fn(model, info, list(info.outputs)), input_signature=ids_input_spec()
    )
    tf.io.gfile.makedirs(out_dir)
    concrete = serving_default.get_concrete_function()
    report = {}
    for kind in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        if kind == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic-range int8 weights
        blob = conv.convert()
        fpath = os.path.join(out_dir, f"model_{kind}.tflite")
        with tf.io.gfile.GFile(fpath, "wb") as f:
            f.write(blob)
        worst, scale, errs = _tflite_errors(blob, cases)
        report[f"{kind}_path"] = fpath
        report[f"{kind}_bytes"] = len(blob)
        report[f"{kind}_max_abs_diff"] = worst
        report[f"{kind}_mean_abs_diff"] = float(np.concatenate(errs).mean()) if errs else 0.0
        report["output_scale"] = scale  # max |Keras output| over the compared cases
    return report


def _tflite_errors(blob: bytes, cases: dict):
    """``(max |err|, max |Keras output|, [|err| arrays])`` of a TFLite model over the
    token-id cases."""
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter deprecation notice
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(model_content=blob)
    runner = interp.get_signature_runner()
    worst, scale, errs = 0.0, 0.0, []
    for case in cases.values():
        if case["signature"] != "serving_default":
            continue
        got = runner(**{k: np.asarray(v, np.int32) for k, v in case["inputs"].items()})
        for k, v in got.items():
            ref = np.asarray(case["expected"][k], np.float32)
            err = np.abs(v - ref)
            worst = max(worst, float(err.max()))
            scale = max(scale, float(np.abs(ref).max()))
            errs.append(err.ravel())
    return worst, scale, errs
