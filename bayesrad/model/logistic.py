"""Ridge-penalised binary logistic regression by Newton's method, for small designs fitted
many times (inner cross-validation of a wide block's screening, the evaluation bootstrap's
calibration line).

Written here rather than called from scikit-learn because those callers fit hundreds of
models of 1 to 65 columns per fit or per bootstrap, and scikit-learn's input validation was
most of each few-millisecond fit (the 200 x 1,000 fit of issue 14 spent 0.6 s in it). It
minimises scikit-learn's objective and equals ``LogisticRegression``'s solution
(tests/model/test_logistic.py).
"""

from __future__ import annotations

import numpy as np


def ridge_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 100,
                   tol: float = 1e-12) -> tuple[float, np.ndarray]:
    """(intercept, coefficients (k,)) of the logistic regression of 0/1 ``y`` (n,) on ``x``
    (n, k), minimising ``sum(log-loss) + ||w||^2 / (2 c)`` (the intercept unpenalised): the
    objective of scikit-learn's ``LogisticRegression(C=c)``.

    Newton's method with step halving; separable data with a large ``c`` give large finite
    coefficients. Stops when the objective gains less than ``tol`` (relative).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, k = x.shape
    design = np.column_stack([np.ones(n), x])
    ridge = np.full(k + 1, 1.0 / (2.0 * c))
    ridge[0] = 0.0
    beta = np.zeros(k + 1)
    # start the intercept at the base rate: one Newton step fewer, and exact when x says nothing
    share = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if n else 0.5
    beta[0] = np.log(share / (1.0 - share))

    def objective(b):
        eta = design @ b
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta) + ridge @ (b * b))

    current = objective(beta)
    for _ in range(max_iter):
        prob = 1.0 / (1.0 + np.exp(-(design @ beta)))
        grad = design.T @ (prob - y) + 2.0 * ridge * beta
        hess = (design * (prob * (1.0 - prob))[:, None]).T @ design + np.diag(2.0 * ridge)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        scale = 1.0
        while scale > 1e-10:
            trial = beta - scale * step
            value = objective(trial)
            if value <= current:
                break
            scale /= 2.0
        else:
            break
        beta, previous, current = trial, current, value
        if previous - current < tol * max(1.0, abs(current)):
            break
    return float(beta[0]), beta[1:].copy()


def log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 ``y`` (n,) under P(y = 1) ``prob`` (n,), clipped
    at machine epsilon as scikit-learn's ``log_loss`` clips."""
    eps = np.finfo(float).eps
    prob = np.clip(np.asarray(prob, dtype=float), eps, 1.0 - eps)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(prob) + (1.0 - y) * np.log1p(-prob)))
