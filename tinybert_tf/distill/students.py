"""Student encoders: TinyBERT presets sized from the teacher, and DistilBERT-style init from teacher layers."""

from __future__ import annotations

import keras_hub
import numpy as np

from tinybert_tf.distill import features

# Architecture of each preset; vocabulary size and max length always come from the teacher.
PRESETS = {
    # TinyBERT-4 (Jiao et al. 2020): 14.5 M parameters with a 30,522-token vocabulary.
    "tinybert_4l_312h": dict(num_layers=4, hidden_dim=312, num_heads=12, intermediate_dim=1200),
    # TinyBERT-6: BERT-base width, half the depth.
    "tinybert_6l_768h": dict(num_layers=6, hidden_dim=768, num_heads=12, intermediate_dim=3072),
    # For tests and CI: 2 layers, hidden 32.
    "tiny_2l_32h": dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64),
}


def build(
    spec,
    teacher=None,
    vocabulary_size=None,
    max_sequence_length=None,
    dropout=0.1,
    dtype=None,
):
    """A randomly initialised `BertBackbone` student.

    spec: a name in `PRESETS` or a dict with num_layers, hidden_dim, num_heads, intermediate_dim.
    The vocabulary size and max length are taken from `teacher` (a keras-hub backbone or task
    model) unless given, so the student reads the teacher's tokenizer output unchanged.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"Unknown student preset {spec!r}; choose one of {sorted(PRESETS)}.")
        spec = PRESETS[spec]
    if teacher is not None:
        backbone = features.backbone_of(teacher)
        vocabulary_size = vocabulary_size or backbone.vocabulary_size
        max_sequence_length = max_sequence_length or backbone.max_sequence_length
    if vocabulary_size is None or max_sequence_length is None:
        raise ValueError("Pass teacher= or both vocabulary_size= and max_sequence_length=.")
    if spec["hidden_dim"] % spec["num_heads"]:
        raise ValueError(
            f"hidden_dim {spec['hidden_dim']} is not divisible by num_heads {spec['num_heads']}."
        )
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size,
        max_sequence_length=max_sequence_length,
        dropout=dropout,
        dtype=dtype,
        **spec,
    )


def teacher_layer_choice(teacher_layers, student_layers):
    """Evenly spaced teacher layers starting at 0: every other layer when the student is half as
    deep (DistilBERT takes [0, 2, 4, 6, 8, 10] of 12)."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(
            f"A student initialised from the teacher needs 1..{teacher_layers} layers, "
            f"got {student_layers}."
        )
    return [int(i * teacher_layers / student_layers) for i in range(student_layers)]


def init_from_teacher(teacher, num_layers, layers=None, dropout=None, dtype=None):
    """DistilBERT-style student: the teacher's architecture with `num_layers` layers, its embeddings,
    pooler and the chosen transformer layers copied from the teacher.

    teacher: a `BertBackbone` (or task model wrapping one). `layers`: teacher layer indices to copy
    (default `teacher_layer_choice`). Returns a new backbone; the teacher is not modified.
    dtype: the student's dtype policy, default the global one (the run's precision), never the
    teacher's: a frozen teacher may be pure bfloat16, a student's variables are float32
    (`dtypes`).
    """
    source = features.backbone_of(teacher)
    if type(source) is not keras_hub.models.BertBackbone:
        raise TypeError(
            f"init_from_teacher copies BertBackbone layers; got {type(source).__name__}."
        )
    layers = list(layers) if layers is not None else teacher_layer_choice(
        len(source.transformer_layers), num_layers
    )
    if len(layers) != num_layers:
        raise ValueError(f"layers={layers} names {len(layers)} layers, need {num_layers}.")
    config = source.get_config()
    config.update(num_layers=num_layers, dtype=dtype)
    config.pop("name", None)
    config.pop("trainable", None)
    if dropout is not None:
        config["dropout"] = dropout
    student = keras_hub.models.BertBackbone.from_config(config)
    for name in ("token_embedding", "position_embedding", "segment_embedding",
                 "embeddings_layer_norm", "pooled_dense"):
        _copy_weights(getattr(source, name), getattr(student, name))
    for s_index, t_index in enumerate(layers):
        _copy_weights(source.transformer_layers[t_index], student.transformer_layers[s_index])
    return student


def _copy_weights(src, dst):
    src_w = src.get_weights()
    dst_w = dst.get_weights()
    if [w.shape for w in src_w] != [w.shape for w in dst_w]:
        raise ValueError(
            f"Cannot copy {src.name} into {dst.name}: shapes differ "
            "(init_from_teacher needs the student to have the teacher's width)."
        )
    dst.set_weights([np.array(w) for w in src_w])


def count_params(model):
    """Number of weights of a model (all variables, trainable or not)."""
    return int(sum(np.prod(v.shape) for v in model.weights))
