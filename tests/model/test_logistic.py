"""The hand Newton ridge-logistic fit equals scikit-learn's LogisticRegression."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sk_log_loss

from bayesrad.model.logistic import log_loss, ridge_logistic


@pytest.mark.parametrize("c", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_ridge_logistic_equals_scikit_learn(c, k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(120, k))
    y = (rng.random(120) < 1 / (1 + np.exp(-(0.3 + x[:, 0] - 0.5 * x[:, -1])))).astype(float)
    intercept, coef = ridge_logistic(x, y, c)
    ref = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(coef, ref.coef_[0], atol=1e-6)
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-6)


def test_ridge_logistic_on_separable_data_is_large_and_finite():
    x = np.r_[-np.arange(1.0, 11.0), np.arange(1.0, 11.0)][:, None]
    y = np.r_[np.zeros(10), np.ones(10)]
    _, coef = ridge_logistic(x, y, c=1e8)
    assert np.isfinite(coef).all() and coef[0] > 5
    # a penalty keeps it moderate, as scikit-learn's does
    _, coef = ridge_logistic(x, y, c=0.1)
    ref = LogisticRegression(C=0.1, tol=1e-12, max_iter=10_000).fit(x, y)
    assert coef[0] == pytest.approx(ref.coef_[0, 0], abs=1e-6)


def test_log_loss_equals_scikit_learn_with_clipping():
    y = np.array([0, 1, 1, 0, 1.0])
    prob = np.array([0.1, 0.8, 1.0, 0.0, 0.5])
    assert log_loss(y, prob) == pytest.approx(sk_log_loss(y, prob, labels=[0, 1]), rel=1e-12)
