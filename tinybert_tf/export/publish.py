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
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

from tinybert_tf.export.checks import (
    build_parity_cases,
    check_tflite,
    finish_saved_model_cli,
    run_fresh_process_checks,
    start_saved_model_cli,
)
from tinybert_tf.export.hf import HFExportError, check_hf_round_trip, export_hf_checkpoint
from tinybert_tf.export.serving import (
    DEFAULT_SIGNATURE,
    INPUT_NAMES,
    WARMUP_FILE,
    ExportError,
    _read_labels,
    build_serving_module,
    describe_student,
    load_student,
    next_version,
    write_warmup,
)

# Parity of the served graph with the Keras model: max|diff| <= PARITY_TOL + PARITY_RTOL * max|y|.
# Tiny students land near 1e-8. A real 6-layer, 384-wide encoder (MiniLM-L6) differs by up to
# ~7e-5 on sequence outputs of magnitude ~6, because graph-mode kernels sum in another order
# (the same Keras model in eager vs tf.function already differs by ~3e-5), hence the
# relative term.
PARITY_TOL = 1e-5
PARITY_RTOL = 1e-4
TFLITE_TOL = 1e-4
HF_TOL = 1e-5


def parity_tolerance(scale: float) -> float:
    """Allowed max|diff| for outputs whose largest magnitude is ``scale``."""
    return PARITY_TOL + PARITY_RTOL * float(scale)


@dataclasses.dataclass
class ExportReport:
    """What :func:`export` wrote and what its checks measured (also printed by ``summary``)."""

    path: str
    model_name: str
    version: int
    task: str
    max_sequence_length: int
    signatures: dict
    ops: dict = dataclasses.field(default_factory=dict)
    min_tf_serving_version: str | None = None
    saved_model_cli: str = ""
    parity: dict = dataclasses.field(default_factory=dict)
    parity_scale: dict = dataclasses.field(default_factory=dict)
    warmup_records: int = 0
    warmup_replayed: int = 0
    hf_dir: str | None = None
    hf_max_abs_diff: float | None = None
    tflite: dict | None = None
    size_bytes: int = 0
    latency_ms: dict = dataclasses.field(default_factory=dict)
    timings_s: dict = dataclasses.field(default_factory=dict)
    verified: bool = False
    ok: bool = True
    problems: list = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """Human-readable multi-line report."""
        lines = [
            f"exported {self.model_name} v{self.version} ({self.task}) -> {self.path}",
            f"  size {self.size_bytes / 1e6:.2f} MB, max_sequence_length {self.max_sequence_length}",
        ]
        for name, sig in self.signatures.items():
            lines.append(f"  signature {name}: {list(sig['inputs'])} -> {list(sig['outputs'])}")
        if self.ops:
            lines.append(
                f"  ops: {self.ops.get('num_ops', 0)} types; core TF only: "
                f"{not self.ops.get('tf_text_ops') and not self.ops.get('unknown_ops')}; "
                f"TF Text: {self.ops.get('tf_text_ops', [])}; unknown: "
                f"{self.ops.get('unknown_ops', [])}"
            )
            lines.append(f"  minimum TF Serving: {self.min_tf_serving_version}")
        for case, diff in self.parity.items():
            lat = self.latency_ms.get(case)
            lat = f"; {lat['median_ms']:.2f} ms median at batch {lat['batch']}" if lat else ""
            tol = parity_tolerance(self.parity_scale.get(case, 0.0))
            lines.append(f"  parity {case}: max|diff| {diff:.3g} (tol {tol:.3g}){lat}")
        lines.append(f"  warm-up: {self.warmup_records} records, {self.warmup_replayed} replayed")
        if self.hf_dir:
            lines.append(
                f"  HF checkpoint {self.hf_dir}: round trip max|diff| {self.hf_max_abs_diff}"
            )
        if self.tflite:
            for k, v in self.tflite.items():
                lines.append(f"  tflite {k}: {v}")
        if self.saved_model_cli:
            lines.append("  saved_model_cli show --all:")
            lines.extend("    " + ln for ln in self.saved_model_cli.rstrip().splitlines())
        if self.timings_s:
            lines.append(
                "  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_s.items())
            )
        lines.append("  OK" if self.ok else f"  PROBLEMS: {self.problems}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading
def _versions_info():
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


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# ----------------------------------------------------------------------------- export
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
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"export needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
    if isinstance(model_or_preset_dir, (str, os.PathLike)):
        model, preset_tokenizer = load_student(model_or_preset_dir)
        tokenizer = tokenizer or preset_tokenizer
    elif isinstance(model_or_preset_dir, tuple):
        model, tokenizer = model_or_preset_dir
    else:
        model = model_or_preset_dir
    if tokenizer is None and getattr(model, "preprocessor", None) is not None:
        tokenizer = getattr(model.preprocessor, "tokenizer", None)
    info = describe_student(model)
    label_list, label_source = _read_labels(labels, info)
    if text_sequence_length is None and getattr(model, "preprocessor", None) is not None:
        text_sequence_length = getattr(model.preprocessor, "sequence_length", None)
    if hf_dir and os.path.exists(os.path.join(hf_dir, "config.json")):
        raise ExportError(f"hf_dir {hf_dir!r} already holds a checkpoint; not overwriting it")
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ExportError(f"invalid model_name {model_name!r}")

    model_dir = os.path.join(os.fspath(export_dir), model_name)
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, f".write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise ExportError(
            f"export_dir {os.fspath(export_dir)!r} is not writable: {e.strerror or e}"
        ) from None
    if version is None:
        version = next_version(export_dir, model_name)
    version = int(version)
    if version < 0:
        raise ExportError(f"version must be a non-negative integer, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final):
        raise ExportError(
            f"version {version} of {model_name!r} already exists at {final}; versions are never "
            f"overwritten (next free: {next_version(export_dir, model_name)})"
        )

    module, signatures, table = build_serving_module(
        model, tokenizer, text_signature, text_sequence_length, outputs
    )
    text_len = int(module.text_sequence_length.numpy()) if text_signature else None
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}-{int(time.time())}")
    try:
        t0 = time.perf_counter()
        tf.saved_model.save(module, tmp, signatures=signatures)
        timings = {"save": time.perf_counter() - t0}

        cases = build_parity_cases(
            model, tokenizer, info.max_sequence_length, text_len, list(table), sample_texts
        )
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        n_warm = 0
        if warmup:
            n_warm = write_warmup(os.path.join(extra, WARMUP_FILE), model_name, cases)
        if label_list:
            with open(os.path.join(extra, "labels.txt"), "w", encoding="utf-8") as f:
                f.write("".join(x + "\n" for x in label_list))
        if tokenizer is not None:
            with open(os.path.join(extra, "vocab.txt"), "w", encoding="utf-8") as f:
                f.write("".join(t + "\n" for t in tokenizer.get_vocabulary()))
        config = {
            "model_name": model_name,
            "version": version,
            "task": info.task,
            "max_sequence_length": info.max_sequence_length,
            "text_sequence_length": text_len,
            "text_truncation": "round_robin (serving_text* truncate to text_sequence_length)",
            "input_names": list(INPUT_NAMES),
            "output_names": list(table[DEFAULT_SIGNATURE]["outputs"]),
            "signatures": table,
            "labels": label_list,
            "labels_source": label_source,
            "head_activation": info.head_activation,
            "tokenizer": None
            if tokenizer is None
            else {
                "vocab_file": "vocab.txt",
                "lowercase": bool(getattr(tokenizer, "lowercase", False)),
                "cls_token_id": int(tokenizer.start_token_id),
                "sep_token_id": int(tokenizer.end_token_id),
                "pad_token_id": int(tokenizer.pad_token_id),
            },
            "exported_with": _versions_info(),
            "num_variables": len(module.student_variables),
        }
        report = ExportReport(
            path=final,
            model_name=model_name,
            version=version,
            task=info.task,
            max_sequence_length=info.max_sequence_length,
            signatures=table,
            warmup_records=n_warm,
        )
        timings["assets"] = time.perf_counter() - t0 - timings["save"]
        if verify:
            t1 = time.perf_counter()
            cli = start_saved_model_cli(tmp)  # runs alongside the fresh-process checks
            fresh = run_fresh_process_checks(tmp, cases, model_name)
            report.ops = fresh["ops"]
            report.min_tf_serving_version = fresh["ops"]["min_tf_serving_version"]
            report.parity = fresh["parity"]
            report.parity_scale = fresh["parity_scale"]
            report.warmup_replayed = fresh["warmup_replayed"]
            report.latency_ms = fresh["latency"]
            report.saved_model_cli = finish_saved_model_cli(cli).replace(tmp, final)
            report.verified = True
            timings["verify"] = time.perf_counter() - t1
            for case, diff in report.parity.items():
                tol = parity_tolerance(report.parity_scale[case])
                if not diff <= tol:
                    report.problems.append(f"parity {case}: {diff:.3g} > {tol:.3g}")
            if report.ops.get("unknown_ops"):
                report.problems.append(f"ops outside TF + TF Text: {report.ops['unknown_ops']}")
            if warmup and report.warmup_replayed != n_warm:
                report.problems.append(f"warm-up replayed {report.warmup_replayed}/{n_warm}")
            config["ops"] = {k: report.ops[k] for k in ("tf_text_ops", "unknown_ops")}
        config["min_tf_serving_version"] = report.min_tf_serving_version
        with open(os.path.join(extra, "export_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
    except Exception as e:  # never leave a half-written candidate behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ExportError):
            raise
        msg = (str(e).strip().splitlines() or [""])[0]
        raise ExportError(
            f"export of {model_name!r} v{version} failed: {type(e).__name__}: {msg}"
        ) from e
    if report.problems:
        report.ok = False
        failed = tmp.replace(".tmp-", ".failed-")
        os.rename(tmp, failed)
        raise ExportError(
            f"verification failed, not published ({'; '.join(report.problems)});"
            f" candidate kept at {failed}"
        )
    try:
        os.rename(tmp, final)  # atomic publish; fails if someone created `final` meanwhile
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"cannot publish version {version} at {final}: {e.strerror}") from None
    report.size_bytes = _dir_size(final)

    report.timings_s = timings
    if hf_dir:
        t1 = time.perf_counter()
        try:
            export_hf_checkpoint(model, tokenizer, hf_dir, labels=label_list)
        except HFExportError as e:
            raise ExportError(
                f"SavedModel published at {final}, but HF export failed: {e}"
            ) from None
        report.hf_dir = hf_dir
        inputs = next(c["inputs"] for c in cases.values() if c["signature"] == DEFAULT_SIGNATURE)
        report.hf_max_abs_diff = check_hf_round_trip(model, hf_dir, inputs)
        if not report.hf_max_abs_diff <= HF_TOL:
            report.ok = False
            report.problems.append(f"HF round trip {report.hf_max_abs_diff:.3g} > {HF_TOL:g}")
        timings["hf"] = time.perf_counter() - t1
    if tflite:
        t1 = time.perf_counter()
        tfl_dir = os.path.join(os.fspath(export_dir), f"{model_name}_tflite", str(version))
        report.tflite = check_tflite(model, info, tfl_dir, cases)
        # fp32 must match (1e-4, plus the same relative slack as the SavedModel check);
        # int8 (dynamic-range weights) is only reported.
        tol = TFLITE_TOL + PARITY_RTOL * report.tflite["output_scale"]
        report.tflite["fp32_tolerance"] = tol
        if not report.tflite["fp32_max_abs_diff"] <= tol:
            report.ok = False
            diff = report.tflite["fp32_max_abs_diff"]
            report.problems.append(f"TFLite fp32 parity {diff:.3g} > {tol:.3g}")
        timings["tflite"] = time.perf_counter() - t1
    if not quiet:
        print(report.summary())
    return report
