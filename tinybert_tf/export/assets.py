"""What an export writes beside the graph, in ``assets.extra/``: labels, vocabulary, warm-up
records and ``export_config.json`` (see `publish` for the layout). Written through
`tf.io.gfile` (`storage`), so any path the export dir may have works.
"""

from __future__ import annotations

import os

from tinybert_tf.export import storage
from tinybert_tf.export.serving import INPUT_NAMES, ExportError, StudentInfo

ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
CONFIG_FILE = "export_config.json"


def read_labels(labels, info: StudentInfo, preset=None):
    """``(label_list, source)`` for a student: ``labels`` (a list, an ``{"id": name}`` dict, or
    a JSON file holding either) checked against the head, ``"caller"``; else ``preset`` (the
    names its preset carries, `labels.preset_labels`), ``"preset"``; for a classifier without
    labels ``LABEL_i``, ``"default"``; for an encoder or a regression ``(None, None)``."""
    if labels is None and preset and info.task == "classifier":
        check_label_count(len(preset), info.num_classes)
        return list(preset), "preset"
    if labels is None:
        if info.task == "classifier":
            return [f"LABEL_{i}" for i in range(info.num_classes)], "default"
        return None, None
    if isinstance(labels, (str, os.PathLike)):
        labels = _read_labels_file(os.fspath(labels))
    if isinstance(labels, dict):
        labels = labels.get("labels", labels)
    if isinstance(labels, dict):  # {"0": "neg", "1": "pos"}
        labels = [labels[k] for k in sorted(labels, key=int)]
    labels = [str(x) for x in labels]
    if info.task == "encoder":
        raise ExportError("labels given, but the student is an encoder with no task head")
    check_label_count(len(labels), info.num_classes)
    return labels, "caller"


def _read_labels_file(path: str):
    import json

    import tensorflow as tf

    try:
        return storage.read_json(path)
    except (OSError, tf.errors.OpError, json.JSONDecodeError) as e:
        reason = e if isinstance(e, json.JSONDecodeError) else storage.error_text(e)
        raise ExportError(f"cannot read labels JSON {path!r}: {reason}") from None


def write_warmup(path: str, model_name: str, cases: dict) -> int:
    """Write ``cases`` (``{case: {"signature", "inputs": {name: array}}}``) as PredictionLogs.

    Returns:
        number of records written to ``path``.
    """
    import tensorflow as tf

    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        raise ExportError(
            "warm-up records need the TF Serving protos: pip install tensorflow-serving-api "
            "(or export with warmup=False)"
        ) from None

    n = 0
    with tf.io.TFRecordWriter(path) as writer:
        for case in cases.values():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=case["signature"])
            )
            for name, value in case["inputs"].items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
            n += 1
    return n


def write_assets(version_dir: str, model_name: str, warmup_cases, labels, tokenizer) -> int:
    """Write ``assets.extra/``: warm-up records of ``warmup_cases`` (none if ``None``),
    ``labels.txt`` and ``vocab.txt`` (when there are labels / a tokenizer).

    Returns:
        number of warm-up records written.
    """
    import tensorflow as tf

    extra = os.path.join(version_dir, ASSETS_EXTRA)
    tf.io.gfile.makedirs(extra)
    n_warm = 0
    if warmup_cases is not None:
        n_warm = write_warmup(os.path.join(extra, WARMUP_FILE), model_name, warmup_cases)
    if labels:
        storage.write_lines(os.path.join(extra, "labels.txt"), labels)
    if tokenizer is not None:
        storage.write_lines(os.path.join(extra, "vocab.txt"), tokenizer.get_vocabulary())
    return n_warm


def tokenizer_config(tokenizer):
    """The ``tokenizer`` entry of ``export_config.json`` (``None`` without a tokenizer)."""
    if tokenizer is None:
        return None
    return {
        "vocab_file": "vocab.txt",
        "lowercase": bool(getattr(tokenizer, "lowercase", False)),
        "cls_token_id": int(tokenizer.start_token_id),
        "sep_token_id": int(tokenizer.end_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
    }


def export_config(report, student, text_sequence_length, num_variables: int) -> dict:
    """``export_config.json`` of an export (the verification entries are added by the caller).

    Args:
        report: the export's `report.ExportReport` (name, version, task, signatures).
        student: the exported student (``info``, ``labels``, ``labels_source``, ``tokenizer``).
    """
    from tinybert_tf.export.serving import DEFAULT_SIGNATURE

    return {
        "model_name": report.model_name,
        "version": report.version,
        "task": report.task,
        "max_sequence_length": report.max_sequence_length,
        "text_sequence_length": text_sequence_length,
        "text_truncation": "round_robin (serving_text* truncate to text_sequence_length)",
        "input_names": list(INPUT_NAMES),
        "output_names": list(report.signatures[DEFAULT_SIGNATURE]["outputs"]),
        "signatures": report.signatures,
        "labels": student.labels,
        "labels_source": student.labels_source,
        "head_activation": student.info.head_activation,
        "tokenizer": tokenizer_config(student.tokenizer),
        "exported_with": versions_info(),
        "num_variables": num_variables,
    }


def write_config(version_dir: str, config: dict) -> None:
    storage.write_json(os.path.join(version_dir, ASSETS_EXTRA, CONFIG_FILE), config)


def versions_info() -> dict:
    """Versions of the libraries that wrote the export."""
    import keras
    import keras_hub
    import tensorflow as tf
    import tensorflow_text

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "tensorflow_text": tensorflow_text.__version__,
    }


def check_label_count(got, outputs, error=ExportError):
    """Label names must match the head's outputs one to one."""
    if got != outputs:
        raise error(f"got {got} labels for a head with {outputs} outputs")
