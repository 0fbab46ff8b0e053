"""MiniLM / MiniLMv2 relation distillation: `losses.relation_kl` against a NumPy loop, and the
`minilm` / `minilm_v2` recipes in the Distiller (any widths, depths and, for v2, head counts)."""

import keras
import numpy as np
import pytest
import tiny

import tinybert_tf
from tinybert_tf.distill import distiller as distiller_lib
from tinybert_tf.distill import features, losses, recipes

rng = np.random.default_rng(0)


def _np_relation_kl(student, teacher, mask, num_relation_heads):
    """Independent reference: explicit loops over batch, relation heads and real query rows."""

    def relation(vectors, b, r, i):
        flat = vectors[b].reshape(vectors.shape[1], -1)  # [S, H_x], heads concatenated
        size = flat.shape[1] // num_relation_heads
        head = flat[:, r * size:(r + 1) * size]
        logits = np.array([head[i] @ head[j] / np.sqrt(size) if mask[b, j] else -np.inf
                           for j in range(len(head))])
        p = np.exp(logits - logits.max())
        return p / p.sum()  # exactly 0 at padded keys

    total, rows = 0.0, 0
    for b in range(mask.shape[0]):
        for r in range(num_relation_heads):
            for i in range(mask.shape[1]):
                if not mask[b, i]:
                    continue
                pt, ps = relation(teacher, b, r, i), relation(student, b, r, i)
                real = pt > 0
                total += np.sum(pt[real] * (np.log(pt[real]) - np.log(ps[real])))
                rows += 1
    return total / rows


def _vectors():
    x = tiny.inputs(batch=4, seq=12)  # rows have 12, 10, 8, 6 real tokens
    student = rng.normal(size=(4, 12, 4, 8))  # 4 heads x 8 = 32 wide
    teacher = rng.normal(size=(4, 12, 12, 4)) * 1.5  # 12 heads x 4 = 48 wide
    return student, teacher, x["padding_mask"]


@pytest.mark.parametrize("num_relation_heads", [1, 4, 8])
def test_relation_kl_matches_numpy_loop(num_relation_heads):
    student, teacher, mask = _vectors()
    ref = _np_relation_kl(student, teacher, mask, num_relation_heads)
    got = losses.relation_kl(student, teacher, mask, num_relation_heads)
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    assert ref > 0.05
    # [B, S, H] vectors are the same thing as [B, S, heads, d] ones.
    flat = losses.relation_kl(student.reshape(4, 12, 32), teacher.reshape(4, 12, 48), mask,
                              num_relation_heads)
    np.testing.assert_allclose(flat, ref, rtol=1e-4)


def test_relation_kl_with_attention_heads_is_minilm_value_relation():
    # R = attention heads: each relation head is one attention head's values (MiniLM v1).
    student, _, mask = _vectors()
    teacher = rng.normal(size=student.shape)
    per_head = np.mean([_np_relation_kl(student[:, :, h:h + 1], teacher[:, :, h:h + 1], mask, 1)
                        for h in range(4)])
    np.testing.assert_allclose(losses.relation_kl(student, teacher, mask, 4), per_head, rtol=1e-4)


def test_relation_kl_ignores_padded_positions():
    student, teacher, mask = _vectors()
    base = float(losses.relation_kl(student, teacher, mask, 4))
    padded = (mask == 0)[:, :, None, None]
    noisy_s = np.where(padded, rng.normal(size=student.shape) * 50, student)
    noisy_t = np.where(padded, rng.normal(size=teacher.shape) * 50, teacher)
    np.testing.assert_allclose(losses.relation_kl(noisy_s, noisy_t, mask, 4), base, rtol=1e-6)
    # ... while a change at a real position does change it (the check above can fail).
    real = student.copy()
    real[3, 1] += 5.0
    assert abs(float(losses.relation_kl(real, teacher, mask, 4)) - base) > 1e-3
    np.testing.assert_allclose(losses.relation_kl(teacher, teacher, mask, 4), 0.0, atol=1e-6)


def test_relation_kl_width_error():
    student, teacher, mask = _vectors()
    with pytest.raises(ValueError, match="num_relation_heads=5 must divide the teacher width 48"):
        losses.relation_kl(student, teacher, mask, 5)


# ---- the Distiller ---------------------------------------------------------------------------


_dataset = tiny.dataset


def _teacher_12_heads():
    return tiny.backbone(num_layers=3, hidden_dim=48, num_heads=12, intermediate_dim=96, seed=0)


def _student_4_heads():
    return tiny.backbone(num_layers=2, hidden_dim=32, num_heads=4, seed=1)


def _weights(model):
    return [v.numpy() for v in model.weights]


def _loss_falls(d, steps=20):
    data = _dataset().repeat(steps)
    first = d.evaluate(_dataset(), verbose=0, return_dict=True)["loss"]
    hist = d.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    last = d.evaluate(_dataset(), verbose=0, return_dict=True)["loss"]
    assert np.isfinite(hist.history["loss"]).all()
    assert last < 0.5 * first, (first, last)


def test_minilm_v2_distils_12_head_teacher_into_4_head_student():
    teacher, student = _teacher_12_heads(), _student_4_heads()
    d = tinybert_tf.Distiller(teacher, student, recipes.get("minilm_v2", relation_heads=8))
    assert d.projections == [] and d.layer_map == ()
    t0, s0 = _weights(teacher), _weights(student)
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = d.fit(_dataset(steps=3), epochs=1, verbose=0)
    assert {"loss", "qq_loss", "kk_loss", "vv_loss"} == set(hist.history)
    assert np.isfinite(hist.history["loss"]).all()
    for a, b in zip(t0, _weights(teacher)):
        np.testing.assert_array_equal(a, b)
    last = student.transformer_layers[-1]._self_attention_layer
    moved = {w.path for w, a in zip(student.weights, s0) if np.abs(w.numpy() - a).max() > 0}
    assert last._query_dense.kernel.path in moved and last._value_dense.kernel.path in moved
    assert student.token_embedding.embeddings.path in moved


def test_minilm_v2_loss_falls_on_a_fixed_batch():
    d = tinybert_tf.Distiller(_teacher_12_heads(), _student_4_heads(),
                              recipes.get("minilm_v2", relation_heads=4))
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    _loss_falls(d)


def test_minilm_terms_match_losses_at_teacher_layer():
    teacher, student = _teacher_12_heads(), _student_4_heads()
    d = tinybert_tf.Distiller(teacher, student,
                              recipes.get("minilm_v2", relation_heads=4, teacher_layer=1))
    x = tiny.inputs()
    t, s = features.encoder_features(teacher, x), features.encoder_features(student, x)
    terms = d.compute_terms(x, None, None, t, s)
    for term, key in (("qq", "queries"), ("kk", "keys"), ("vv", "values")):
        ref = losses.relation_kl(s[key][1], t[key][1], x["padding_mask"], 4)
        np.testing.assert_allclose(terms[term], ref, rtol=1e-6)
        other = losses.relation_kl(s[key][1], t[key][2], x["padding_mask"], 4)
        assert abs(float(other) - float(ref)) > 1e-9  # teacher layer 1 was used, not the last
    np.testing.assert_allclose(terms["loss"], terms["qq"] + terms["kk"] + terms["vv"], rtol=1e-6)


def test_minilm_needs_equal_head_counts():
    for recipe in ("minilm", recipes.get("tinybert_general", layer_map="last")):  # TinyBERT's
        # attention maps are compared head by head too
        with pytest.raises(ValueError, match=r"equal attention-head counts \(teacher 12, student "
                                             r"4\); give the student 12 heads, or use recipe "
                                             "'minilm_v2'"):
            tinybert_tf.Distiller(_teacher_12_heads(), _student_4_heads(), recipe)


def test_minilm_with_matched_heads_trains():
    teacher = tiny.backbone(num_layers=3, hidden_dim=48, num_heads=4, intermediate_dim=96, seed=0)
    student = _student_4_heads()
    d = tinybert_tf.Distiller(teacher, student, "minilm")
    assert d.projections == [] and d.layer_map == ()
    x = tiny.inputs()
    t, s = features.encoder_features(teacher, x), features.encoder_features(student, x)
    terms = d.compute_terms(x, None, None, t, s)
    mask = x["padding_mask"]
    np.testing.assert_allclose(
        terms["minilm_att"], losses.attention_kl(s["attention_probs"][-1],
                                                 t["attention_probs"][-1], mask), rtol=1e-6)
    np.testing.assert_allclose(
        terms["minilm_val"], _np_relation_kl(np.asarray(s["values"][-1]),
                                             np.asarray(t["values"][-1]), mask, 4), rtol=1e-4)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    _loss_falls(d)


def test_minilm_v2_recipe_needs_no_layer_map_or_projection():
    # 4-layer student of a 6-layer teacher: no uniform map exists; widths differ.
    teacher = tiny.backbone(num_layers=6, hidden_dim=32, num_heads=2, seed=0)
    student = tiny.backbone(num_layers=4, hidden_dim=16, num_heads=2, seed=1)
    d = tinybert_tf.Distiller(teacher, student, recipes.get("minilm_v2", relation_heads=8))
    assert d.projections == [] and d.layer_map == ()
    with pytest.raises(ValueError, match="multiple of the student's"):
        tinybert_tf.Distiller(teacher, student, "tinybert_general")


def test_teacher_layer_and_relation_heads_are_validated():
    teacher, student = _teacher_12_heads(), _student_4_heads()
    with pytest.raises(ValueError, match=r"teacher_layer=3 is out of range for a 3-layer teacher"):
        tinybert_tf.Distiller(teacher, student, recipes.get("minilm_v2", relation_heads=4,
                                                            teacher_layer=3))
    tinybert_tf.Distiller(teacher, student, recipes.get("minilm_v2", relation_heads=4,
                                                        teacher_layer=-3))
    with pytest.raises(ValueError, match=r"relation_heads=48 must divide .*'student q/k': 32"):
        tinybert_tf.Distiller(teacher, student, "minilm_v2")


def test_minilm_v2_with_task_models_reads_teacher_layers_despite_cached_logits():
    teacher = tiny.classifier(_teacher_12_heads(), 3)
    student = tiny.classifier(_student_4_heads(), 3)
    d = tinybert_tf.Distiller(teacher, student, recipes.get("minilm_v2", relation_heads=4))
    x = dict(tiny.inputs(), **{distiller_lib.CACHED_LOGITS: np.zeros((4, 3), "float32")})
    assert "queries" in d.teacher_outputs(x)  # cached logits are not enough for relations
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    w0 = _weights(student.backbone)
    labels = lambda x: (np.zeros(len(x["token_ids"]), "int32"),)  # noqa: E731
    hist = d.fit(_dataset(steps=2, extra=labels), verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(w0, _weights(student.backbone)))
