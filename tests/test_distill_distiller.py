"""Distiller: frozen teacher, trained student + projections, loss terms, precision, save/reload."""

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tiny

import tinybert_tf
from tinybert_tf.distill import features, losses, recipes, students

_dataset = tiny.dataset


def _pair(student_hidden=16, teacher_layers=4):
    teacher = tiny.backbone(num_layers=teacher_layers, hidden_dim=32, seed=0)
    student = tiny.backbone(num_layers=2, hidden_dim=student_hidden, seed=1)
    return teacher, student


def _weights(model):
    return [v.numpy() for v in model.weights]


def test_general_distillation_trains_student_and_projection_only():
    teacher, student = _pair()
    d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
    assert d.layer_map == [1, 3]
    assert len(d.projections) == 1  # shared, as in the official code
    t0, s0, p0 = _weights(teacher), _weights(student), _weights(d.projections[0])
    d.compile(optimizer=keras.optimizers.AdamW(1e-3))
    hist = d.fit(_dataset(steps=3), epochs=2, verbose=0)
    assert {"loss", "emb_loss", "att_loss", "hidden_loss"} <= set(hist.history)
    for a, b in zip(t0, _weights(teacher)):
        np.testing.assert_array_equal(a, b)  # bit-identical
    assert all(np.abs(a - b).max() > 0 for a, b in zip(p0, _weights(d.projections[0])))
    changed = [np.abs(a - b).max() > 0 for a, b in zip(s0, _weights(student))]
    # Every student weight moves except the pooler, which no TinyBERT term reads.
    assert sum(changed) == len(changed) - 2
    trainable = {id(v) for v in d.trainable_variables}
    assert not any(id(v) in trainable for v in teacher.weights)


def test_loss_falls_on_a_fixed_batch():
    teacher, student = _pair()
    d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
    d.compile(optimizer=keras.optimizers.AdamW(3e-3))
    data = _dataset().repeat(30)
    hist = d.fit(data, epochs=1, verbose=0, steps_per_epoch=1)
    first = d.evaluate(_dataset(), verbose=0, return_dict=True)["loss"]
    d.fit(data, epochs=30, steps_per_epoch=1, verbose=0)
    last = d.evaluate(_dataset(), verbose=0, return_dict=True)["loss"]
    assert last < 0.5 * first, (first, last, hist.history)


def test_terms_match_manual_computation():
    teacher, student = _pair()
    d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
    x = tiny.inputs()
    t = features.encoder_features(teacher, x)
    s = features.encoder_features(student, x)
    terms = d.compute_terms(x, None, None, t, s)
    proj = d.projections[0]
    att = sum(
        losses.attention_mse(s["attention_scores"][i], t["attention_scores"][j], x["padding_mask"])
        for i, j in enumerate([1, 3])
    )
    hid = sum(
        np.mean((np.asarray(proj(s["hidden_states"][i])) - np.asarray(t["hidden_states"][j])) ** 2)
        for i, j in enumerate([1, 3])
    )
    emb = np.mean((np.asarray(proj(s["embeddings"])) - np.asarray(t["embeddings"])) ** 2)
    np.testing.assert_allclose(terms["att"], att, rtol=1e-5)
    np.testing.assert_allclose(terms["hidden"], hid, rtol=1e-5)
    np.testing.assert_allclose(terms["emb"], emb, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], att + hid + emb, rtol=1e-5)


def test_identical_models_have_zero_intermediate_loss():
    teacher = tiny.backbone(seed=0)
    student = tiny.backbone(seed=0)
    d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
    assert d.projections == []
    d.compile()
    out = d.evaluate(_dataset(), verbose=0, return_dict=True)
    assert out["loss"] == pytest.approx(0.0, abs=1e-10)


def test_step_module_is_picked_by_backend():
    from tinybert_tf.distill import distiller, tf_step

    assert distiller.step_module() is tf_step
    d = tinybert_tf.Distiller(*_pair(), "tinybert_general")
    assert d._step_module is tf_step
    with pytest.raises(ValueError, match="no train step for the Keras backend 'torch'; use "
                                         "KERAS_BACKEND=tensorflow or jax"):
        distiller.step_module("torch")


def test_uniform_layer_map_error_names_the_fix():
    teacher = tiny.backbone(num_layers=4)
    student = tiny.backbone(num_layers=3)
    with pytest.raises(ValueError, match="use layer_map='last' or an explicit list of 3"):
        tinybert_tf.Distiller(teacher, student, "tinybert_general")
    d = tinybert_tf.Distiller(teacher, student, recipes.get("tinybert_general", layer_map=[0, 2, 3]))
    assert d.layer_map == [0, 2, 3]


def test_prediction_recipe_soft_targets_at_temperature():
    teacher = tiny.classifier(tiny.backbone(seed=0))
    student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1))
    d = tinybert_tf.Distiller(
        teacher, student, recipes.get("tinybert_task_prediction", temperature=2.0)
    )
    assert d.projections == []  # no intermediate term, no projection
    x = tiny.inputs()
    terms = d.compute_terms(
        x, None, None, d.teacher_features(x), d.student_features(x, training=False)
    )
    ref = losses.soft_cross_entropy(student(x), teacher(x), 2.0)
    np.testing.assert_allclose(terms["pred"], ref, rtol=1e-5)
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    w0 = _weights(student.output_dense)
    d.fit(_dataset(steps=2), epochs=1, verbose=0)
    assert np.abs(w0[0] - _weights(student.output_dense)[0]).max() > 0


def test_prediction_recipe_needs_no_layer_map():
    # A 3-layer student of a 4-layer teacher has no uniform map; the prediction step must not care.
    teacher = tiny.classifier(tiny.backbone(num_layers=4, seed=0))
    student = tiny.classifier(tiny.backbone(num_layers=3, hidden_dim=16, seed=1))
    d = tinybert_tf.Distiller(teacher, student, "tinybert_task_prediction")
    assert d.layer_map == ()
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    w0 = _weights(student.output_dense)
    d.fit(_dataset(extra=lambda x: (np.zeros(len(x["token_ids"]), "int32"),)), verbose=0)
    assert np.abs(w0[0] - _weights(student.output_dense)[0]).max() > 0


def test_prediction_recipe_requires_heads():
    with pytest.raises(ValueError, match="bare backbone"):
        tinybert_tf.Distiller(tiny.backbone(), tiny.backbone(), "tinybert_task_prediction")


def test_distilbert_recipe_with_masked_lm_models():
    teacher = keras_hub.models.BertMaskedLM(tiny.backbone(num_layers=4, seed=0), preprocessor=None)
    student_backbone = students.init_from_teacher(teacher, 2)
    student = keras_hub.models.BertMaskedLM(student_backbone, preprocessor=None)

    def mlm_targets(x):
        n = len(x["token_ids"])
        positions = np.tile(np.array([[1, 2]], "int32"), (n, 1))
        labels = np.take_along_axis(x["token_ids"], positions, 1)
        x["mask_positions"] = positions
        x["token_ids"][:, 1:3] = 4
        return labels, np.ones_like(labels, "float32")

    data = _dataset(steps=2, extra=mlm_targets)
    d = tinybert_tf.Distiller(teacher, student, "distilbert")
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = d.fit(data, epochs=3, verbose=0)
    assert {"kd_loss", "mlm_loss", "cos_loss"} <= set(hist.history)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # The kd term is computed on every real token (DistilBERT's default).
    x, y, w = next(iter(data))
    x = {k: v.numpy() for k, v in x.items()}
    terms = d.compute_terms(
        x, y, w, d.teacher_features(x), d.student_features(x, training=False)
    )
    every = {**x, "mask_positions": np.tile(np.arange(12, dtype="int32"), (4, 1))}
    ref = losses.kl_divergence(student(every), teacher(every), 2.0, x["padding_mask"])
    np.testing.assert_allclose(terms["kd"], ref, rtol=1e-4)
    np.testing.assert_allclose(terms["mlm"], losses.masked_lm_loss(student(x), y, w), rtol=1e-4)


def test_finetune_recipe_skips_teacher():
    teacher = tiny.classifier(tiny.backbone(seed=0))
    student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1))
    d = tinybert_tf.Distiller(teacher, student, "finetune")
    data = _dataset(steps=2, extra=lambda x: (np.arange(len(x["token_ids"])) % 3,))
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    hist = d.fit(data, epochs=5, verbose=0)
    assert set(hist.history) == {"loss", "hard_loss"}
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_regression_hard_term_skips_unlabelled_nan_rows():
    teacher = tiny.classifier(tiny.backbone(seed=0), num_classes=1)
    student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1), num_classes=1)
    d = tinybert_tf.Distiller(teacher, student, recipes.get("finetune", regression=True))
    x = tiny.inputs()
    y = np.array([0.5, np.nan, 2.0, np.nan], "float32")
    w = np.array([1, 0, 1, 0], "float32")
    terms = d.compute_terms(x, y, w, {}, d.student_features(x, training=False))
    pred = np.asarray(student(x))[:, 0]
    np.testing.assert_allclose(terms["hard"], np.mean((pred[[0, 2]] - y[[0, 2]]) ** 2), rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        teacher, student = _pair()
        d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
        d.compile(optimizer=keras.optimizers.AdamW(1e-3))
        if policy == "mixed_float16":
            assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
        s0 = _weights(student)
        hist = d.fit(_dataset(steps=2), epochs=2, verbose=0)
        assert np.isfinite(hist.history["loss"]).all()
        assert student.weights[0].dtype == "float32"  # master weights stay float32
        assert any(np.abs(a - b).max() > 0 for a, b in zip(s0, _weights(student)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_jit_compile_matches_eager_step():
    results = []
    for jit in (False, True):
        teacher, student = _pair()
        d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
        # Dropout off so both runs see the same computation.
        for layer in student._flatten_layers():
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        d.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        d.fit(_dataset(steps=2), epochs=1, verbose=0, shuffle=False)
        results.append(_weights(student))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_global_batch_division_under_mirrored_strategy():
    """Two replicas must take the same step as one device on the same global batch."""
    from tinybert_tf.launch.devices import Device
    from tinybert_tf.launch.strategy import tf_strategy

    weights = []
    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        # One MirroredStrategy per device set and process (tf_strategy), as the launcher does.
        strategy = tf_strategy("mirrored", devices=[Device("cpu", d) for d in devices])
        assert strategy.num_replicas_in_sync == len(devices)
        with strategy.scope():
            teacher, student = _pair()
            for layer in student._flatten_layers():
                if isinstance(layer, keras.layers.Dropout):
                    layer.rate = 0.0
            d = tinybert_tf.Distiller(teacher, student, "tinybert_general")
            d.compile(optimizer=keras.optimizers.SGD(0.5))
        d.fit(_dataset(batch=4, steps=3), epochs=2, verbose=0, shuffle=False)
        weights.append(_weights(student))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_saved_student_round_trip_without_teacher(tmp_path):
    from tinybert_tf.launch.builders import save_model

    teacher = tiny.classifier(tiny.backbone(num_layers=4, seed=0))
    student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1))
    d = tinybert_tf.Distiller(teacher, student, "tinybert_task_intermediate")
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    d.fit(_dataset(steps=2), epochs=1, verbose=0)
    # The student alone (no projections argument): a task-model preset with no teacher in it.
    path = save_model(student, tiny.tokenizer(), str(tmp_path / "student"))
    reloaded = keras_hub.models.TextClassifier.from_preset(path, load_weights=True)
    x = tiny.inputs()
    np.testing.assert_array_equal(reloaded(x), student(x))
    assert keras_hub.tokenizers.BertTokenizer.from_preset(path).vocabulary_size() == len(tiny.VOCAB)
    n_saved = sum(int(np.prod(w.shape)) for w in reloaded.weights)
    assert n_saved == students.count_params(student)
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    teacher_bytes = 4 * students.count_params(teacher)
    assert size < teacher_bytes  # the teacher (4 layers, 32 wide) is never written
    assert not any("projection" in w.path for w in reloaded.weights)


def _config_case(case):
    """A Distiller for the config round trip, with its labels: a registered recipe on backbones,
    or a recipe with fields overridden (not a registered one) on classifiers."""
    if case == "registered":
        return tinybert_tf.Distiller(*_pair(), "tinybert_general"), None
    teacher = tiny.classifier(tiny.backbone(num_layers=4, seed=0))
    student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1))
    recipe = recipes.get("distilbert_task", temperature=3.0, layer_map=(1, 3))
    return tinybert_tf.Distiller(teacher, student, recipe), np.array([0, 1, 2, 1], "int32")


@pytest.mark.parametrize("case", ["registered", "overridden"])
def test_config_round_trip_gives_the_same_losses(case):
    d, y = _config_case(case)
    config = json.loads(json.dumps(d.get_config()))  # plain JSON data
    again = tinybert_tf.Distiller.from_config(config)
    assert again.recipe == d.recipe and again.layer_map == d.layer_map
    assert isinstance(config["recipe"], str) == (case == "registered")
    again.set_weights(d.get_weights())
    x = tiny.inputs()
    want, got = (m.compute_terms(x, y, None, m.teacher_outputs(x), m.student_features(x, False))
                 for m in (d, again))
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("clipnorm", [None, 1.0])
def test_a_float16_overflow_on_one_replica_skips_the_step_on_every_replica(clipnorm):
    """Loss scaling under MirroredStrategy: an infinite loss on the second replica only (an
    infinite sample weight in its half of the batch) skips the update everywhere and halves the
    loss scale; Keras alone decides from the first replica's gradients and writes NaN weights.
    With a clipnorm, the clipping factor of the summed gradient scales with the loss scale."""
    import tensorflow as tf

    from tinybert_tf.launch.devices import Device
    from tinybert_tf.launch.strategy import tf_strategy

    keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf_strategy("mirrored", devices=[Device("cpu", "/cpu:0"), Device("cpu", "/cpu:1")])
    with strategy.scope():
        teacher = tiny.classifier(tiny.backbone(seed=0))
        student = tiny.classifier(tiny.backbone(hidden_dim=16, seed=1))
        d = tinybert_tf.Distiller(teacher, student, "finetune")
        d.compile(optimizer=keras.optimizers.AdamW(1e-2, global_clipnorm=clipnorm))
    assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
    x = tiny.inputs(batch=4)
    y, w = np.array([0, 1, 2, 0]), np.array([1, 1, 1, np.inf], "float32")
    before, scale = _weights(student), d.optimizer.initial_scale
    d.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, verbose=0)
    for a, b in zip(before, _weights(student)):
        np.testing.assert_array_equal(a, b)
    assert float(d.optimizer.dynamic_scale.numpy()) == scale / 2
    d.fit(tf.data.Dataset.from_tensors((x, y, np.ones(4, "float32"))), epochs=1, verbose=0)
    after = _weights(student)
    assert all(np.isfinite(a).all() for a in after)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))
