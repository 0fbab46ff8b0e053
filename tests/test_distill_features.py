"""The feature view reproduces the backbone's own outputs and exposes consistent attention."""

import keras
import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.distill import features


def test_last_hidden_state_equals_backbone_output():
    model = tiny.backbone()
    x = tiny.inputs()
    out = model(x)
    feats = features.encoder_features(model, x)
    np.testing.assert_allclose(feats["hidden_states"][-1], out["sequence_output"], atol=1e-5)
    np.testing.assert_allclose(feats["sequence_output"], out["sequence_output"], atol=1e-5)
    np.testing.assert_allclose(feats["pooled_output"], out["pooled_output"], atol=1e-5)
    assert len(feats["hidden_states"]) == 2 and len(feats["attention_scores"]) == 2
    assert tuple(feats["attention_scores"][0].shape) == (4, 2, 12, 12)
    assert tuple(feats["embeddings"].shape) == (4, 12, 32)


def test_attention_probs_are_keras_hub_probabilities_and_softmax_of_scores():
    model = tiny.backbone()
    x = tiny.inputs()
    feats = features.encoder_features(model, x)
    # keras-hub's own post-softmax probabilities for the first layer.
    emb = feats["embeddings"]
    _, probs = model.transformer_layers[0](
        emb, padding_mask=x["padding_mask"], return_attention_scores=True
    )
    np.testing.assert_allclose(feats["attention_probs"][0], probs, atol=1e-6)
    # Probabilities are the masked softmax of the exposed scores (NumPy reference).
    scores = np.asarray(feats["attention_scores"][0])
    masked = np.where(x["padding_mask"][:, None, None, :] > 0, scores, -1e9)
    ref = np.exp(masked - masked.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(feats["attention_probs"][0], ref, atol=1e-6)
    # Scores are q.k / sqrt(d) from the layer's own projections.
    att = model.transformer_layers[0]._self_attention_layer
    q = np.asarray(att._query_dense(emb))
    k = np.asarray(att._key_dense(emb))
    ref_scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_queries_keys_values_are_the_unscaled_projections():
    model = tiny.backbone(num_layers=2, hidden_dim=48, num_heads=12, intermediate_dim=96)
    x = tiny.inputs()
    feats = features.encoder_features(model, x)
    for key in ("queries", "keys", "values"):
        assert len(feats[key]) == 2
        assert [tuple(v.shape) for v in feats[key]] == [(4, 12, 12, 4)] * 2
    # Layer 1's projections applied by hand to its input (layer 0's output).
    att = model.transformer_layers[1]._self_attention_layer
    h0 = feats["hidden_states"][0]
    for key, dense in (("queries", att._query_dense), ("keys", att._key_dense),
                       ("values", att._value_dense)):
        np.testing.assert_allclose(feats[key][1], dense(h0), atol=1e-6)
    # Scaled q.k of layer 0 reproduce its attention scores.
    q, k = np.asarray(feats["queries"][0]), np.asarray(feats["keys"][0])
    ref = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(4)
    np.testing.assert_allclose(feats["attention_scores"][0], ref, atol=1e-5)
    assert features.num_heads(model) == 12 and features.attention_widths(model) == (48, 48)


def test_classifier_head_logits_match_model():
    backbone = tiny.backbone()
    clf = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    x = tiny.inputs()
    feats = features.encoder_features(clf, x)
    logits = features.head_logits(clf, feats, x)
    np.testing.assert_allclose(logits, clf(x), atol=1e-5)


def test_masked_lm_head_logits_match_model():
    backbone = tiny.backbone()
    mlm = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
    x = dict(tiny.inputs(), mask_positions=np.array([[1, 2]] * 4, "int32"))
    feats = features.encoder_features(mlm, x)
    np.testing.assert_allclose(features.head_logits(mlm, feats, x), mlm(x), atol=1e-5)


def test_training_mode_applies_dropout():
    model = tiny.backbone()
    x = tiny.inputs()
    keras.utils.set_random_seed(1)
    a = features.encoder_features(model, x, training=True)["sequence_output"]
    b = features.encoder_features(model, x, training=False)["sequence_output"]
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_unsupported_model_is_a_clear_error():
    with pytest.raises(TypeError, match="not a supported encoder"):
        features.encoder_features(keras.layers.Dense(3), tiny.inputs())
