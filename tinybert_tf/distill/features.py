"""Feature view of a keras-hub encoder: embeddings, every hidden state, pre-softmax attention scores
and the attention queries, keys and values (MiniLM's relations).

One forward pass through the backbone's *own* layers and weights (never a re-implemented BERT):
the embedding layers are called as the backbone calls them, and each `TransformerEncoder` block is
walked through its own sub-layers so that the attention scores are computed once and the
probabilities derived from them (keras-hub's `return_attention_scores` only exposes probabilities).
The last hidden state equals the backbone's `sequence_output` (tested to 1e-5).

A new backbone family built on keras-hub's `TransformerEncoder` needs one entry in `_EMBEDDERS`
(how it embeds its inputs) and, if it has one, in `_POOLERS`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# Keras' masked softmax fills masked keys with this (float32); -3e4 keeps float16 finite.
_LARGE_NEGATIVE = {"float16": -3e4}


def _embed_token_position_segment(backbone, inputs, training):
    """BERT / ELECTRA: token + position + segment embeddings, LayerNorm, dropout."""
    tokens = backbone.token_embedding(inputs["token_ids"])
    positions = backbone.position_embedding(tokens)
    segments = backbone.segment_embedding(inputs["segment_ids"])
    x = backbone.embeddings_add((tokens, positions, segments))
    x = backbone.embeddings_layer_norm(x)
    x = backbone.embeddings_dropout(x, training=training)
    projection = getattr(backbone, "embeddings_projection", None)
    return projection(x) if projection is not None else x


def _embed_token_position(backbone, inputs, training):
    """RoBERTa / DistilBERT: token-and-position embedding, LayerNorm, dropout (no segments)."""
    x = backbone.embeddings(inputs["token_ids"])
    x = backbone.embeddings_layer_norm(x)
    return backbone.embeddings_dropout(x, training=training)


def _pool_cls_dense(backbone, sequence_output):
    """BERT / ELECTRA pooler: tanh dense on the [CLS] position."""
    return backbone.pooled_dense(sequence_output[:, backbone.cls_token_index, :])


_EMBEDDERS = {
    "BertBackbone": _embed_token_position_segment,
    "ElectraBackbone": _embed_token_position_segment,
    "RobertaBackbone": _embed_token_position,
    "DistilBertBackbone": _embed_token_position,
}
_POOLERS = {"BertBackbone": _pool_cls_dense, "ElectraBackbone": _pool_cls_dense}


def backbone_of(model):
    """The encoder backbone of a keras-hub backbone or task model (e.g. `BertTextClassifier`)."""
    backbone = getattr(model, "backbone", model)
    family = _family(backbone)
    if family is None:
        raise TypeError(
            f"{type(backbone).__name__} is not a supported encoder; tinybert_tf reads "
            f"{sorted(_EMBEDDERS)} (add an embedder to tinybert_tf.distill.features._EMBEDDERS)."
        )
    return backbone


def _family(backbone):
    for cls in type(backbone).__mro__:
        if cls.__name__ in _EMBEDDERS:
            return cls.__name__
    return None


def _encoder_block(layer, x, padding_mask, training):
    """One keras-hub `TransformerEncoder` on its own sub-layers; also returns its attention view.

    x: [B, S, H]; padding_mask: [B, S] (1 = real token).
    Returns (output [B, S, H], {"attention_scores": [B, heads, S, S] scaled, pre-mask,
    "attention_probs": [B, heads, S, S], "queries"/"keys"/"values": [B, S, heads, d] as the
    projections give them, before the 1/sqrt(d) scaling}).
    """
    attention = layer._self_attention_layer
    residual = x
    if layer.normalize_first:
        x = layer._self_attention_layer_norm(x)
    query = attention._query_dense(x)  # [B, S, heads, d]
    key = attention._key_dense(x)
    value = attention._value_dense(x)
    view = {"queries": query, "keys": key, "values": value}
    query = ops.multiply(query, ops.cast(1.0 / math.sqrt(attention._key_dim), query.dtype))
    scores = ops.einsum("bqhd,bkhd->bhqk", query, key)
    key_is_real = ops.cast(padding_mask, "bool")[:, None, None, :]
    fill = _LARGE_NEGATIVE.get(keras.backend.standardize_dtype(scores.dtype), -1e9)
    probs = ops.softmax(ops.where(key_is_real, scores, ops.cast(fill, scores.dtype)), axis=-1)
    dropped = attention._dropout_layer(probs, training=training)
    context = ops.einsum("bhqk,bkhd->bqhd", dropped, value)
    x = attention._output_dense(context)
    x = layer._self_attention_dropout(x, training=training)
    x = x + residual
    if not layer.normalize_first:
        x = layer._self_attention_layer_norm(x)
    residual = x
    if layer.normalize_first:
        x = layer._feedforward_layer_norm(x)
    x = layer._feedforward_intermediate_dense(x)
    x = layer._feedforward_output_dense(x)
    x = layer._feedforward_dropout(x, training=training)
    x = x + residual
    if not layer.normalize_first:
        x = layer._feedforward_layer_norm(x)
    return x, dict(view, attention_scores=scores, attention_probs=probs)


_ATTENTION_VIEW = ("attention_scores", "attention_probs", "queries", "keys", "values")


def encoder_features(model, inputs, training=False, depth=None):
    """Run a keras-hub encoder once and return its feature view.

    inputs: keras-hub dict `{"token_ids", "segment_ids", "padding_mask"}`, each [B, S] int.
    Returns `{"embeddings": [B,S,H], "hidden_states": L x [B,S,H], "attention_scores":
    L x [B,heads,S,S] (scaled q.k, before masking), "attention_probs": L x [B,heads,S,S],
    "queries"/"keys"/"values": L x [B,S,heads,d] (unscaled), "sequence_output": [B,S,H]}` plus
    `"pooled_output": [B,H]` for backbones with a pooler.
    depth: run the embeddings and the first `depth` layers only (the lists then hold `depth`
    entries, and there is no `sequence_output` / `pooled_output`, which are the last layer's);
    None or the layer count: every layer.
    """
    backbone = backbone_of(model)
    family = _family(backbone)
    padding_mask = inputs["padding_mask"]
    x = _EMBEDDERS[family](backbone, inputs, training)
    features = {"embeddings": x, "hidden_states": []}
    features.update({key: [] for key in _ATTENTION_VIEW})
    layers = backbone.transformer_layers
    for layer in layers[:depth]:
        x, view = _encoder_block(layer, x, padding_mask, training)
        features["hidden_states"].append(x)
        for key in _ATTENTION_VIEW:
            features[key].append(view[key])
    if depth is not None and depth < len(layers):
        return features
    features["sequence_output"] = x
    if family in _POOLERS:
        features["pooled_output"] = _POOLERS[family](backbone, x)
    return features


def head_logits(model, features, inputs, training=False):
    """Task-head logits on top of `encoder_features`, or None for a bare backbone.

    Text classifiers (`output_dropout` + `output_dense` on the pooled output) give [B, C];
    masked LMs (`masked_lm_head`) give [B, P, V] at `inputs["mask_positions"]`; token
    classifiers (`tinybert_tf.distill.heads.TokenClassifier`) give [B, S, C].
    """
    if model is backbone_of(model):
        return None
    if hasattr(model, "masked_lm_head"):
        return model.masked_lm_head(features["sequence_output"], inputs["mask_positions"])
    source = "sequence_output" if getattr(model, "token_level", False) else "pooled_output"
    if source not in features:
        source = "sequence_output"
        x = features[source][:, 0, :]
    else:
        x = features[source]
    if hasattr(model, "output_dropout"):
        x = model.output_dropout(x, training=training)
    return model.output_dense(x)


def num_layers(model):
    return len(backbone_of(model).transformer_layers)


def hidden_dim(model):
    return int(backbone_of(model).hidden_dim)


def num_heads(model):
    """Attention heads per layer (of the first layer; keras-hub encoders use one count)."""
    return int(backbone_of(model).transformer_layers[0].num_heads)


def attention_widths(model):
    """`(query/key width, value width)`: heads * head size of the attention projections."""
    attention = backbone_of(model).transformer_layers[0]._self_attention_layer
    heads = num_heads(model)
    return heads * int(attention._key_dim), heads * int(attention._value_dim or attention._key_dim)
