"""Metrics of probabilistic predictions: discrimination, calibration, interval coverage,
survival concordance and calibration of S(t).

Every function takes plain arrays (or pandas Series) of equal length and validates them, so a
mismatch is reported with the argument names and the fix instead of a numpy broadcast error.
"""

from __future__ import annotations

import numpy as np

from bayesrad.errors import ModelError
from bayesrad.model.logistic import ridge_logistic


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


def log_loss(y_true, p) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under P(y=1) ``p`` (clipped at 1e-15)."""
    from sklearn.metrics import log_loss as _log_loss

    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    return float(_log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0.0, 1.0]))


def calibration_line(y_true, p) -> dict[str, float]:
    """Calibration slope and intercept: the logistic regression of the outcome on logit(p)
    (slope 1 and intercept 0 when calibrated; a slope below 1 means over-confident)."""
    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    logit = np.log(np.clip(p, 1e-9, 1 - 1e-9) / np.clip(1 - p, 1e-9, 1))
    # C = 1e8, as scikit-learn's near-unpenalised fit: separable data give a large finite slope
    intercept, slope = ridge_logistic(logit[:, None], y, c=1e8)
    return {"slope": float(slope[0]), "intercept": intercept}


def threshold_metrics(y_true, p, threshold: float | str = "youden") -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV of ``p >= threshold`` (``"youden"``: the
    threshold maximising sensitivity + specificity on these patients; choose it on training
    data and pass the number when the result is to be reported on a test set)."""
    from sklearn.metrics import roc_curve

    y, p = _arrays(y_true=y_true, p=p)
    _binary(y)
    if threshold == "youden":
        fpr, tpr, cuts = roc_curve(y, p)
        threshold = float(cuts[int(np.argmax(tpr - fpr))])
    pos = p >= float(threshold)
    tp, fp = np.sum(pos & (y == 1)), np.sum(pos & (y == 0))
    fn, tn = np.sum(~pos & (y == 1)), np.sum(~pos & (y == 0))

    def ratio(a, b):
        return float(a / b) if b else float("nan")

    return {"threshold": float(threshold), "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn)}


def ece_noise_floor(p, n_bins: int = 10, strategy: str = "quantile", n_draws: int = 500,
                    seed: int = 0) -> dict[str, float]:
    """The ECE a perfectly calibrated model would score on these patients: outcomes redrawn
    from ``p`` itself (Bernoulli), ``n_draws`` times. ECE has a positive bias on small
    cohorts, so an ECE is judged against this floor, not against 0."""
    (p,) = _arrays(p=p)
    rng = np.random.default_rng(seed)
    values = [ece((rng.random(p.size) < p).astype(float), p, n_bins, strategy)
              for _ in range(n_draws)]
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)),
            "q95": float(np.quantile(values, 0.95))}


def _probabilities(y_codes, probs):
    y = np.asarray(y_codes, dtype=int).ravel()
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[0] != y.size:
        raise ModelError(f"probs must be (n_patients, n_classes) = ({y.size}, K) (got {probs.shape})")
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise ModelError(f"class codes must lie in 0..{probs.shape[1] - 1} (got {np.unique(y)[:5]})")
    return y, probs


def multiclass_metrics(y_codes, probs, n_bins: int = 10) -> dict[str, float]:
    """Accuracy, balanced accuracy, multiclass Brier (sum over classes, mean over patients),
    top-label ECE and classwise ECE (mean over classes) of class probabilities ``probs``
    (n, K) for integer class codes ``y_codes`` (n,)."""
    from sklearn.metrics import balanced_accuracy_score

    y, probs = _probabilities(y_codes, probs)
    pred = probs.argmax(1)
    onehot = np.eye(probs.shape[1])[y]
    top = probs.max(1)
    return {"accuracy": float(np.mean(pred == y)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
            "top_label_ece": ece((pred == y).astype(float), top, n_bins, "uniform"),
            "classwise_ece": float(np.mean([ece(onehot[:, k], probs[:, k], n_bins, "uniform")
                                            for k in range(probs.shape[1])]))}


def _surv(time, event):
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, dtype=bool), time=np.asarray(time, dtype=float))


def uno_c(train_time, train_event, time, event, risk, tau: float | None = None) -> float:
    """Uno's IPCW C-index of a risk score (higher = earlier event), censoring weights from the
    training patients (scikit-survival's ``concordance_index_ipcw``)."""
    from sksurv.metrics import concordance_index_ipcw

    return float(concordance_index_ipcw(_surv(train_time, train_event), _surv(time, event),
                                        np.asarray(risk, dtype=float), tau=tau)[0])


def time_dependent_auc(train_time, train_event, time, event, risk, times) -> dict[float, float]:
    """Cumulative/dynamic AUC of a risk score at each of ``times`` (scikit-survival)."""
    from sksurv.metrics import cumulative_dynamic_auc

    values, _ = cumulative_dynamic_auc(_surv(train_time, train_event), _surv(time, event),
                                       np.asarray(risk, dtype=float), np.asarray(times, dtype=float))
    return {float(t): float(v) for t, v in zip(times, values)}


def integrated_brier(train_time, train_event, time, event, survival, times) -> float:
    """Integrated Brier score of predicted S(t) ``survival`` (n, len(times)) over ``times``
    (scikit-survival; the times must lie inside the test follow-up)."""
    from sksurv.metrics import integrated_brier_score

    return float(integrated_brier_score(_surv(train_time, train_event), _surv(time, event),
                                        np.asarray(survival, dtype=float),
                                        np.asarray(times, dtype=float)))


def bootstrap_ci(metric, *arrays, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 stratify=None) -> dict[str, float]:
    """Percentile bootstrap over patients of ``metric(*arrays)``: ``{"estimate", "ci_low",
    "ci_high", "n_boot"}``. Resamples where the metric cannot be computed (one class only)
    are skipped; ``stratify`` (n,) keeps each group's size in every resample."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    estimate = float(metric(*arrays))
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if stratify is None else [
        np.flatnonzero(np.asarray(stratify) == g) for g in np.unique(stratify)]
    values = []
    for _ in range(n_boot):
        index = np.concatenate([rng.choice(g, g.size, replace=True) for g in groups])
        try:
            values.append(float(metric(*[a[index] for a in arrays])))
        except (ModelError, ValueError, ZeroDivisionError):
            continue
    if not values:
        return {"estimate": estimate, "ci_low": float("nan"), "ci_high": float("nan"), "n_boot": 0}
    alpha = (1 - level) / 2
    return {"estimate": estimate, "ci_low": float(np.quantile(values, alpha)),
            "ci_high": float(np.quantile(values, 1 - alpha)), "n_boot": len(values)}


__all__ = ["auc", "brier", "ece", "coverage", "concordance", "survival_calibration", "log_loss",
           "calibration_line", "threshold_metrics", "ece_noise_floor", "multiclass_metrics",
           "uno_c", "time_dependent_auc", "integrated_brier", "bootstrap_ci"]
