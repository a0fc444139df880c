"""Model-agnostic explanations behind one interface: PDP and ICE (``sklearn.inspection``),
ALE (by hand), SHAP (``shap``'s kernel explainer) and LIME (``lime``), for HybridBN or
any model with ``predict(X)`` returning a DataFrame with ``mean`` (or an array), or a plain
callable ``f(X) -> (n,)``. ``X`` is a flat feature table (patients x columns)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from bayesrad.errors import ModelError

METHODS = ("pdp", "ice", "ale", "shap", "lime")


def predict_function(model, target: str | None = None, n_samples: int = 100,
                     which=None, horizon: float | None = None
                     ) -> Callable[[pd.DataFrame], np.ndarray]:
    """``f(X) -> (n,)`` predictions for a flat table ``X``.

    - a ``HybridBN`` (has ``preprocessor_``): ``X``'s columns are node or block columns; they
      are put back in their blocks and ``predict(..., target)["mean"]`` is returned
      (``target`` required); a categorical/ordinal target gives P(target = ``which``)
      (default its last level), a survival target S(``horizon``) (time units of the data,
      default the training median follow-up);
    - an object with ``predict``: its ``mean`` column if it returns a DataFrame, else the
      array;
    - a callable: used as it is.
    """
    if hasattr(model, "preprocessor_"):
        if target is None:
            raise ModelError("predict_function: a HybridBN needs target=")
        stats = model.preprocessor_.stats_
        kind = model.layout_.kind.get(target)
        column = "mean"
        if kind in ("categorical", "ordinal"):
            levels = [str(v) for v in stats[target]["levels"]]
            level = levels[-1] if which is None else str(which)
            if level not in levels:
                raise ModelError(f"predict_function: {which!r} is not a level of {target!r} "
                                 f"({levels})")
            column = f"P[{stats[target]['levels'][levels.index(level)]}]"
        elif kind == "survival":
            horizon = float(stats[target]["time_scale"] if horizon is None else horizon)
            column = f"S@{horizon:g}"

        def f(X):
            X = pd.DataFrame(X).copy()
            X.index = pd.Index([f"x{i}" for i in range(len(X))], name="patient_id")
            blocks = {}
            for st in stats.values():
                cols = [c for c in st["columns"] if c in X.columns]
                if cols:
                    block = blocks.setdefault(st["block"], pd.DataFrame(index=X.index))
                    for c in cols:
                        block[c] = X[c]
            times = [horizon] if kind == "survival" else None
            return model.predict(blocks, target, n_samples=n_samples,
                                 times=times)[column].to_numpy()
        return f
    if hasattr(model, "predict"):
        def f(X):
            out = model.predict(pd.DataFrame(X))
            return (out["mean"] if isinstance(out, pd.DataFrame) else np.asarray(out)
                    ).__array__().astype(float).ravel()
        return f
    if callable(model):
        return lambda X: np.asarray(model(pd.DataFrame(X)), dtype=float).ravel()
    raise ModelError(f"explain: {type(model).__name__} has no predict and is not callable")


class _Wrapped(RegressorMixin, BaseEstimator):
    """A prediction function as a fitted scikit-learn regressor (``sklearn.inspection``
    only calls ``predict``)."""

    def __init__(self, fn=None):
        self.fn = fn

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def predict(self, X):
        return self.fn(pd.DataFrame(X, columns=getattr(self, "columns_", None)))


def ale(fn, X: pd.DataFrame, feature: str, n_bins: int = 10) -> pd.DataFrame:
    """Accumulated local effects of a numeric ``feature`` (Apley & Zhu 2020), centred.

    Written by hand: neither scikit-learn nor shap has ALE, and its algorithm is short
    (quantile bins; mean prediction difference of each bin's patients moved to the bin's
    edges; accumulated; centred by the patients' average). Returns (edge, ale) per bin edge.
    """
    x = pd.to_numeric(X[feature], errors="coerce")
    edges = np.unique(np.nanquantile(x, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        raise ModelError(f"ale: feature {feature!r} has fewer than 2 distinct values")
    bins = np.clip(np.searchsorted(edges, x, side="left") - 1, 0, len(edges) - 2)
    effects = np.zeros(len(edges) - 1)
    counts = np.zeros(len(edges) - 1)
    for b in range(len(edges) - 1):
        rows = X[(bins == b) & x.notna().to_numpy()]
        if rows.empty:
            continue
        lo, hi = rows.copy(), rows.copy()
        lo[feature], hi[feature] = edges[b], edges[b + 1]
        effects[b] = np.mean(fn(hi) - fn(lo))
        counts[b] = len(rows)
    curve = np.concatenate([[0.0], np.cumsum(effects)])
    mids = (curve[:-1] + curve[1:]) / 2
    curve -= np.sum(mids * counts) / max(counts.sum(), 1)
    return pd.DataFrame({"edge": edges, "ale": curve})


def explain_model(model, X: pd.DataFrame, method: str, feature: str | None = None,
                  target: str | None = None, rows=None, background: int = 50, seed: int = 0,
                  n_samples: int = 100, which=None, horizon: float | None = None,
                  **options) -> pd.DataFrame:
    """One interface to PDP, ICE, ALE, SHAP and LIME.

    ``method``: ``"pdp"``/``"ice"``/``"ale"`` (need ``feature``; return ``value`` and
    ``mean`` per grid point, ICE also ``row``), ``"shap"`` (``shap.KernelExplainer`` on
    ``background`` rows of ``X``, interventional; tidy ``row, feature, value``) or ``"lime"`` (``lime_tabular`` in regression mode; tidy ``row, feature,
    value`` with LIME's condition text in ``rule``). ``rows``: the rows of ``X`` to explain
    (SHAP/LIME; default the first 10). ``which`` / ``horizon``: the class of a categorical
    HybridBN target / the time of a survival one (see ``predict_function``).
    """
    if method not in METHODS:
        raise ModelError(f"explain_model: method {method!r} is not one of {METHODS}")
    fn = predict_function(model, target, n_samples=n_samples, which=which, horizon=horizon)
    X = pd.DataFrame(X)
    if method in ("pdp", "ice", "ale"):
        if feature not in X.columns:
            raise ModelError(f"explain_model: feature {feature!r} is not a column of X "
                             f"({list(X.columns)[:10]} ...)")
        if method == "ale":
            return ale(fn, X, feature, **options)
        from sklearn.inspection import partial_dependence

        est = _Wrapped(fn).fit(X)
        est.columns_ = list(X.columns)
        res = partial_dependence(est, X, [feature], kind="both", method="brute",
                                 grid_resolution=options.get("grid_resolution", 10))
        grid = res["grid_values"][0]
        if method == "pdp":
            return pd.DataFrame({"value": grid, "mean": res["average"][0]})
        ice = res["individual"][0]                                   # (n, grid)
        return pd.DataFrame({"row": np.repeat(X.index.to_numpy(), len(grid)),
                             "value": np.tile(grid, len(X)), "mean": ice.ravel()})
    rows = list(X.index[:10]) if rows is None else list(rows)
    if method == "shap":
        import shap

        bg = X.sample(min(background, len(X)), random_state=seed)
        # KernelExplainer rather than PermutationExplainer: the latter JIT-compiles numba
        # code on first use (43 s on this 2-core machine) for the same values here
        explainer = shap.KernelExplainer(
            lambda a: fn(pd.DataFrame(a, columns=X.columns)), bg.to_numpy(dtype=float))
        values = np.asarray(explainer.shap_values(X.loc[rows].to_numpy(dtype=float),
                                                  nsamples=options.get("nsamples", "auto"),
                                                  silent=True))
        return pd.DataFrame({"row": np.repeat(rows, X.shape[1]),
                             "feature": list(X.columns) * len(rows), "value": values.ravel()})
    from lime.lime_tabular import LimeTabularExplainer

    explainer = LimeTabularExplainer(X.to_numpy(dtype=float), feature_names=list(X.columns),
                                     mode="regression", random_state=seed, discretize_continuous=True)
    out = []
    for r in rows:
        exp = explainer.explain_instance(
            X.loc[r].to_numpy(dtype=float),
            lambda a: fn(pd.DataFrame(a, columns=X.columns)),
            num_features=options.get("num_features", X.shape[1]),
            num_samples=options.get("num_samples", 500))
        # regression mode keeps one (dummy) label
        for j, w in next(iter(exp.as_map().values())):
            out.append({"row": r, "feature": X.columns[j], "value": w})
    return pd.DataFrame(out)
