"""TokenClassifier: preset round trip, feature-view logits, training with token weights, distillation."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
import tiny

import tinybert_tf
from tinybert_tf.distill import features, heads, recipes

NUM_TAGS = 5


def token_batch(batch=4, seq=12, seed=0):
    """tiny.inputs plus labels [B, S] (-100 on [CLS], padding and every third piece) and weights."""
    x = tiny.inputs(batch=batch, seq=seq, seed=seed)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_TAGS, size=(batch, seq)).astype("int32")
    ignore = (x["padding_mask"] == 0) | (np.arange(seq) == 0) | (np.arange(seq) % 3 == 2)
    y[ignore] = heads.IGNORE_LABEL
    return x, y, (y != heads.IGNORE_LABEL).astype("float32")


def token_model(num_layers=2, seed=0, dropout=0.1):
    return heads.TokenClassifier(tiny.backbone(num_layers=num_layers, seed=seed), NUM_TAGS,
                                 dropout=dropout)


def test_preset_round_trip_gives_identical_outputs(tmp_path):
    model = token_model()
    x, _, _ = token_batch()
    before = model(x).numpy()
    assert before.shape == (4, 12, NUM_TAGS)
    model.save_to_preset(str(tmp_path))
    for reloaded in (heads.TokenClassifier.from_preset(str(tmp_path)),
                     heads.load_task_model(str(tmp_path))):
        assert type(reloaded) is heads.TokenClassifier and reloaded.preprocessor is None
        assert reloaded.get_config()["num_classes"] == NUM_TAGS
        np.testing.assert_array_equal(reloaded(x).numpy(), before)
    # num_classes= puts a fresh head on the saved backbone (keras-hub classifier semantics).
    fresh = heads.TokenClassifier.from_preset(str(tmp_path), num_classes=3)
    assert fresh(x).shape == (4, 12, 3)
    np.testing.assert_array_equal(fresh.backbone.weights[0].numpy(),
                                  model.backbone.weights[0].numpy())


def test_from_backbone_or_text_classifier_preset_needs_num_classes(tmp_path):
    backbone_dir = tiny.write_teacher(tmp_path / "backbone")
    clf_dir = tiny.write_teacher(tmp_path / "clf", num_classes=2)
    for preset in (backbone_dir, clf_dir):
        with pytest.raises(ValueError, match="pass num_classes="):
            heads.TokenClassifier.from_preset(preset)
        model = heads.TokenClassifier.from_preset(preset, num_classes=NUM_TAGS)
        assert model(tiny.inputs(seq=8)).shape == (4, 8, NUM_TAGS)
    assert isinstance(heads.load_task_model(clf_dir), keras_hub.models.BertTextClassifier)
    with pytest.raises(ValueError, match="no task.json"):
        heads.load_task_model(backbone_dir)


def test_feature_view_head_logits_equal_model_call():
    model = token_model()
    x, _, _ = token_batch()
    feats = features.encoder_features(model, x)
    np.testing.assert_allclose(features.head_logits(model, feats, x).numpy(), model(x).numpy(),
                               atol=1e-5)


def test_token_loss_ignores_unlabelled_positions():
    x, y, w = token_batch()
    logits = np.random.default_rng(1).normal(size=(*y.shape, NUM_TAGS)).astype("float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, np.maximum(y, 0)[..., None], -1)[..., 0]
    expected = (nll * w).sum() / w.sum()
    got = heads.token_loss()(y, logits, sample_weight=w)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    np.testing.assert_allclose(float(heads.token_loss()(y, logits)), expected, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the unused BERT pooler
def test_fit_with_sample_weight_lowers_loss():
    model = token_model(dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y, w = token_batch(batch=8)
    data = tf.data.Dataset.from_tensors((x, y, w)).repeat()
    start = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    model.fit(data, steps_per_epoch=15, epochs=1, verbose=0)
    end = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert end["loss"] < 0.5 * start["loss"], (start, end)
    assert end["accuracy"] > start["accuracy"]


@pytest.mark.parametrize("recipe", ["tinybert_task_intermediate", "tinybert_task_prediction"])
def test_distiller_fits_on_token_data(recipe):
    teacher = token_model(num_layers=4, seed=0)
    student = token_model(num_layers=2, seed=1)
    distiller = tinybert_tf.Distiller(teacher, student, recipes.get(recipe))
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y, w = token_batch()
    data = tf.data.Dataset.from_tensors((x, y, w)).repeat()
    history = distiller.fit(data, steps_per_epoch=3, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    term = "pred_loss" if recipe.endswith("prediction") else "att_loss"
    assert term in history


def test_pred_term_averages_over_weighted_tokens_only():
    teacher = token_model(num_layers=4, seed=0)
    student = token_model(num_layers=2, seed=1)
    distiller = tinybert_tf.Distiller(teacher, student, "tinybert_task_prediction")
    x, y, w = token_batch()
    t_feats = distiller.teacher_features(x)
    s_feats = distiller.student_features(x, training=False)
    got = distiller.compute_terms(x, y, w, t_feats, s_feats)["pred"]
    t = tf.nn.softmax(t_feats["logits"]).numpy()
    log_s = tf.nn.log_softmax(s_feats["logits"]).numpy()
    per_token = -(t * log_s).sum(-1)
    np.testing.assert_allclose(float(got), (per_token * w).sum() / w.sum(), rtol=1e-5)
