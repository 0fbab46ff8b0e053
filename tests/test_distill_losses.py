"""Every loss term against a NumPy reference: masks, T != 1, padding rows."""

import numpy as np
import pytest

from tinybert_tf.distill import losses

rng = np.random.default_rng(0)


def _mask(b, s):
    m = np.ones((b, s), "int32")
    m[1, s - 3:] = 0
    m[2, 2:] = 0
    return m


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_attention_mse_matches_official_masking():
    b, h, s = 3, 2, 6
    st, te = rng.normal(size=(2, b, h, s, s)).astype("float32") * 3
    m = _mask(b, s)
    # Official TinyBERT: scores carry -1e4 on masked keys, entries <= -1e2 become 0, then MSE.
    add = (1 - m[:, None, None, :]) * -10000.0
    so, to = st + add, te + add
    so = np.where(so <= -1e2, 0, so)
    to = np.where(to <= -1e2, 0, to)
    ref = np.mean((so - to) ** 2)
    np.testing.assert_allclose(losses.attention_mse(st, te, m), ref, rtol=1e-6)


def test_attention_kl():
    b, h, s = 3, 2, 5
    m = _mask(b, s)
    logits_s, logits_t = rng.normal(size=(2, b, h, s, s))
    ps = np.exp(_log_softmax(logits_s))
    pt = np.exp(_log_softmax(logits_t))
    kl = (pt * (np.log(pt) - np.log(ps))).sum(-1)  # [b, h, s]
    w = np.broadcast_to(m[:, None, :], kl.shape)
    ref = (kl * w).sum() / w.sum()
    np.testing.assert_allclose(losses.attention_kl(ps, pt, m), ref, rtol=1e-5)


def test_hidden_mse_unmasked_and_masked():
    st, te = rng.normal(size=(2, 3, 6, 4)).astype("float32")
    np.testing.assert_allclose(losses.hidden_mse(st, te), np.mean((st - te) ** 2), rtol=1e-6)
    m = _mask(3, 6)
    sq = ((st - te) ** 2).mean(-1)
    ref = (sq * m).sum() / m.sum()
    np.testing.assert_allclose(losses.hidden_mse(st, te, m), ref, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy(temperature):
    s, t = rng.normal(size=(2, 5, 3)) * 2
    pt = np.exp(_log_softmax(t / temperature))
    ref = np.mean(-(pt * _log_softmax(s / temperature)).sum(-1))
    np.testing.assert_allclose(
        losses.soft_cross_entropy(s, t, temperature), ref, rtol=1e-5
    )
    # The official code's .mean() over classes is this value / C (documented, not copied).
    official = np.mean(-(pt * _log_softmax(s / temperature)))
    np.testing.assert_allclose(ref / 3, official, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_divergence_t_squared_and_weights(temperature):
    s, t = rng.normal(size=(2, 3, 4, 7))
    lt, ls = _log_softmax(t / temperature), _log_softmax(s / temperature)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    np.testing.assert_allclose(
        losses.kl_divergence(s, t, temperature), kl.mean() * temperature**2, rtol=1e-5
    )
    w = _mask(3, 4)
    ref = (kl * w).sum() / w.sum() * temperature**2
    np.testing.assert_allclose(losses.kl_divergence(s, t, temperature, w), ref, rtol=1e-5)


def test_logits_mse():
    s, t = rng.normal(size=(2, 4, 1))
    np.testing.assert_allclose(losses.logits_mse(s, t), np.mean((s - t) ** 2), rtol=1e-6)


def test_logits_mse_weighted_rows_ignore_nan_targets():
    s = rng.normal(size=(5,))
    t = rng.normal(size=(5,))
    w = np.array([1.0, 0.0, 2.0, 0.0, 0.5])
    t_nan = np.where(w > 0, t, np.nan)  # unlabelled (weight-0) rows carry NaN labels
    ref = np.sum(w * (s - t) ** 2) / w.sum()
    np.testing.assert_allclose(losses.logits_mse(s, t_nan, w), ref, rtol=1e-6)
    # [B, 1] predictions with [B] weights; no NaN in the gradient either.
    import tensorflow as tf

    s2 = tf.Variable(s[:, None].astype("float32"))
    with tf.GradientTape() as tape:
        loss = losses.logits_mse(s2, t_nan[:, None], w)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    grad = tape.gradient(loss, s2).numpy()[:, 0]
    np.testing.assert_allclose(grad, 2 * w * (s - np.nan_to_num(t_nan)) / w.sum(), rtol=1e-5)
    assert np.all(grad[w == 0] == 0)


def test_cosine_hidden():
    st, te = rng.normal(size=(2, 3, 6, 4))
    m = _mask(3, 6)
    cos = (st * te).sum(-1) / (np.linalg.norm(st, axis=-1) * np.linalg.norm(te, axis=-1))
    ref = ((1 - cos) * m).sum() / m.sum()
    np.testing.assert_allclose(losses.cosine_hidden(st, te, m), ref, rtol=1e-5)
    assert float(losses.cosine_hidden(te, te, m)) == pytest.approx(0.0, abs=1e-6)


def test_sparse_cross_entropy_and_masked_lm():
    logits = rng.normal(size=(3, 4, 9))
    labels = rng.integers(0, 9, size=(3, 4))
    w = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], "float32")
    labels_with_ignored = np.where(w > 0, labels, -100)
    nll = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0]
    ref = (nll * w).sum() / w.sum()
    np.testing.assert_allclose(
        losses.masked_lm_loss(logits, labels_with_ignored, w), ref, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.sparse_cross_entropy(logits, labels), nll.mean(), rtol=1e-5
    )


def test_losses_are_float32_under_bfloat16_inputs():
    import keras

    s = keras.ops.cast(rng.normal(size=(2, 3, 4)), "bfloat16")
    t = keras.ops.cast(rng.normal(size=(2, 3, 4)), "bfloat16")
    out = losses.hidden_mse(s, t)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_soft_cross_entropy_weighted_rows():
    s, t = rng.normal(size=(2, 3, 5, 4))
    w = _mask(3, 5)
    ce = -(np.exp(_log_softmax(t / 2.0)) * _log_softmax(s / 2.0)).sum(-1)
    ref = (ce * w).sum() / w.sum()
    np.testing.assert_allclose(losses.soft_cross_entropy(s, t, 2.0, w), ref, rtol=1e-5)


def test_pooled_cosine():
    st, te = rng.normal(size=(2, 3, 6, 4))
    m = _mask(3, 6)
    mw = m[:, :, None]
    s_pool = (st * mw).sum(1) / mw.sum(1)
    t_pool = (te * mw).sum(1) / mw.sum(1)
    cos = (s_pool * t_pool).sum(-1) / (
        np.linalg.norm(s_pool, axis=-1) * np.linalg.norm(t_pool, axis=-1))
    np.testing.assert_allclose(losses.pooled_cosine(st, te, m), np.mean(1 - cos), rtol=1e-5)


def test_pooled_similarity_kl_matches_numpy_and_ignores_width():
    st = rng.normal(size=(5, 6, 3))  # student width 3, teacher width 8: no projection needed
    te = rng.normal(size=(5, 6, 8))
    m = _mask(5, 6)
    tau = 0.1

    def log_p(h):
        mw = m[:, :, None]
        e = (h * mw).sum(1) / mw.sum(1)
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        sim = e @ e.T / tau
        rows = []
        for i in range(len(sim)):
            others = np.delete(sim[i], i)
            lp = others - np.log(np.exp(others - others.max()).sum()) - others.max()
            rows.append(lp)
        return np.array(rows)  # [B, B-1]: self left out

    ls, lt = log_p(st), log_p(te)
    ref = np.mean(np.sum(np.exp(lt) * (lt - ls), axis=-1))
    np.testing.assert_allclose(losses.pooled_similarity_kl(st, te, m, tau), ref, rtol=1e-4)
    # The same neighbourhoods give 0 even at another width/scale; a scaled copy is no change.
    np.testing.assert_allclose(losses.pooled_similarity_kl(3.0 * te, te, m, tau), 0.0, atol=1e-5)
    assert float(losses.pooled_similarity_kl(st, te, m, tau)) > 0.01
