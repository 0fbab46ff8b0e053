"""The serving graph of an export: student loading and description, signatures.

`publish` orchestrates, verifies and reports (see its docstring for the layout); `assets`
writes what goes beside the graph.
"""

from __future__ import annotations

import dataclasses
import os

from tinybert_tf.errors import UserError, first_line

DEFAULT_SIGNATURE = "serving_default"
TEXT_SIGNATURE = "serving_text"
TEXT_PAIR_SIGNATURE = "serving_text_pair"
INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
# Exports compute in float32 whatever the training run's precision: a SavedModel that any CPU,
# GPU or TF Serving build runs at full speed and that matches the preset's float32 weights.
SERVING_DTYPE = "float32"


class ExportError(UserError):
    """Bad input or failed verification; the message is a single line."""


def load_student(preset_dir: str):
    """Load ``(model, tokenizer)`` from a keras-hub preset directory.

    A preset with ``task.json`` is a task model (e.g. ``BertTextClassifier``), otherwise a
    backbone (e.g. ``BertBackbone``). ``tokenizer`` is ``None`` if the preset has none.
    The directory may be any `tf.io.gfile` path (keras-hub reads ``gs://`` presets too).
    """
    import tensorflow as tf

    def has_file(name):
        return tf.io.gfile.exists(os.path.join(preset_dir, name))

    if not isinstance(preset_dir, (str, os.PathLike)) or not tf.io.gfile.isdir(preset_dir):
        raise ExportError(f"student preset directory does not exist: {preset_dir!r}")
    preset_dir = os.fspath(preset_dir)
    if not has_file("config.json"):
        raise ExportError(f"not a keras-hub preset (no config.json): {preset_dir!r}")
    import keras_hub

    from tinybert_tf.distill import dtypes

    try:
        if has_file("task.json"):
            from tinybert_tf.distill import heads

            model = heads.load_task_model(preset_dir, dtype=SERVING_DTYPE)
        else:
            model = dtypes.load_preset(keras_hub.models.Backbone, preset_dir, SERVING_DTYPE)
        tokenizer = None
        if has_file("tokenizer.json"):
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset_dir)
    except Exception as e:  # keras-hub raises many types; keep the CLI message to one line
        raise ExportError(
            f"cannot load student preset {preset_dir!r}: {type(e).__name__}: {first_line(e, '')}"
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
    if len(model.output.shape) == 3:  # [batch, seq, classes]: a token classifier (NER)
        raise ExportError(f"{type(model).__name__} is a token classifier; the SavedModel export "
                          "serves sequence classifiers, regressors and encoders only")
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
    import tensorflow as tf

    model_dir = os.path.join(os.fspath(export_dir), model_name)
    versions = []
    if tf.io.gfile.isdir(model_dir):  # gs:// lists sub-directories with a trailing "/"
        names = (d.rstrip("/") for d in tf.io.gfile.listdir(model_dir))
        versions = [int(d) for d in names if d.isdigit()]
    return max(versions, default=0) + 1


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
    import tensorflow as tf

    info = describe_student(model)
    wanted = _wanted_outputs(info, outputs)
    forward = forward_fn(model, info, wanted)
    module = tf.Module(name="tinybert_student")
    # Track exactly the student's variables (keras.Variable -> tf.Variable); nothing else
    # (optimizer, teacher, metrics) reaches the checkpoint.
    module.student_variables = student_variable_dict(model)
    max_len = info.max_sequence_length
    # Only as signatures (not also as module attributes): attaching the tf.functions too
    # would store every function twice in saved_model.pb.
    signatures = {DEFAULT_SIGNATURE: _ids_signature(forward, max_len).get_concrete_function()}
    text_len = None
    if text_signature:
        if tokenizer is None:
            raise ExportError("text_signature=True needs the student's tokenizer")
        text_len = min(int(text_sequence_length or max_len), max_len)
        signatures.update(_text_signatures(forward, tokenizer, text_len))
        module.text_sequence_length = tf.constant(text_len)
    return module, signatures, _signature_table(info, wanted, text_len)


def _wanted_outputs(info: StudentInfo, outputs) -> list:
    """The output names to serve: ``outputs`` (each one the student has) or all of them."""
    wanted = list(info.outputs) if outputs is None else list(outputs)
    for name in wanted:
        if name not in info.outputs:
            what = "an encoder with no task head" if info.task == "encoder" else info.task
            raise ExportError(
                f"student is {what}: it has no {name!r} output (available: "
                f"{', '.join(info.outputs)})"
            )
    return wanted


def forward_fn(model, info: StudentInfo, wanted):
    """``forward(token_ids, segment_ids, padding_mask) -> {name: float32 tensor}``: the
    student's ``wanted`` named outputs (``info.outputs``), for a graph function."""
    import tensorflow as tf

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

    return forward


def ids_input_spec():
    """The token-id signatures' inputs: int32 ``[batch, seq]`` named ``INPUT_NAMES``."""
    import tensorflow as tf

    return [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]


def _ids_signature(forward, max_len: int):
    """``serving_default``: ``forward`` on token ids, refusing inputs over ``max_len``."""
    import tensorflow as tf

    @tf.function(input_signature=ids_input_spec())
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

    return serving_default


def _text_signatures(forward, tokenizer, text_len: int) -> dict:
    """``serving_text`` / ``serving_text_pair`` concrete functions: tokenize and pack in-graph
    to ``text_len`` tokens (truncating), then ``forward``."""
    import tensorflow as tf

    from tinybert_tf.data.packing import segment_packer

    packer = segment_packer(tokenizer, text_len)
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

    return {
        TEXT_SIGNATURE: serving_text.get_concrete_function(),
        TEXT_PAIR_SIGNATURE: serving_text_pair.get_concrete_function(),
    }


def _signature_table(info: StudentInfo, wanted, text_len: int | None) -> dict:
    """``{signature: {"inputs": {name: [dtype, shape]}, "outputs": {...}}}``; the text
    signatures only when ``text_len`` is set."""
    max_len = info.max_sequence_length
    outputs = {k: list(info.outputs[k]) for k in wanted}
    table = {
        DEFAULT_SIGNATURE: {
            "inputs": {n: ["int32", f"[batch, seq<={max_len}]"] for n in INPUT_NAMES},
            "outputs": outputs,
        }
    }
    if text_len is not None:
        text_out = {k: [d, s.replace("seq", str(text_len))] for k, (d, s) in outputs.items()}
        table[TEXT_SIGNATURE] = {"inputs": {"text": ["string", "[batch]"]}, "outputs": text_out}
        table[TEXT_PAIR_SIGNATURE] = {
            "inputs": {"text": ["string", "[batch]"], "text_b": ["string", "[batch]"]},
            "outputs": text_out,
        }
    return table
