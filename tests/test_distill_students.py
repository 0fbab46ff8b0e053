"""Student presets and DistilBERT-style initialisation from teacher layers."""

import keras_hub
import numpy as np
import pytest
import tiny

from tinybert_tf.distill import students


def test_tinybert_4l_parameter_count_matches_paper():
    model = students.build("tinybert_4l_312h", vocabulary_size=30522, max_sequence_length=512)
    n = students.count_params(model)
    assert 14.3e6 < n < 14.6e6, n  # paper: 14.5 M
    assert model.num_layers == 4 and model.hidden_dim == 312 and model.num_heads == 12


def test_build_takes_vocab_and_length_from_teacher():
    teacher = tiny.backbone(max_sequence_length=16)
    student = students.build("tiny_2l_32h", teacher=teacher)
    assert student.vocabulary_size == teacher.vocabulary_size
    assert student.max_sequence_length == 16


def test_build_errors():
    with pytest.raises(ValueError, match="Unknown student preset"):
        students.build("tinybert_9l", vocabulary_size=10, max_sequence_length=8)
    with pytest.raises(ValueError, match="Pass teacher="):
        students.build("tiny_2l_32h")
    spec = dict(num_layers=1, hidden_dim=30, num_heads=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="not divisible"):
        students.build(spec, vocabulary_size=10, max_sequence_length=8)


def test_init_from_teacher_copies_every_other_layer():
    teacher = tiny.backbone(num_layers=4, seed=3)
    student = students.init_from_teacher(teacher, 2)
    assert students.teacher_layer_choice(12, 6) == [0, 2, 4, 6, 8, 10]
    assert student.num_layers == 2
    for s_i, t_i in enumerate([0, 2]):
        for a, b in zip(student.transformer_layers[s_i].weights,
                        teacher.transformer_layers[t_i].weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(
        student.token_embedding.embeddings.numpy(), teacher.token_embedding.embeddings.numpy()
    )
    # A 4-layer student copied from a 4-layer teacher is the teacher.
    same = students.init_from_teacher(teacher, 4)
    x = tiny.inputs()
    np.testing.assert_allclose(same(x)["pooled_output"], teacher(x)["pooled_output"], atol=1e-6)


def test_init_from_teacher_accepts_task_models_and_checks_layers():
    clf = keras_hub.models.BertTextClassifier(tiny.backbone(num_layers=4), 2, preprocessor=None)
    assert students.init_from_teacher(clf, 2, layers=[1, 3]).num_layers == 2
    with pytest.raises(ValueError, match="needs 1..4 layers"):
        students.init_from_teacher(clf, 5)
