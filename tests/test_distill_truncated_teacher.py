"""The teacher runs only as deep as the recipe reads it (`Recipe.teacher_depth`): its feature
lists stop there, and the losses and the student's gradients equal those of the full teacher."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

import tinybert_tf
from tinybert_tf.distill import recipes


@pytest.mark.parametrize("recipe, layer_map, expected", [
    (recipes.get("minilm_v2", teacher_layer=7), (), 8),
    (recipes.get("minilm", teacher_layer=-1), (), 12),
    (recipes.get("minilm", teacher_layer=-3), (), 10),
    (recipes.get("tinybert_general", layer_map=(1, 3, 5)), (1, 3, 5), 6),
    (recipes.get("tinybert_general"), (3, 7, 11), 12),
    (recipes.get("tinybert_sentence", layer_map=(1, 3, 5)), (1, 3, 5), 12),  # last hidden state
    (recipes.get("distilbert_task"), (9, 10, 11), 12),  # the teacher's head
    (recipes.get("tinybert_task_prediction"), (), 12),
])
def test_teacher_depth_is_the_deepest_layer_a_term_reads(recipe, layer_map, expected):
    assert recipe.teacher_depth(layer_map, 12) == expected


def _losses_and_grads(d, x):
    with tf.GradientTape() as tape:
        terms = d.compute_terms(x, None, None, d.teacher_features(x), d.student_features(x))
    grads = tape.gradient(terms["loss"], d.student.trainable_variables + [
        v for p in d.projections for v in p.trainable_variables])
    return ({k: float(v) for k, v in terms.items()},
            [keras.ops.convert_to_numpy(g) for g in grads])


@pytest.mark.parametrize("recipe, depth", [
    (recipes.get("minilm_v2", relation_heads=4, teacher_layer=1), 2),  # 2/3 of the teacher
    (recipes.get("minilm", teacher_layer=-2), 2),  # negative: counted from the full depth
    (recipes.get("tinybert_general", layer_map=(0, 1)), 2),
])
def test_truncated_teacher_gives_the_full_teachers_losses_and_gradients(recipe, depth):
    teacher = tiny.backbone(num_layers=3, hidden_dim=32, num_heads=2, seed=0)
    student = tiny.backbone(num_layers=2, hidden_dim=24, num_heads=2, intermediate_dim=48, seed=1,
                            dropout=0.0)  # the same student forward twice
    d = tinybert_tf.Distiller(teacher, student, recipe)
    x = {k: tf.constant(v) for k, v in tiny.inputs(batch=4, seq=12).items()}
    assert d.teacher_depth == depth
    feats = d.teacher_features(x)
    assert len(feats["hidden_states"]) == len(feats["attention_scores"]) == depth
    assert "sequence_output" not in feats  # the last layer never ran
    losses, grads = _losses_and_grads(d, x)
    d.teacher_depth = None  # the full teacher, as before truncation
    assert len(d.teacher_features(x)["hidden_states"]) == 3
    full_losses, full_grads = _losses_and_grads(d, x)
    assert losses == full_losses and losses["loss"] > 0
    for g, full in zip(grads, full_grads, strict=True):
        np.testing.assert_array_equal(g, full)
    assert any(np.abs(g).max() > 0 for g in grads)
