"""Hugging Face BERT checkpoints as task models, heads included: the reader `hf.py` writes for.

A transformers directory (``config.json`` with ``model_type`` and ``architectures``,
``model.safetensors``, ``vocab.txt``, usually ``tokenizer_config.json``) loads as

* ``BertForSequenceClassification`` -> keras-hub ``BertTextClassifier``: HF's ``bert.pooler``
  is the backbone's ``pooled_dense``, ``classifier.*`` the task's ``output_dense``;
* ``BertForTokenClassification`` -> ``heads.TokenClassifier``: ``classifier.*`` on the sequence
  output (the checkpoint has no pooler: the backbone keeps a new one, which the head never reads);
* an encoder (``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining``) -> its backbone under a
  new head of ``num_classes`` (fine-tuning).

``id2label`` gives the label names in id order. The encoder goes through keras-hub's own
converter (``keras_hub/src/utils/transformers/convert_bert.py``); this module adds the head in
`hf.py`'s layout (``ENCODER_PREFIX``, ``POOLER``, ``CLASSIFIER``).

keras-hub's BERT computes the tanh approximation of GELU, as every keras-hub BERT preset
converted from Google's erf-GELU checkpoints does; a checkpoint saying ``"hidden_act": "gelu"``
(HF's default, erf) runs with it too. The two differ by at most 4.7e-4 per activation; on the
tiny test models' logits (magnitude ~5) that is 1.3e-3 to 1.9e-3 (tests/test_export_hf_load.py).
``gelu_new`` / ``gelu_pytorch_tanh`` (what `hf.py` writes) match to float32 rounding.
Every error is a one-line `UserError` naming the fix.
"""

from __future__ import annotations

import inspect
import json
import os

from tinybert_tf.distill.presets import is_hf_config
from tinybert_tf.errors import UserError, first_line
from tinybert_tf.export.hf import (
    CLASSIFIER,
    ENCODER_ARCHITECTURE,
    ENCODER_PREFIX,
    HF_WEIGHTS_FILE,
    POOLER,
    SEQUENCE_ARCHITECTURE,
    TOKEN_ARCHITECTURE,
)

SHARDS_INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
HEADS = {SEQUENCE_ARCHITECTURE: "sequence", TOKEN_ARCHITECTURE: "token"}
ENCODERS = (ENCODER_ARCHITECTURE, "BertForMaskedLM", "BertForPreTraining")
_GELUS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
_SUPPORTED = (f"{SEQUENCE_ARCHITECTURE} or {TOKEN_ARCHITECTURE} (heads included), or an encoder "
              f"({', '.join(ENCODERS)}) to fine-tune")


def _read_json(path):
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def is_hf_dir(path) -> bool:
    """Is `path` a directory holding a transformers ``config.json``?"""
    import tensorflow as tf

    config = os.path.join(str(path), "config.json")
    try:
        if not tf.io.gfile.exists(config):
            return False
        return is_hf_config(_read_json(config))
    except (ValueError, UnicodeDecodeError, tf.errors.OpError):
        return False


def is_bert_dir(path) -> bool:
    """Is `path` a Hugging Face BERT directory (``model_type`` "bert"), which this module loads
    whole? Other families' encoders are keras-hub's; only their heads are refused here."""
    return is_hf_dir(path) and read_config(path).get("model_type") == "bert"


def read_config(path, what="teacher") -> dict:
    """The parsed ``config.json`` of an HF dir."""
    try:
        return _read_json(os.path.join(path, "config.json"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path}/config.json is not valid JSON ({err}).") from None


def architecture(config) -> str:
    """The model class ``config.json`` names (``architectures[0]``; ``BertModel`` if none)."""
    names = config.get("architectures") or [ENCODER_ARCHITECTURE]
    return str(names[0])


def task_kind(config, path, what="teacher") -> str:
    """``"sequence"``, ``"token"`` or ``"encoder"`` for a BERT HF config; any other model a
    one-line error naming what loads."""
    arch = architecture(config)
    if config.get("model_type") == "bert" and arch in HEADS:
        return HEADS[arch]
    if config.get("model_type") == "bert" and arch in ENCODERS:
        return "encoder"
    raise UserError(f"{what} {path} is a Hugging Face {arch} (model_type "
                    f"{config.get('model_type')!r}); pass a BERT checkpoint: {_SUPPORTED}.")


def _converter(config, path, what):
    from keras_hub.src.utils.transformers.preset_loader import TransformersPresetLoader

    try:
        return TransformersPresetLoader(path, config).converter
    except ValueError:
        raise UserError(f"{what} {path}: keras-hub converts no Hugging Face model_type "
                        f"{config.get('model_type')!r}; pass a BERT checkpoint: "
                        f"{_SUPPORTED}.") from None


def backbone_config(path, what="teacher", config=None) -> dict:
    """keras-hub backbone kwargs of an HF dir (``num_layers``, ``num_heads``, ``hidden_dim``, ...
    by keras-hub's converter; BERT's dropout and segment count added); a model keras-hub does
    not convert, or a BERT checkpoint it cannot compute, is a one-line error."""
    config = read_config(path, what) if config is None else config
    converter = _converter(config, path, what)
    if len(inspect.signature(converter.convert_backbone_config).parameters) != 1:
        return {}  # a converter that needs the backbone class: sizes known once loaded
    try:
        out = dict(converter.convert_backbone_config(config))
    except KeyError as err:
        raise UserError(f"{what} {path}/config.json lacks {err}; pass the config.json "
                        "transformers saved with the model.") from None
    if config.get("model_type") != "bert":
        return out
    task_kind(config, path, what)
    act, position = config.get("hidden_act", "gelu"), config.get("position_embedding_type",
                                                                  "absolute")
    if act not in _GELUS or position != "absolute":
        raise UserError(f"{what} {path}: hidden_act {act!r}, position_embedding_type "
                        f"{position!r}; keras-hub's BERT computes GELU with absolute "
                        "positions only, so pass a checkpoint trained with those.")
    return {**out, "dropout": float(config.get("hidden_dropout_prob", 0.1)),
            "num_segments": int(config.get("type_vocab_size", 2))}


def label_names(path, what="teacher"):
    """The label names of an HF task checkpoint in id order (``id2label``; transformers'
    ``LABEL_i`` for ``num_labels`` when it has none); None for an encoder."""
    config = read_config(path, what)
    if task_kind(config, path, what) == "encoder":
        return None
    return _names(config, path, what)


def _names(config, path, what):
    id2label = config.get("id2label")
    if not id2label:
        return [f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))]
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (ValueError, AttributeError):
        by_id = {}
    if sorted(by_id) != list(range(len(id2label))):
        raise UserError(f"{what} {path}/config.json: id2label must map the ids 0..N-1 to "
                        f"names, got {id2label!r}; fix it or save the model again.")
    return [by_id[i] for i in range(len(by_id))]


def load_tokenizer(path, what="teacher"):
    """The tokenizer of a BERT HF dir as transformers reads it: ``vocab.txt``, ``do_lower_case``
    (default True) and ``strip_accents`` (None: as ``do_lower_case``) from
    ``tokenizer_config.json`` when there is one; keras-hub's for other tokenizers."""
    import keras_hub
    import tensorflow as tf

    tok_path = os.path.join(path, TOKENIZER_CONFIG)
    settings = _read_json(tok_path) if tf.io.gfile.exists(tok_path) else {}
    vocab = os.path.join(path, "vocab.txt")
    try:
        if "XLMRoberta" in str(settings.get("tokenizer_class", "")):
            return keras_hub.tokenizers.Tokenizer.from_preset(path)
        if not tf.io.gfile.exists(vocab):
            raise UserError(f"{what} {path} has no vocab.txt; save the tokenizer beside the "
                            "model (tokenizer.save_pretrained(dir)).")
        with tf.io.gfile.GFile(vocab) as f:
            tokens = [line.rstrip("\r\n") for line in f]
        lowercase = bool(settings.get("do_lower_case", True))
        strip = settings.get("strip_accents")
        return keras_hub.tokenizers.BertTokenizer(
            vocabulary=tokens, lowercase=lowercase,
            strip_accents=lowercase if strip is None else bool(strip))
    except (ValueError, OSError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(
            f"{what} {path}: its tokenizer does not load ({first_line(err)}).") from None


def _weight_keys(path, what):
    import tensorflow as tf

    index = os.path.join(path, SHARDS_INDEX)
    if tf.io.gfile.exists(index):
        return set(_read_json(index).get("weight_map", {}))
    file = os.path.join(path, HF_WEIGHTS_FILE)
    if not tf.io.gfile.exists(file):
        raise UserError(f"{what} {path} has no {HF_WEIGHTS_FILE} (a PyTorch .bin checkpoint?); "
                        "save it again with model.save_pretrained(dir, safe_serialization=True).")
    from keras_hub.src.utils.preset_utils import get_file
    from safetensors import safe_open

    with safe_open(get_file(path, HF_WEIGHTS_FILE), framework="np") as f:
        return set(f.keys())


def _key(keys, name):
    """The stored key of `name`: as it is, or under the encoder's prefix."""
    return next((k for k in (name, ENCODER_PREFIX + name) if k in keys), None)


def _weights(path, keys, what):
    """keras-hub's safetensors reader for its converter, with each tensor's shape checked (a
    one-line error naming the key); a checkpoint without a pooler (a token classifier's, or an
    encoder saved without one) leaves the new backbone's as it is."""
    from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader

    class Weights(SafetensorLoader):
        def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
            if hf_weight_key.startswith(POOLER) and not any(
                    k == hf_weight_key or k.endswith("." + hf_weight_key) for k in keys):
                return
            tensor = self.get_tensor(hf_weight_key)
            shape = tuple(keras_variable.shape)
            try:
                value = hook_fn(tensor, list(shape)) if hook_fn else tensor
            except ValueError:  # a reshape that does not fit
                value = None
            if value is None or tuple(value.shape) != shape:
                raise UserError(f"{what} {path}: {hf_weight_key} is {list(tensor.shape)}, which "
                                f"does not fit the model config.json describes; pass a "
                                "checkpoint whose config.json matches its weights.")
            keras_variable.assign(value)

    return Weights(path)


def _head_shapes(kind, hidden, classes):
    """{HF name: shape} of what a head needs: the logits Dense and, on the pooled output, the
    pooler."""
    shapes = {f"{CLASSIFIER}.weight": (classes, hidden), f"{CLASSIFIER}.bias": (classes,)}
    if kind == "sequence":
        shapes.update({f"{POOLER}.weight": (hidden, hidden), f"{POOLER}.bias": (hidden,)})
    return shapes


def _head(weights, keys, kind, config, path, what):
    """The head's tensors, checked against config.json: ``(weight [C, H], bias [C])``."""
    hidden, classes = int(config["hidden_size"]), len(_names(config, path, what))
    found = {}
    for name, shape in _head_shapes(kind, hidden, classes).items():
        key = _key(keys, name)
        if key is None:
            raise UserError(f"{what} {path}: {HF_WEIGHTS_FILE} has no {name}, which a "
                            f"{architecture(config)} needs; pass the directory "
                            "model.save_pretrained(dir) wrote.")
        found[name] = weights.get_tensor(key)
        if tuple(found[name].shape) != shape:
            raise UserError(f"{what} {path}: {key} is {list(found[name].shape)}, config.json "
                            f"says {list(shape)} (num_labels {classes}, hidden_size {hidden}); "
                            "pass a checkpoint whose config.json matches its weights.")
    return found[f"{CLASSIFIER}.weight"], found[f"{CLASSIFIER}.bias"]


def load_task_model(path, token_level=None, num_classes=None, dtype=None, what="teacher"):
    """A BERT HF dir as a task model (no preprocessor), dtype policy `dtype`.

    num_classes None: the checkpoint's own head (`BertTextClassifier` or `heads.TokenClassifier`
    by its architecture; `token_level` True/False must agree with it); given: the encoder under a
    new head of that many classes (`TokenClassifier` with `token_level`), as keras-hub's
    ``from_preset(num_classes=)`` does. Dropout rates come from config.json.
    """
    import keras_hub

    from tinybert_tf.distill import heads

    config = read_config(path, what)
    kind = task_kind(config, path, what)
    if num_classes is None:
        _check_kind(kind, token_level, config, path, what)
        token_level = kind == "token"
    keys = _weight_keys(path, what)
    backbone = keras_hub.models.BertBackbone(**backbone_config(path, what, config), dtype=dtype)
    with _weights(path, keys, what) as weights:
        head = None if num_classes is not None else _head(weights, keys, kind, config, path, what)
        _convert_encoder(backbone, weights, config, path, what)
    dropout = config.get("classifier_dropout")
    dropout = float(config.get("hidden_dropout_prob", 0.1) if dropout is None else dropout)
    cls = heads.TokenClassifier if token_level else keras_hub.models.BertTextClassifier
    classes = num_classes if head is None else head[1].shape[0]
    model = cls(backbone, classes, preprocessor=None, dropout=dropout)
    if head is not None:
        model.output_dense.kernel.assign(head[0].T)
        model.output_dense.bias.assign(head[1])
    return model


def _check_kind(kind, token_level, config, path, what):
    if kind == "encoder":
        raise UserError(f"{what} {path} is a Hugging Face {architecture(config)}, an encoder "
                        "without a task head; fine-tune it first (--config.mode=finetune "
                        f"--config.teacher={path}) or pass a {SEQUENCE_ARCHITECTURE} or "
                        f"{TOKEN_ARCHITECTURE} dir.")
    if token_level is not None and bool(token_level) != (kind == "token"):
        task = "token" if token_level else "sequence"
        want = TOKEN_ARCHITECTURE if token_level else SEQUENCE_ARCHITECTURE
        raise UserError(f"{what} {path} is a {architecture(config)} but the task is {task} "
                        f"classification; pass a {want} dir.")


def _convert_encoder(backbone, weights, config, path, what):
    from keras_hub.src.utils.transformers import convert_bert
    from safetensors import SafetensorError

    try:
        convert_bert.convert_weights(backbone, weights, config)
    except (ValueError, KeyError, SafetensorError) as err:
        raise UserError(f"{what} {path}: its encoder weights do not load ({first_line(err)}); pass "
                        "the directory model.save_pretrained(dir) wrote.") from None


class TaskLoader:
    """What `dtypes.load_preset(cls, path, dtype, **kwargs)` calls for an HF dir:
    ``from_preset(path, dtype=, preprocessor=None, num_classes=)`` -> `load_task_model`."""

    def __init__(self, token_level=None, what="teacher"):
        self.token_level, self.what = token_level, what

    def from_preset(self, path, dtype=None, preprocessor=None, num_classes=None):
        del preprocessor  # task models load without one, as the package's presets do
        return load_task_model(path, self.token_level, num_classes, dtype, self.what)
