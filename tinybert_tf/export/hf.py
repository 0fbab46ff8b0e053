"""Hugging Face BERT checkpoint export for keras-hub BERT students.

keras-hub 0.32 can *read* Hugging Face BERT checkpoints
(``keras_hub/src/utils/transformers/convert_bert.py``) but cannot write them. This module
is the inverse of that converter: it writes ``config.json``, ``model.safetensors``,
``vocab.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` so that

* PyTorch users can ``transformers.AutoModel.from_pretrained(dir)`` (encoder students are
  written as ``BertModel``; classifier students as ``BertForSequenceClassification`` with a
  ``bert.`` prefix plus ``classifier.weight``/``classifier.bias``), and
* ``keras_hub.models.BertBackbone.from_preset(dir)`` reloads the encoder bit for bit
  (:func:`check_hf_round_trip`).

Weight layout (keras-hub -> HF; ``H`` hidden, ``N`` heads, ``D = H / N``):

* query/key/value kernel ``[H, N, D]`` -> ``encoder.layer.i.attention.self.{query,key,value}
  .weight`` ``[H, H]`` (reshape to ``[H, H]``, transpose); bias ``[N, D]`` -> ``[H]``.
* attention output kernel ``[N, D, H]`` -> ``attention.output.dense.weight`` ``[H, H]``.
* every Dense kernel ``[in, out]`` -> ``*.weight`` ``[out, in]`` (transpose).
* LayerNorm ``gamma``/``beta`` -> ``*.LayerNorm.weight``/``*.LayerNorm.bias``.
* embeddings (token, position ``[max_len, H]``, segment) are copied as they are.

keras-hub BERT uses the tanh approximation of GELU, so the config says
``"hidden_act": "gelu_new"`` (HF's tanh GELU); the students were trained with it, and PyTorch
then computes the same function.
"""

from __future__ import annotations

import json
import os

import numpy as np

from tinybert_tf.errors import UserError
from tinybert_tf.export.assets import check_label_count

HF_WEIGHTS_FILE = "model.safetensors"
# The task layout, shared with the reader (`hf_load`): a task checkpoint keeps the encoder's keys
# under ENCODER_PREFIX; the pooler is keras-hub's `pooled_dense`; the logits Dense is the task's
# `output_dense`, its kernel [H, C] stored as `classifier.weight` [C, H] + `classifier.bias` [C].
ENCODER_PREFIX = "bert."
POOLER = "pooler.dense"
CLASSIFIER = "classifier"
SEQUENCE_ARCHITECTURE = "BertForSequenceClassification"
TOKEN_ARCHITECTURE = "BertForTokenClassification"
ENCODER_ARCHITECTURE = "BertModel"
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


class HFExportError(UserError):
    """Raised with a one-line message when a model cannot be written in HF BERT format."""


def _np(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, np.float32)


def split_student(model):
    """Return ``(backbone, head_dense_or_None)`` for a ``BertBackbone`` or ``BertTextClassifier``.

    ``head_dense`` is the ``logits`` Dense layer with kernel ``[H, num_classes]``.
    """
    import keras_hub

    if isinstance(model, keras_hub.models.BertBackbone):
        return model, None
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras_hub.models.BertBackbone) and hasattr(model, "output_dense"):
        return backbone, model.output_dense
    raise HFExportError(
        f"HF export supports BertBackbone and BertTextClassifier students, got "
        f"{type(model).__name__}"
    )


def backbone_state_dict(backbone, prefix: str = "") -> dict[str, np.ndarray]:
    """Map a keras-hub ``BertBackbone``'s variables to HF ``BertModel`` tensors (float32).

    Returns:
        ``{hf_key: array}``, e.g. ``encoder.layer.0.attention.self.query.weight`` ``[H, H]``.
    """
    hidden = backbone.hidden_dim
    sd: dict[str, np.ndarray] = {}

    def put(key, value):
        sd[prefix + key] = np.ascontiguousarray(value, dtype=np.float32)

    put("embeddings.word_embeddings.weight", _np(backbone.get_layer("token_embedding").embeddings))
    put(
        "embeddings.position_embeddings.weight",
        _np(backbone.get_layer("position_embedding").position_embeddings),
    )
    put(
        "embeddings.token_type_embeddings.weight",
        _np(backbone.get_layer("segment_embedding").embeddings),
    )
    ln = backbone.get_layer("embeddings_layer_norm")
    put("embeddings.LayerNorm.weight", _np(ln.gamma))
    put("embeddings.LayerNorm.bias", _np(ln.beta))

    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        for key, value in _layer_state(block, hidden).items():
            put(f"encoder.layer.{i}.{key}", value)

    pooled = backbone.get_layer("pooled_dense")
    put(f"{POOLER}.weight", _np(pooled.kernel).T)
    put(f"{POOLER}.bias", _np(pooled.bias))
    return sd


def _layer_state(block, hidden: int) -> dict[str, np.ndarray]:
    """HF tensors of one keras-hub ``TransformerEncoder`` block, keyed below ``encoder.layer.i.``."""
    attn = block._self_attention_layer
    sd = {}
    for name, dense in (
        ("query", attn.query_dense),
        ("key", attn.key_dense),
        ("value", attn.value_dense),
    ):
        # keras kernel [H_in, N, D] -> [H_in, H_out] -> HF [H_out, H_in]
        sd[f"attention.self.{name}.weight"] = _np(dense.kernel).reshape(hidden, -1).T
        sd[f"attention.self.{name}.bias"] = _np(dense.bias).reshape(-1)
    # keras kernel [N, D, H_out] -> [H_in, H_out] -> HF [H_out, H_in]
    out_kernel = _np(attn.output_dense.kernel)
    sd["attention.output.dense.weight"] = out_kernel.reshape(-1, out_kernel.shape[-1]).T
    sd["attention.output.dense.bias"] = _np(attn.output_dense.bias).reshape(-1)
    sd["attention.output.LayerNorm.weight"] = _np(block._self_attention_layer_norm.gamma)
    sd["attention.output.LayerNorm.bias"] = _np(block._self_attention_layer_norm.beta)
    sd["intermediate.dense.weight"] = _np(block._feedforward_intermediate_dense.kernel).T
    sd["intermediate.dense.bias"] = _np(block._feedforward_intermediate_dense.bias)
    sd["output.dense.weight"] = _np(block._feedforward_output_dense.kernel).T
    sd["output.dense.bias"] = _np(block._feedforward_output_dense.bias)
    sd["output.LayerNorm.weight"] = _np(block._feedforward_layer_norm.gamma)
    sd["output.LayerNorm.bias"] = _np(block._feedforward_layer_norm.beta)
    return sd


def hf_config(backbone, head=None, labels=None) -> dict:
    """HF ``config.json`` dict for a keras-hub ``BertBackbone`` (+ optional logits head)."""
    config = {
        "architectures": [ENCODER_ARCHITECTURE],
        "model_type": "bert",
        "vocab_size": int(backbone.vocabulary_size),
        "hidden_size": int(backbone.hidden_dim),
        "num_hidden_layers": int(backbone.num_layers),
        "num_attention_heads": int(backbone.num_heads),
        "intermediate_size": int(backbone.intermediate_dim),
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": float(backbone.dropout),
        "attention_probs_dropout_prob": float(backbone.dropout),
        "max_position_embeddings": int(backbone.max_sequence_length),
        "type_vocab_size": int(backbone.num_segments),
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if head is not None:
        num_labels = int(_np(head.kernel).shape[-1])
        names = list(labels) if labels else [f"LABEL_{i}" for i in range(num_labels)]
        check_label_count(len(names), num_labels, HFExportError)
        config["architectures"] = [SEQUENCE_ARCHITECTURE]
        config["num_labels"] = num_labels
        config["id2label"] = {str(i): n for i, n in enumerate(names)}
        config["label2id"] = {n: i for i, n in enumerate(names)}
        config["problem_type"] = "regression" if num_labels == 1 else "single_label_classification"
    return config


def export_hf_checkpoint(model, tokenizer, out_dir: str, labels=None) -> str:
    """Write a Hugging Face BERT checkpoint of a keras-hub student.

    Args:
        model: ``keras_hub.models.BertBackbone`` or ``BertTextClassifier``.
        tokenizer: the student's ``keras_hub.models.BertTokenizer`` (``vocab.txt`` source).
        out_dir: directory to create (may exist; files in it are overwritten).
        labels: optional class names for ``id2label`` (classifier only).

    Returns:
        ``out_dir``.
    """
    import tensorflow as tf
    from safetensors.numpy import save

    backbone, head = split_student(model)
    try:
        tf.io.gfile.makedirs(out_dir)
    except (OSError, tf.errors.OpError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "message", e)
        raise HFExportError(f"cannot create hf_dir {out_dir!r}: {reason}") from None
    prefix = ENCODER_PREFIX if head is not None else ""
    sd = backbone_state_dict(backbone, prefix)
    if head is not None:
        sd[f"{CLASSIFIER}.weight"] = np.ascontiguousarray(_np(head.kernel).T)
        sd[f"{CLASSIFIER}.bias"] = np.ascontiguousarray(_np(head.bias))
    with tf.io.gfile.GFile(os.path.join(out_dir, HF_WEIGHTS_FILE), "wb") as f:
        f.write(save(sd, metadata={"format": "pt"}))
    config = hf_config(backbone, head, labels)
    config["pad_token_id"] = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    _write_json(os.path.join(out_dir, "config.json"), config)

    vocab = list(tokenizer.get_vocabulary())
    with tf.io.gfile.GFile(os.path.join(out_dir, "vocab.txt"), "w") as f:
        f.write("".join(tok + "\n" for tok in vocab))
    lowercase = bool(getattr(tokenizer, "lowercase", False))
    tok_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        # keras-hub's WordPieceTokenizer only strips accents when asked to.
        "strip_accents": bool(getattr(tokenizer, "strip_accents", False)),
        "tokenize_chinese_chars": True,
        "model_max_length": int(backbone.max_sequence_length),
        **SPECIAL_TOKENS,
    }
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), tok_config)
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), SPECIAL_TOKENS)
    return out_dir


def _write_json(path: str, value: dict) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True))


def check_hf_round_trip(model, hf_dir: str, inputs: dict) -> float:
    """Reload ``hf_dir`` through keras-hub's own HF converter and compare with ``model``.

    Args:
        model: the exported student (backbone or classifier).
        hf_dir: directory written by :func:`export_hf_checkpoint`.
        inputs: ``{"token_ids", "segment_ids", "padding_mask"}`` int32 ``[batch, seq]``.

    Returns:
        max abs difference over ``sequence_output`` ``[b, s, H]``, ``pooled_output`` ``[b, H]``
        and, for a classifier, the logits ``[b, C]`` recomputed from the safetensors head.
    """
    import keras_hub
    import tensorflow as tf
    from safetensors.numpy import load

    backbone, head = split_student(model)
    reloaded = keras_hub.models.BertBackbone.from_preset(hf_dir)
    inputs = {k: np.asarray(v, np.int32) for k, v in inputs.items()}
    ref = {k: np.asarray(v) for k, v in backbone(inputs, training=False).items()}
    got = {k: np.asarray(v) for k, v in reloaded(inputs, training=False).items()}
    diff = max(float(np.max(np.abs(ref[k] - got[k]))) for k in ("sequence_output", "pooled_output"))
    if head is not None:
        with tf.io.gfile.GFile(os.path.join(hf_dir, HF_WEIGHTS_FILE), "rb") as f:
            sd = load(f.read())
        weight, bias = sd[f"{CLASSIFIER}.weight"], sd[f"{CLASSIFIER}.bias"]
        hf_logits = got["pooled_output"] @ weight.T + bias
        hf_logits = np.asarray(head.activation(hf_logits))
        ref_logits = np.asarray(model(inputs, training=False))
        diff = max(diff, float(np.max(np.abs(ref_logits - hf_logits))))
    return diff
