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

from tinybert_tf.export_checks import (  # noqa: F401  (verify_export re-exported)
    build_parity_cases,
    check_tflite,
    finish_saved_model_cli,
    run_fresh_process_checks,
    start_saved_model_cli,
    verify_export,
)
from tinybert_tf.export_hf import HFExportError, check_hf_round_trip, export_hf_checkpoint

DEFAULT_SIGNATURE = "serving_default"
TEXT_SIGNATURE = "serving_text"
TEXT_PAIR_SIGNATURE = "serving_text_pair"
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
WARMUP_FILE = "tf_serving_warmup_requests"
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


class ExportError(ValueError):
    """Bad input or failed verification; the message is a single line."""


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
def load_student(preset_dir: str):
    """Load ``(model, tokenizer)`` from a keras-hub preset directory.

    A preset with ``task.json`` is a task model (e.g. ``BertTextClassifier``), otherwise a
    backbone (e.g. ``BertBackbone``). ``tokenizer`` is ``None`` if the preset has none.
    """
    if not isinstance(preset_dir, (str, os.PathLike)) or not os.path.isdir(preset_dir):
        raise ExportError(f"student preset directory does not exist: {preset_dir!r}")
    preset_dir = os.fspath(preset_dir)
    if not os.path.isfile(os.path.join(preset_dir, "config.json")):
        raise ExportError(f"not a keras-hub preset (no config.json): {preset_dir!r}")
    import keras_hub

    try:
        if os.path.isfile(os.path.join(preset_dir, "task.json")):
            from tinybert_tf import heads

            model = heads.load_task_model(preset_dir)
        else:
            model = keras_hub.models.Backbone.from_preset(preset_dir)
        tokenizer = None
        if os.path.isfile(os.path.join(preset_dir, "tokenizer.json")):
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset_dir)
    except Exception as e:  # keras-hub raises many types; keep the CLI message to one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(
            f"cannot load student preset {preset_dir!r}: {type(e).__name__}: {msg}"
        ) from e
    return model, tokenizer


@dataclasses.dataclass
class StudentInfo:
    """Task kind, backbone, max length and named outputs of a student."""

    task: str  # "encoder" | "classifier" | "regression"
    backbone: object
    max_sequence_length: int
    num_classes: int | None
    outputs: dict  # output name -> (dtype, shape string)
    head_activation: str | None = None


def describe_student(model) -> StudentInfo:
    """Classify ``model`` as encoder / classifier / regression and list its named outputs."""
    import keras

    names = set(getattr(model, "input_names", None) or [])
    if isinstance(model.input, dict):
        names = set(model.input)
    if not set(INPUT_NAMES) <= names:
        raise ExportError(
            f"student {type(model).__name__} does not take {list(INPUT_NAMES)} inputs"
        )
    backbone = getattr(model, "backbone", None)
    if backbone is None:  # a backbone itself
        if not isinstance(model.output, dict) or "sequence_output" not in model.output:
            raise ExportError(f"unsupported student {type(model).__name__}: no sequence_output")
        outs = {"sequence_output": ("float32", "[batch, seq, hidden]")}
        if "pooled_output" in model.output:
            outs["pooled_output"] = ("float32", "[batch, hidden]")
        return StudentInfo("encoder", model, int(model.max_sequence_length), None, outs)
    num_classes = int(getattr(model, "num_classes", model.output.shape[-1]))
    act = keras.activations.serialize(getattr(model, "activation", None) or "linear")
    act = act if isinstance(act, str) else str(act.get("config", act))
    max_len = int(backbone.max_sequence_length)
    if num_classes == 1:
        outs = {"logits": ("float32", "[batch, 1]"), "score": ("float32", "[batch]")}
        return StudentInfo("regression", backbone, max_len, 1, outs, act)
    if act == "softmax":
        outs = {"probabilities": ("float32", f"[batch, {num_classes}]")}
    else:
        outs = {
            "logits": ("float32", f"[batch, {num_classes}]"),
            "probabilities": ("float32", f"[batch, {num_classes}]"),
        }
    return StudentInfo("classifier", backbone, max_len, num_classes, outs, act)


def next_version(export_dir: str, model_name: str) -> int:
    """Smallest integer above every existing integer version dir of ``model_name`` (1 if none)."""
    model_dir = os.path.join(export_dir, model_name)
    versions = []
    if os.path.isdir(model_dir):
        versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def _read_labels(labels, info: StudentInfo):
    if labels is None:
        if info.task == "classifier":
            return [f"LABEL_{i}" for i in range(info.num_classes)], "default"
        return None, None
    if isinstance(labels, (str, os.PathLike)):
        try:
            with open(labels, encoding="utf-8") as f:
                labels = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ExportError(f"cannot read labels JSON {os.fspath(labels)!r}: {e}") from None
    if isinstance(labels, dict):
        labels = labels.get("labels", labels)
    if isinstance(labels, dict):  # {"0": "neg", "1": "pos"}
        labels = [labels[k] for k in sorted(labels, key=int)]
    labels = [str(x) for x in labels]
    if info.task == "encoder":
        raise ExportError("labels given, but the student is an encoder with no task head")
    if len(labels) != info.num_classes:
        raise ExportError(f"got {len(labels)} labels for a head with {info.num_classes} outputs")
    return labels, "caller"


# ----------------------------------------------------------------------------- graph
def student_variable_dict(model) -> dict:
    """``{variable path: tf.Variable}`` for every weight of ``model`` (checkpoint key names)."""
    out = {}
    for i, v in enumerate(model.weights):
        key = getattr(v, "path", None) or f"variable_{i}"
        out[key if key not in out else f"{key}_{i}"] = getattr(v, "value", v)
    return out


def build_serving_module(
    model, tokenizer=None, text_signature=True, text_sequence_length=None, outputs=None
):
    """Wrap ``model`` in a ``tf.Module`` with named ``tf.function`` signatures.

    Returns:
        ``(module, signatures, signature_table)`` where ``signatures`` maps signature names
        to concrete functions for ``tf.saved_model.save`` and ``signature_table`` maps them
        to ``{"inputs": {name: [dtype, shape]}, "outputs": {...}}``.
    """
    import keras_hub
    import tensorflow as tf

    info = describe_student(model)
    wanted = list(info.outputs) if outputs is None else list(outputs)
    for name in wanted:
        if name not in info.outputs:
            what = "an encoder with no task head" if info.task == "encoder" else info.task
            raise ExportError(
                f"student is {what}: it has no {name!r} output (available: "
                f"{', '.join(info.outputs)})"
            )
    max_len = info.max_sequence_length

    def named_outputs(y):
        if info.task == "encoder":
            return {k: y[k] for k in wanted}
        y = tf.cast(y, tf.float32)
        every = {"logits": y, "score": y[:, 0]}
        every["probabilities"] = y if info.head_activation == "softmax" else tf.nn.softmax(y)
        return {k: every[k] for k in wanted}

    def forward(token_ids, segment_ids, padding_mask):
        y = model(
            {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            training=False,
        )
        return named_outputs(y)

    module = tf.Module(name="tinybert_student")
    # Track exactly the student's variables (keras.Variable -> tf.Variable); nothing else
    # (optimizer, teacher, metrics) reaches the checkpoint.
    module.student_variables = student_variable_dict(model)
    spec = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def serving_default(token_ids, segment_ids, padding_mask):
        seq_len = tf.shape(token_ids)[1]
        checks = [
            tf.debugging.assert_less_equal(
                seq_len,
                tf.constant(max_len, tf.int32),
                message=f"input sequence longer than this model's max_sequence_length={max_len};"
                " shorten or split it (serving_text truncates)",
            ),
            tf.debugging.assert_equal(
                tf.shape(segment_ids),
                tf.shape(token_ids),
                message="segment_ids must have the shape of token_ids",
            ),
            tf.debugging.assert_equal(
                tf.shape(padding_mask),
                tf.shape(token_ids),
                message="padding_mask must have the shape of token_ids",
            ),
        ]
        with tf.control_dependencies(checks):
            token_ids = tf.identity(token_ids)
        return forward(token_ids, segment_ids, padding_mask)

    # Only as signatures (not also as module attributes): attaching the tf.functions too
    # would store every function twice in saved_model.pb.
    signatures = {DEFAULT_SIGNATURE: serving_default.get_concrete_function()}
    table = {
        DEFAULT_SIGNATURE: {
            "inputs": {n: ["int32", f"[batch, seq<={max_len}]"] for n in INPUT_NAMES},
            "outputs": {k: list(info.outputs[k]) for k in wanted},
        }
    }
    if text_signature:
        if tokenizer is None:
            raise ExportError("text_signature=True needs the student's tokenizer")
        text_len = min(int(text_sequence_length or max_len), max_len)
        packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=text_len,
            start_value=tokenizer.start_token_id,
            end_value=tokenizer.end_token_id,
            pad_value=tokenizer.pad_token_id,
            truncate="round_robin",
        )
        pad_id = tokenizer.pad_token_id

        def pack_and_run(*segments):
            token_ids, segment_ids = packer(tuple(tokenizer(s) for s in segments))
            token_ids = tf.cast(token_ids, tf.int32)
            padding_mask = tf.cast(tf.not_equal(token_ids, pad_id), tf.int32)
            return forward(token_ids, tf.cast(segment_ids, tf.int32), padding_mask)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serving_text(text):
            return pack_and_run(text)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="text"),
                tf.TensorSpec([None], tf.string, name="text_b"),
            ]
        )
        def serving_text_pair(text, text_b):
            return pack_and_run(text, text_b)

        signatures[TEXT_SIGNATURE] = serving_text.get_concrete_function()
        signatures[TEXT_PAIR_SIGNATURE] = serving_text_pair.get_concrete_function()
        out_table = {k: list(info.outputs[k]) for k in wanted}
        out_table = {k: [d, s.replace("seq", str(text_len))] for k, (d, s) in out_table.items()}
        table[TEXT_SIGNATURE] = {"inputs": {"text": ["string", "[batch]"]}, "outputs": out_table}
        table[TEXT_PAIR_SIGNATURE] = {
            "inputs": {"text": ["string", "[batch]"], "text_b": ["string", "[batch]"]},
            "outputs": out_table,
        }
        module.text_sequence_length = tf.constant(text_len)
    return module, signatures, table


# ----------------------------------------------------------------------------- assets
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
