"""Ensemble soft targets: the combined logits' tempered softmax is the NumPy mean of the teachers'
tempered softmaxes (combine=prob) or the softmax of their mean logits (combine=logit)."""

import numpy as np
import pytest

from tinybert_tf.distill import ensemble


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _soft_targets(logits, temperature):
    """softmax(logits / T) in float64: what the `pred` term trains towards."""
    return _softmax(np.asarray(logits, np.float64) / temperature)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 8.0])
@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 3, 6, 9)])  # [K, N, C], token level [K, N, S, C]
def test_prob_combine_is_the_mean_of_tempered_softmaxes(temperature, shape):
    z = np.random.default_rng(0).normal(scale=4, size=shape).astype("float32")
    want = np.mean([_softmax(z[k] / temperature) for k in range(len(z))], axis=0)
    got = _soft_targets(ensemble.combine_logits(z, temperature, "prob"), temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_logit_combine_is_the_softmax_of_the_mean_logits(temperature):
    z = np.random.default_rng(1).normal(scale=4, size=(3, 7, 5)).astype("float32")
    got = _soft_targets(ensemble.combine_logits(z, temperature, "logit"), temperature)
    np.testing.assert_allclose(got, _softmax(z.mean(0) / temperature), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, _soft_targets(
        ensemble.combine_logits(z, temperature, "prob"), temperature), atol=1e-3)


def test_one_teacher_and_regression_and_errors():
    z = np.random.default_rng(2).normal(size=(1, 4, 3)).astype("float32")
    np.testing.assert_array_equal(ensemble.combine_logits(z, 2.0), z[0])
    r = np.random.default_rng(3).normal(size=(3, 4, 1)).astype("float32")
    np.testing.assert_allclose(ensemble.combine_logits(r, 2.0, regression=True), r.mean(0),
                               rtol=1e-6)
    # a class every teacher gives ~0 probability stays finite
    extreme = np.array([[[200.0, -200.0]], [[150.0, -300.0]]], "float32")
    assert np.isfinite(ensemble.combine_logits(extreme, 1.0)).all()
    with pytest.raises(ValueError, match="Unknown combine"):
        ensemble.combine_logits(z, 1.0, "median")
