"""Export a distilled keras-hub BERT student for TF Serving (+ HF checkpoint, + TFLite).

Layout written by :func:`export`::

    <export_dir>/<model_name>/<version>/          # TF Serving model version (integer)
        saved_model.pb, variables/                # student variables only
        assets.extra/tf_serving_warmup_requests   # PredictionLog TFRecords
        assets.extra/export_config.json           # max length, input/output names, task, labels
        assets.extra/labels.txt                   # classifier students: one label per line
        assets.extra/vocab.txt                    # WordPiece vocabulary (client-side tokenizing)
    <export_dir>/<model_name>_tflite/<version>/   # optional: model_fp32.tflite, model_int8.tflite

Signatures (batch ``b`` dynamic; ``s`` dynamic, at most the model's ``max_sequence_length``):

* ``serving_default(token_ids, segment_ids, padding_mask)``: int32 ``[b, s]`` each. Longer
  inputs are refused (``InvalidArgumentError`` naming the max), never truncated.
* ``serving_text(text)`` / ``serving_text_pair(text, text_b)``: string ``[b]``; tokenizes and
  packs in-graph with keras-hub's WordPiece tokenizer and ``MultiSegmentPacker`` (TF Text ops)
  to ``text_sequence_length`` tokens. **These truncate** (round robin over the segments), as
  the keras-hub preprocessor does during training.

Outputs by task: encoder -> ``sequence_output`` float32 ``[b, s, H]``, ``pooled_output``
``[b, H]``; classifier -> ``logits`` ``[b, C]``, ``probabilities`` ``[b, C]`` (softmax);
regression (one output) -> ``logits`` ``[b, 1]``, ``score`` ``[b]``.

The version directory is built under a hidden temporary name, verified (ops, signatures,
parity in a fresh process) and only then renamed into place, so TF Serving never sees a
half-written or unverified version, and an existing version is never overwritten.
``export_dir`` may be any `tf.io.gfile` path (``gs://...``): the version is then built and
verified on local disk and uploaded (see `storage`).

Steps, one function each: resolve the student (`resolve_student`), the version directory
(`resolve_version`), stage (save, assets, verify: `stage_version`, `write_stage`,
`verify_stage`), publish (`publish_version`), extras (`export_hf`, `export_tflite`).
"""

from __future__ import annotations

import dataclasses
import os
import time

from tinybert_tf.errors import first_line
from tinybert_tf.export import storage
from tinybert_tf.export.assets import (
    export_config,
    read_labels,
    write_assets,
    write_config,
)
from tinybert_tf.export.checks import (
    build_parity_cases,
    run_fresh_process_checks,
)
from tinybert_tf.export.hf import HFExportError, check_hf_round_trip, export_hf_checkpoint
from tinybert_tf.export.labels import preset_labels
from tinybert_tf.export.report import ExportReport
from tinybert_tf.export.serving import (
    DEFAULT_SIGNATURE,
    ExportError,
    StudentInfo,
    build_serving_module,
    describe_student,
    load_student,
    next_version,
)
from tinybert_tf.export.tflite import check_tflite


@dataclasses.dataclass
class Student:
    """A student ready to export: the model, its tokenizer, task, labels and text length."""

    model: object
    tokenizer: object
    info: StudentInfo
    labels: list | None
    labels_source: str | None
    text_sequence_length: int | None


def export(
    model_or_preset_dir,
    export_dir: str,
    model_name: str = "student",
    version: int | None = None,
    tokenizer=None,
    labels=None,
    text_signature: bool = True,
    warmup: bool = True,
    hf_dir: str | None = None,
    tflite: bool = False,
    verify: bool = True,
    outputs=None,
    text_sequence_length: int | None = None,
    sample_texts=None,
    quiet: bool = False,
) -> ExportReport:
    """Export a student for TF Serving; see the module docstring for the layout.

    Args:
        model_or_preset_dir: preset dir, a keras-hub model, or a ``(model, tokenizer)`` tuple.
        export_dir: TF Serving base dir; writes ``<export_dir>/<model_name>/<version>/``.
        version: integer version; default ``next_version``. Existing versions are refused.
        labels: class names (list, ``{"id": name}`` dict, or a JSON file path).
        text_signature: add ``serving_text`` / ``serving_text_pair`` (in-graph tokenizer).
        warmup: write ``assets.extra/tf_serving_warmup_requests``.
        hf_dir: also write a Hugging Face BERT checkpoint there (checked by round trip).
        tflite: also write fp32 and dynamic-range int8 TFLite files (with parity).
        verify: op check, ``saved_model_cli show --all``, fresh-process parity; a failure
            raises ``ExportError`` and the version is not published.
        outputs: subset of the task's output names (default: all).

    Returns:
        :class:`ExportReport` (also printed unless ``quiet``).
    """
    student = resolve_student(model_or_preset_dir, tokenizer, labels, text_sequence_length)
    if hf_dir and storage.exists(os.path.join(hf_dir, "config.json")):
        raise ExportError(f"hf_dir {hf_dir!r} already holds a checkpoint; not overwriting it")
    final, version = resolve_version(export_dir, model_name, version)
    module, signatures, table = build_serving_module(
        student.model, student.tokenizer, text_signature, student.text_sequence_length, outputs
    )
    info = student.info
    report = ExportReport(final, model_name, version, info.task, info.max_sequence_length, table)
    stage, cases = stage_version(module, signatures, student, report, warmup, verify,
                                 sample_texts)
    publish_version(stage, report)
    if hf_dir:
        export_hf(student, report, cases, hf_dir)
    if tflite:
        export_tflite(student, report, cases, os.fspath(export_dir))
    if not quiet:
        print(report.summary())
    return report


def resolve_student(model_or_preset_dir, tokenizer, labels, text_sequence_length) -> Student:
    """Load (or unpack) the student, find its tokenizer and text length, check its labels."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"export needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
    if isinstance(model_or_preset_dir, (str, os.PathLike)):
        model, preset_tokenizer = load_student(model_or_preset_dir)
        tokenizer = tokenizer or preset_tokenizer
    elif isinstance(model_or_preset_dir, tuple):
        model, tokenizer = model_or_preset_dir
    else:
        model = model_or_preset_dir
    preprocessor = getattr(model, "preprocessor", None)
    if tokenizer is None and preprocessor is not None:
        tokenizer = getattr(preprocessor, "tokenizer", None)
    if text_sequence_length is None and preprocessor is not None:
        text_sequence_length = getattr(preprocessor, "sequence_length", None)
    info = describe_student(model)
    preset = None
    if isinstance(model_or_preset_dir, (str, os.PathLike)):
        preset = preset_labels(model_or_preset_dir)
    label_list, label_source = read_labels(labels, info, preset)
    return Student(model, tokenizer, info, label_list, label_source, text_sequence_length)


def resolve_version(export_dir, model_name: str, version: int | None) -> tuple[str, int]:
    """``(path, version)`` of the new version directory ``<export_dir>/<model_name>/<version>``
    (not created yet).

    The model directory must be writable; an existing version is refused, never overwritten.
    """
    import tensorflow as tf

    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ExportError(f"invalid model_name {model_name!r}")
    export_dir = os.fspath(export_dir)
    model_dir = os.path.join(export_dir, model_name)
    try:
        storage.check_writable(model_dir)
    except (OSError, tf.errors.OpError) as e:
        raise ExportError(
            f"export_dir {export_dir!r} is not writable: {storage.error_text(e)}"
        ) from None
    version = next_version(export_dir, model_name) if version is None else int(version)
    if version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if storage.exists(final):
        raise ExportError(
            f"version {version} of {model_name!r} already exists at {final}; versions are never "
            f"overwritten (next free: {next_version(export_dir, model_name)})"
        )
    return final, version


def stage_version(module, signatures, student, report, warmup, verify, sample_texts):
    """Build the version in a new local staging directory (`write_stage`); on any failure
    remove it and raise a one-line ``ExportError``.

    Returns:
        ``(stage, cases)``: the staging directory and the parity cases.
    """
    stage = storage.staging_dir(os.path.dirname(report.path), report.version)
    try:
        cases = write_stage(stage, module, signatures, student, report, warmup, verify,
                            sample_texts)
    except Exception as e:  # never leave a half-written candidate behind
        storage.remove_tree(stage)
        if isinstance(e, ExportError):
            raise
        raise ExportError(
            f"export of {report.model_name!r} v{report.version} failed: "
            f"{type(e).__name__}: {first_line(e, '')}"
        ) from e
    return stage, cases


def write_stage(stage, module, signatures, student, report, warmup, verify, sample_texts):
    """Save the SavedModel and its assets in ``stage`` and, with ``verify``, check it.

    Returns:
        the parity cases (`checks.build_parity_cases`), reused by the HF and TFLite checks.
    """
    import tensorflow as tf

    t0 = time.perf_counter()
    tf.saved_model.save(module, stage, signatures=signatures)
    report.timings_s["save"] = time.perf_counter() - t0
    text_len = None
    if hasattr(module, "text_sequence_length"):
        text_len = int(module.text_sequence_length.numpy())
    info = student.info
    cases = build_parity_cases(
        student.model, student.tokenizer, info.max_sequence_length, text_len,
        list(report.signatures), sample_texts,
    )
    report.warmup_records = write_assets(
        stage, report.model_name, cases if warmup else None, student.labels, student.tokenizer
    )
    config = export_config(report, student, text_len, len(module.student_variables))
    report.timings_s["assets"] = time.perf_counter() - t0 - report.timings_s["save"]
    if verify:
        verify_stage(stage, cases, report)
        config["ops"] = {k: report.ops[k] for k in ("tf_text_ops", "unknown_ops")}
    config["min_tf_serving_version"] = report.min_tf_serving_version
    write_config(stage, config)
    return cases


def verify_stage(stage: str, cases: dict, report: ExportReport) -> None:
    """Fresh-process op inventory, parity and warm-up replay, plus ``saved_model_cli``."""
    t0 = time.perf_counter()
    fresh = run_fresh_process_checks(stage, cases, report.model_name)
    report.record_checks(fresh, fresh.pop("saved_model_cli").replace(stage, report.path))
    report.timings_s["verify"] = time.perf_counter() - t0


def publish_version(stage: str, report: ExportReport) -> None:
    """Move the verified ``stage`` to ``report.path``; with problems, keep it aside instead."""
    import tensorflow as tf

    model_dir = os.path.dirname(report.path)
    if report.problems:
        report.ok = False
        failed = storage.candidate_dir(model_dir, "failed", report.version)
        storage.move_dir(stage, failed)
        raise ExportError(
            f"verification failed, not published ({'; '.join(report.problems)});"
            f" candidate kept at {failed}"
        )
    size = storage.local_dir_size(stage)
    try:
        storage.publish_dir(stage, report.path)  # fails if `final` was created meanwhile
    except (OSError, tf.errors.OpError) as e:
        storage.remove_tree(stage)
        raise ExportError(
            f"cannot publish version {report.version} at {report.path}: {storage.error_text(e)}"
        ) from None
    report.size_bytes = size


def export_hf(student: Student, report: ExportReport, cases: dict, hf_dir: str) -> None:
    """Write the HF checkpoint and check it by a round trip through keras-hub."""
    t0 = time.perf_counter()
    try:
        export_hf_checkpoint(student.model, student.tokenizer, hf_dir, labels=student.labels)
    except HFExportError as e:
        raise ExportError(
            f"SavedModel published at {report.path}, but HF export failed: {e}"
        ) from None
    inputs = next(c["inputs"] for c in cases.values() if c["signature"] == DEFAULT_SIGNATURE)
    report.record_hf(hf_dir, check_hf_round_trip(student.model, hf_dir, inputs))
    report.timings_s["hf"] = time.perf_counter() - t0


def export_tflite(student: Student, report: ExportReport, cases: dict, export_dir: str) -> None:
    """Write ``<export_dir>/<model_name>_tflite/<version>/`` and check its fp32 parity."""
    t0 = time.perf_counter()
    out_dir = os.path.join(export_dir, f"{report.model_name}_tflite", str(report.version))
    report.record_tflite(check_tflite(student.model, student.info, out_dir, cases))
    report.timings_s["tflite"] = time.perf_counter() - t0
