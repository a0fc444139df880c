"""Linear probes: how much of a known quantity a set of embeddings holds, with its spread.

``linear_probe_r2`` scores a ridge regression from embeddings to targets by repeated K-fold
cross-validation. The ridge penalty is chosen inside each training fold only (nested:
``RidgeCV``'s efficient leave-one-out over ``alphas``, one penalty per target), the
standardisation is fitted on the training fold too, and R^2 is computed on the pooled
out-of-fold predictions of each repeat. Test features are clipped to the range seen in the
training fold: a randomly initialised CNN has units that are zero for all patients but one
unusual tumour, and a ridge fit extrapolated to such a value gave single predictions 10 sd
off (R^2 of -0.7 from one patient); clipping measures the linear information, not the
extrapolation, and is applied alike to every encoder compared. Returned: the per-repeat R^2 (their mean and standard
deviation say how much the figure depends on the fold assignment) and the per-fold R^2.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bayesrad.errors import ModelError

ALPHAS = np.logspace(-3, 5, 17)


class ClipToTrainingRange(TransformerMixin, BaseEstimator):
    """Clip each feature to the [min, max] it had in ``fit`` (no extrapolation of a linear model)."""

    def fit(self, X, y=None):
        x = np.asarray(X, dtype=float)
        self.min_, self.max_ = x.min(0), x.max(0)
        return self

    def transform(self, X):
        return np.clip(np.asarray(X, dtype=float), self.min_, self.max_)


def probe_model(alphas=ALPHAS):
    """The probe: standardise, clip to the training range, ridge with leave-one-out penalty per target."""
    return make_pipeline(StandardScaler(), ClipToTrainingRange(), RidgeCV(alphas=alphas, alpha_per_target=True))


def probe_protocol(n_splits: int = 5, n_repeats: int = 5, alphas=ALPHAS) -> str:
    """One line saying how ``linear_probe_r2`` scores (for results files)."""
    return (f"{n_repeats} x {n_splits}-fold CV; StandardScaler + clip to the training range + RidgeCV (leave-one-out "
            f"alpha per target from {len(alphas)} values in [{alphas[0]:g}, {alphas[-1]:g}], inside each training "
            f"fold); R^2 of the pooled out-of-fold predictions per repeat")


def linear_probe_r2(features, targets, n_splits: int = 5, n_repeats: int = 5, seed: int = 0,
                    alphas=ALPHAS, target_names=None) -> dict:
    """Repeated K-fold ridge-probe R^2 of ``targets`` (N,) or (N, T) from ``features`` (N, F).

    Returns a dict with ``r2`` (n_repeats, T) pooled out-of-fold R^2 per repeat, ``fold_r2``
    (n_repeats, n_splits, T), ``mean`` / ``sd`` (T,) over repeats, ``mean_over_targets`` and
    ``sd_mean_over_targets`` (of the per-repeat mean over targets), ``alphas_chosen`` (the
    penalties picked in the training folds), as plain lists ready for JSON.
    """
    x = np.asarray(features, dtype=float)
    y = np.asarray(targets, dtype=float)
    y = y[:, None] if y.ndim == 1 else y
    if x.ndim != 2 or len(x) != len(y):
        raise ModelError(f"linear probe: features {x.shape} and targets {y.shape} must be (N, F) and (N, T)")
    if len(x) < 2 * n_splits:
        raise ModelError(f"linear probe: {len(x)} patients are too few for {n_splits}-fold cross-validation")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ModelError("linear probe: features or targets hold NaN/inf; drop those patients")
    r2 = np.zeros((n_repeats, y.shape[1]))
    fold_r2 = np.zeros((n_repeats, n_splits, y.shape[1]))
    chosen = []
    for rep in range(n_repeats):
        pred = np.zeros_like(y)
        folds = KFold(n_splits, shuffle=True, random_state=seed + rep).split(x)
        for k, (train, test) in enumerate(folds):
            model = probe_model(alphas)
            model.fit(x[train], y[train])
            pred[test] = model.predict(x[test]).reshape(len(test), -1)
            chosen.append(np.atleast_1d(model[-1].alpha_).tolist())
            fold_r2[rep, k] = [r2_score(y[test, j], pred[test, j]) for j in range(y.shape[1])]
        r2[rep] = [r2_score(y[:, j], pred[:, j]) for j in range(y.shape[1])]
    per_repeat_mean = r2.mean(1)
    out = {
        "protocol": probe_protocol(n_splits, n_repeats, alphas),
        "r2": r2.tolist(), "fold_r2": fold_r2.tolist(),
        "mean": r2.mean(0).tolist(), "sd": r2.std(0, ddof=1).tolist() if n_repeats > 1 else [0.0] * y.shape[1],
        "mean_over_targets": float(per_repeat_mean.mean()),
        "sd_mean_over_targets": float(per_repeat_mean.std(ddof=1)) if n_repeats > 1 else 0.0,
        "alphas_chosen": chosen,
    }
    if target_names is not None:
        out["targets"] = list(target_names)
    return out


__all__ = ["ALPHAS", "ClipToTrainingRange", "linear_probe_r2", "probe_model", "probe_protocol"]
