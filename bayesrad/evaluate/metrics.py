"""Metrics of probabilistic predictions: discrimination, calibration, interval coverage,
survival concordance and calibration of S(t).

Every function takes plain arrays (or pandas Series) of equal length and validates them, so a
mismatch is reported with the argument names and the fix instead of a numpy broadcast error.
"""

from __future__ import annotations

import numpy as np

from bayesrad.errors import ModelError


def _arrays(**named) -> list[np.ndarray]:
    out = []
    length = None
    for name, value in named.items():
        arr = np.asarray(value, dtype=float).ravel()
        if length is None:
            length = arr.size
        elif arr.size != length:
            sizes = {k: np.asarray(v).size for k, v in named.items()}
            raise ModelError(f"arguments have different lengths {sizes}; pass one value per "
                             "patient in each")
        if np.isnan(arr).any():
            raise ModelError(f"{name} has {int(np.isnan(arr).sum())} missing values; drop "
                             "those patients first")
        out.append(arr)
    if not length:
        raise ModelError("no patients to evaluate (empty arrays)")
    return out


def _binary(y, name="y_true"):
    if not np.isin(y, (0.0, 1.0)).all():
        raise ModelError(f"{name} must hold 0/1 outcomes (found {np.unique(y)[:5]})")
    return y


def auc(y_true, p) -> float:
    """Area under the ROC curve of scores ``p`` for 0/1 outcomes ``y_true`` (both (n,))."""
    from sklearn.metrics import roc_auc_score

    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    if len(np.unique(y)) < 2:
        raise ModelError("AUC needs both outcomes (0 and 1) among the patients")
    return float(roc_auc_score(y, p))


def brier(y_true, p) -> float:
    """Brier score: mean squared difference between P(y=1) ``p`` and 0/1 ``y_true``."""
    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    return float(np.mean((p - y) ** 2))


def ece(y_true, p, n_bins: int = 10, strategy: str = "quantile") -> float:
    """Expected calibration error of probabilities ``p`` for 0/1 outcomes ``y_true``.

    Patients are binned by ``p`` (``"quantile"``: equal counts, robust when predictions
    cluster; ``"uniform"``: equal widths); ECE = sum over bins of (bin share) x
    |mean(p) - mean(y)|.
    """
    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    if strategy == "quantile":
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0, 1, n_bins + 1)
    else:
        raise ModelError(f"strategy must be 'quantile' or 'uniform' (got {strategy!r})")
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return float(total)


def coverage(y_true, lower, upper) -> float:
    """Share of values ``y_true`` inside their predictive intervals [lower, upper]."""
    y, lo, hi = _arrays(y_true=y_true, lower=lower, upper=upper)
    if np.any(lo > hi):
        raise ModelError("some lower bounds exceed their upper bounds; swap the arguments?")
    return float(np.mean((y >= lo) & (y <= hi)))


def concordance(time, event, predicted_time) -> float:
    """Harrell's C-index: share of comparable pairs whose predicted survival times (or any
    score that is larger for longer survival, e.g. median survival or S(t)) are ordered like
    the observed times. ``time`` in any unit, ``event`` 0/1 (1 = event observed)."""
    from lifelines.utils import concordance_index

    t, e, s = _arrays(time=time, event=event, predicted_time=predicted_time)
    _binary(e, "event")
    return float(concordance_index(t, s, e))


def survival_calibration(time, event, survival_at_t, t: float, draws=None) -> dict[str, float]:
    """Calibration of predicted S(t) at one time ``t`` (same unit as ``time``).

    Returns ``predicted`` (mean predicted S(t)), ``observed`` (Kaplan-Meier S(t) of the same
    patients), their ``difference``, and the Kaplan-Meier 95% interval (``observed_lower``,
    ``observed_upper``). With ``draws`` (S, n), the predicted S(t) of each patient under S
    posterior draws, also ``predicted_sd`` (posterior sd of the patients' mean S(t)) and
    ``z``: the difference in units of sqrt(km_sd^2 + predicted_sd^2), km_sd the Kaplan-Meier
    interval's half-width / 1.96. A calibrated model's ``z`` is about standard normal: the
    Kaplan-Meier estimate has its sampling error, and the posterior mean its uncertainty.
    """
    from lifelines import KaplanMeierFitter

    tt, e, s = _arrays(time=time, event=event, survival_at_t=survival_at_t)
    _binary(e, "event")
    km = KaplanMeierFitter().fit(tt, e)
    observed = float(km.survival_function_at_times(t).iloc[0])
    ci = km.confidence_interval_survival_function_
    row = ci[ci.index <= t].iloc[-1] if (ci.index <= t).any() else ci.iloc[0]
    out = {"predicted": float(s.mean()), "observed": observed,
           "difference": float(s.mean() - observed),
           "observed_lower": float(row.iloc[0]), "observed_upper": float(row.iloc[1])}
    if draws is not None:
        draws = np.asarray(draws, dtype=float)
        if draws.ndim != 2 or draws.shape[1] != s.size:
            raise ModelError(f"draws must have shape (n_draws, {s.size}) (got {draws.shape})")
        out["predicted_sd"] = float(draws.mean(1).std(ddof=1))
        km_sd = (out["observed_upper"] - out["observed_lower"]) / (2 * 1.959964)
        out["z"] = out["difference"] / float(np.hypot(km_sd, out["predicted_sd"]))
    return out


__all__ = ["auc", "brier", "ece", "coverage", "concordance", "survival_calibration"]
