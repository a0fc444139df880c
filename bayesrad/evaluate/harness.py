"""One harness: bayesrad and the baselines on the same folds, metrics with confidence intervals.

``compare(data, target, models=[...], cv="5x3")`` fits every model on every training fold
(``sklearn.base.clone`` of the one given, so no state leaks between folds), predicts the held
out patients, and returns a tidy DataFrame (model, metric, estimate, ci_low, ci_high). The
estimate of a metric is computed on the pooled out-of-fold predictions (each patient's
prediction averaged over the repeats); its 95% CI is a percentile bootstrap over patients.
Per-fold values, the pooled predictions, fit times and the folds themselves are kept in
``result.attrs``; ``paired(result, "bayesrad", "l2", "auc")`` gives the difference of two
models with a paired bootstrap CI over the same patients.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone

from bayesrad.errors import ModelError
from bayesrad.evaluate import metrics as M
from bayesrad.evaluate.baselines import _Features, make_model
from bayesrad.model.design import blocks_of


# ----------------------------------------------------------------------------- folds
def make_folds(strata: np.ndarray, cv: str = "5x3", seed: int = 0, labels=None
               ) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Stratified K-fold x R repeats: ``"5x3"`` -> 15 (train, test, repeat) index triples,
    stratified on ``strata`` (n,) (the class code, or the event indicator for survival;
    ``labels[code]`` names a class in messages)."""
    from sklearn.model_selection import StratifiedKFold

    try:
        k, r = (int(v) for v in str(cv).lower().split("x"))
    except ValueError as exc:
        raise ModelError(f"cv must read like '5x3' (folds x repeats), got {cv!r}") from exc
    if k < 2 or r < 1:
        raise ModelError(f"cv {cv!r}: at least 2 folds and 1 repeat")
    values, counts = np.unique(strata, return_counts=True)
    if counts.min() < k:
        rare = values[int(np.argmin(counts))]
        rare = labels[int(rare)] if labels is not None else rare.item()
        raise ModelError(f"class {rare!r} has {int(counts.min())} patients, fewer than the {k} folds; "
                         f"use fewer folds (cv='{max(2, counts.min())}x{r}') or merge classes")
    out = []
    for repeat in range(r):
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed + repeat)
        out += [(tr, te, repeat) for tr, te in splitter.split(np.zeros(len(strata)), strata)]
    return out


def split_folds(split: pd.Series, patients: pd.Index) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The given train/test split: ``split`` holds 'train'/'test' per patient."""
    values = split.astype(str).str.lower().reindex(patients)
    unknown = sorted(set(values.dropna()) - {"train", "test"})
    if unknown or values.isna().any():
        raise ModelError(f"split column: values must be 'train' or 'test' for every patient "
                         f"(found {unknown or 'missing values'})")
    return [(np.flatnonzero(values == "train"), np.flatnonzero(values == "test"), 0)]


def centre_folds(centre: pd.Series, patients: pd.Index) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Leave one centre out: each centre is the test set once (external validation)."""
    values = centre.reindex(patients)
    if values.isna().any():
        who = list(patients[values.isna().to_numpy()][:3])
        raise ModelError(f"centre column: patients {who} have no centre; fill it or drop them")
    counts = values.value_counts()
    if len(counts) < 2:
        raise ModelError(f"centre column: one centre only ({counts.index[0]!r}); leave-one-centre-"
                         "out needs at least two")
    small = counts[counts < 2]
    if len(small):
        raise ModelError(f"centre {small.index[0]!r} has {int(small.iloc[0])} patient; a centre "
                         "needs at least 2 patients to be a test set (merge it with another)")
    return [(np.flatnonzero(values != c), np.flatnonzero(values == c), i)
            for i, c in enumerate(counts.index)]


def _subset(blocks: dict, patients) -> dict:
    keep = set(map(str, patients))
    return {b: f.loc[[i for i in f.index.map(str) if i in keep]] for b, f in blocks.items()}


def _drop_target(blocks: dict, features: _Features) -> dict:
    """Test blocks without the outcome columns (what a real prediction would not have)."""
    out = dict(blocks)
    frame = out[features.target_block]
    drop = [c for c in (features.target, features.event) if c and c in frame.columns]
    out[features.target_block] = frame.drop(columns=drop)
    return out


# ----------------------------------------------------------------------------- metrics
def _metric_fns(kind: str):
    if kind == "binary":
        return {"auc": M.auc, "brier": M.brier, "log_loss": M.log_loss,
                "ece": lambda y, p: M.ece(y, p, strategy="uniform"), "ece_quantile": M.ece,
                "calibration_slope": lambda y, p: M.calibration_line(y, p)["slope"],
                "calibration_intercept": lambda y, p: M.calibration_line(y, p)["intercept"]}
    if kind in ("categorical", "ordinal"):
        return {name: (lambda y, p, name=name: M.multiclass_metrics(y, p)[name])
                for name in ("accuracy", "balanced_accuracy", "brier", "top_label_ece",
                             "classwise_ece")}
    return {"c_index": lambda t, e, r: M.concordance(t, e, -r)}


# ----------------------------------------------------------------------------- compare
def compare(data, target: str, models: Sequence = ("bayesrad", "l1", "l2", "rf"),
            cv: str = "5x3", centre: str | None = None, split_column: str | None = None,
            seed: int = 0, n_boot: int = 1000, progress: bool = False) -> pd.DataFrame:
    """Fit ``models`` (names of ``baselines.REGISTRY`` or estimator objects) on the same folds.

    Parameters
    ----------
    data : a ``Cohort`` or ``{block: DataFrame}`` holding the features and the target.
    target : the outcome column (binary, categorical or survival time paired with its event).
    cv : ``"KxR"`` stratified folds x repeats (ignored with ``centre`` or ``split_column``).
    centre : a column naming each patient's centre: leave-one-centre-out.
    split_column : a column with 'train'/'test' per patient: the given split.
    n_boot : bootstrap resamples for the CIs.

    Returns the tidy table; ``result.attrs`` holds ``folds`` (per-fold metric values),
    ``predictions`` (pooled out-of-fold predictions per model), ``fit_seconds`` per model,
    ``outcome`` and the settings.
    """
    blocks = blocks_of(data)
    features = _Features(data, target)
    x = features.matrix(data)
    patients = x.index
    y, event = features.outcome(data, patients)
    known = ~np.isnan(y) if event is None else ~np.isnan(y) & ~np.isnan(event)
    if not known.any():
        raise ModelError(f"target {target!r} is missing for every patient")
    patients = patients[known]
    y = y[known]
    event = None if event is None else event[known]
    strata = y if event is None else event
    if features.kind != "survival" and len(np.unique(y)) < 2:
        raise ModelError(f"target {target!r} is constant ({features.classes[int(y[0])]!r}) for every patient")
    if centre is not None or split_column is not None:
        column = centre or split_column
        holder = [f for f in blocks.values() if column in f.columns]
        if not holder:
            raise ModelError(f"column {column!r} is in no block ({sorted(blocks)})")
        values = holder[0][column].rename(index=str)
        folds = centre_folds(values, patients) if centre else split_folds(values, patients)
    else:
        folds = make_folds(strata, cv, seed,
                           labels=None if event is not None else list(features.classes))
    for block, frame in blocks.items():
        if frame.reindex(patients.tolist()).notna().sum().sum() == 0 and len(frame.columns):
            raise ModelError(f"block {block!r} is missing for every patient with a known target; "
                             "drop it from the data")
    estimators = {(m if isinstance(m, str) else type(m).__name__): (make_model(m, seed) if isinstance(m, str) else m)
                  for m in models}
    n_repeats = max(f[2] for f in folds) + 1
    width = len(features.classes) if features.kind in ("categorical", "ordinal") else 1
    pooled = {name: np.zeros((n_repeats, len(patients), width)) for name in estimators}
    filled = {name: np.zeros((n_repeats, len(patients)), bool) for name in estimators}
    fold_rows, seconds = [], {name: [] for name in estimators}
    fns = _metric_fns(features.kind)
    iterator = [(i, f) for i, f in enumerate(folds)]
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="folds", mininterval=5.0)
    for i, (train, test, repeat) in iterator:
        train_blocks = _subset(blocks, patients[train])
        test_blocks = _drop_target(_subset(blocks, patients[test]), features)
        for name, estimator in estimators.items():
            model = clone(estimator)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(train_blocks, target)
                seconds[name].append(time.perf_counter() - start)
                answer = model.predict(test_blocks).reindex(patients[test])
            value = _score(answer, features)
            pooled[name][repeat, test] = value
            filled[name][repeat, test] = True
            row = {"model": name, "fold": i, "repeat": repeat}
            row.update(_fold_metrics(fns, features, y[test], None if event is None else event[test], value))
            fold_rows.append(row)
    rows, predictions = [], {}
    for name in estimators:
        average = _average(pooled[name], filled[name])
        predictions[name] = average
        for metric, fn in fns.items():
            args = _args(features.kind, y, event, average)
            ci = M.bootstrap_ci(fn, *args, n_boot=n_boot, seed=seed)
            rows.append({"model": name, "metric": metric, "estimate": ci["estimate"],
                         "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    result = pd.DataFrame(rows)
    result.attrs.update({
        "folds": pd.DataFrame(fold_rows), "predictions": predictions, "patients": list(patients),
        "outcome": {"y": y, "event": event, "kind": features.kind, "classes": features.classes},
        "fit_seconds": {k: float(np.mean(v)) for k, v in seconds.items()},
        "settings": {"target": target, "cv": cv, "centre": centre, "split_column": split_column,
                     "seed": seed, "n_boot": n_boot, "n_folds": len(folds), "n_patients": len(patients)},
    })
    return result


def _score(answer: pd.DataFrame, features: _Features) -> np.ndarray:
    if features.kind == "survival":
        return answer["risk"].to_numpy(float)[:, None]
    if features.kind == "binary":
        return answer["mean"].to_numpy(float)[:, None]
    return answer[[f"P[{c}]" for c in features.classes]].to_numpy(float)


def _average(values: np.ndarray, filled: np.ndarray) -> np.ndarray:
    count = filled.sum(0)
    return (values * filled[..., None]).sum(0) / np.maximum(count, 1)[:, None]


def _args(kind: str, y, event, value):
    """The metric functions' arguments for one kind of target."""
    if kind == "survival":
        return y, event, value[:, 0]
    if kind == "binary":
        return y, value[:, 0]
    return y.astype(int), value


def _fold_metrics(fns, features, y, event, value) -> dict:
    out = {}
    for metric, fn in fns.items():
        try:
            out[metric] = float(fn(*_args(features.kind, y, event, value)))
        except (ModelError, ValueError):
            out[metric] = float("nan")
    return out


def paired(result: pd.DataFrame, a: str, b: str, metric: str, n_boot: int = 2000,
           seed: int = 0) -> dict[str, float]:
    """Difference ``metric(a) - metric(b)`` on the same patients' pooled out-of-fold
    predictions, with a paired percentile bootstrap 95% CI (the same resampled patients for
    both models), and the per-fold differences' mean and sd."""
    preds, outcome = result.attrs["predictions"], result.attrs["outcome"]
    for name in (a, b):
        if name not in preds:
            raise ModelError(f"model {name!r} is not in this comparison ({sorted(preds)})")

    fns = _metric_fns(outcome["kind"])
    if metric not in fns:
        raise ModelError(f"metric {metric!r} is not computed for this target ({sorted(fns)})")
    fn = fns[metric]
    y, event = outcome["y"], outcome["event"]

    def diff(index):
        kept = None if event is None else event[index]
        pa = _args(outcome["kind"], y[index], kept, preds[a][index])
        pb = _args(outcome["kind"], y[index], kept, preds[b][index])
        return fn(*pa) - fn(*pb)

    n = len(y)
    index = np.arange(n)
    ci = M.bootstrap_ci(lambda i: diff(i.astype(int)), index, n_boot=n_boot, seed=seed)
    folds = result.attrs["folds"]
    per_fold = (folds[folds.model == a].set_index("fold")[metric]
                - folds[folds.model == b].set_index("fold")[metric])
    return {"difference": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
            "fold_mean": float(per_fold.mean()), "fold_sd": float(per_fold.std(ddof=1)),
            "n_folds": int(per_fold.notna().sum())}


def missing_modality_curve(data, target: str, block: str, models: Sequence = ("bayesrad", "early", "late"),
                           fractions: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
                           mechanism: str = "MCAR", cv: str = "5x1", seed: int = 0,
                           n_boot: int = 500, train_fraction: float = 0.0) -> pd.DataFrame:
    """AUC and ECE (with bootstrap CIs) as a share of the test patients lose ``block``.

    Each model is fitted once per fold (optionally with ``train_fraction`` of the training
    patients also losing the block, MCAR), then predicts the fold's test patients with the
    block removed for ``fraction`` of them: at random (``"MCAR"``) or preferentially for the
    patients with the highest value of the first continuous column outside the block and the
    outcome (``"MAR"``: missingness explained by an observed variable). Binary targets.
    Returns rows (model, fraction, metric, estimate, ci_low, ci_high).
    """
    if mechanism not in ("MCAR", "MAR"):
        raise ModelError(f"mechanism must be 'MCAR' or 'MAR' (got {mechanism!r})")
    blocks = blocks_of(data)
    if block not in blocks:
        raise ModelError(f"block {block!r} is not in the data ({sorted(blocks)})")
    features = _Features(data, target)
    if features.kind != "binary":
        raise ModelError("missing-modality curves are computed for binary targets")
    x = features.matrix(data)
    y, _ = features.outcome(data, x.index)
    keep = ~np.isnan(y)
    patients, y = x.index[keep], y[keep]
    driver = None
    if mechanism == "MAR":
        others = [c for c in x.columns if features.block_of.get(c) != block and x[c].nunique() > 5]
        if not others:
            raise ModelError("MAR needs a continuous column outside the block to drive missingness")
        driver = x.loc[patients, others[0]].rank(pct=True).fillna(0.5).to_numpy()
    rng = np.random.default_rng(seed)
    folds = make_folds(y, cv, seed)
    preds = {(m if isinstance(m, str) else type(m).__name__, f): np.full(len(y), np.nan)
             for m in models for f in fractions}
    for train, test, _ in folds:
        train_blocks = _subset(blocks, patients[train])
        if train_fraction > 0:
            lost = rng.random(len(train)) < train_fraction
            frame = train_blocks[block]
            train_blocks[block] = frame.drop(index=[p for p in patients[train][lost] if p in frame.index])
        test_blocks = _drop_target(_subset(blocks, patients[test]), features)
        fitted = {}
        for m in models:
            name = m if isinstance(m, str) else type(m).__name__
            model = clone(make_model(m, seed) if isinstance(m, str) else m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted[name] = model.fit(train_blocks, target)
        u = rng.random(len(test))
        for fraction in fractions:
            if mechanism == "MCAR":
                lost = u < fraction
            else:
                weight = driver[test]
                lost = u < np.clip(fraction * 2 * weight, 0, 1)
            view = dict(test_blocks)
            gone = [p for p in patients[test][lost] if p in view[block].index]
            view[block] = view[block].drop(index=gone)
            for name, model in fitted.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    answer = model.predict(view).reindex(patients[test])
                preds[(name, fraction)][test] = answer["mean"].to_numpy(float)
    rows = []
    for (name, fraction), p in preds.items():
        for metric, fn in (("auc", M.auc), ("ece", lambda a, b: M.ece(a, b, strategy="uniform"))):
            ci = M.bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed)
            rows.append({"model": name, "fraction": fraction, "metric": metric,
                         "estimate": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    out = pd.DataFrame(rows)
    out.attrs["settings"] = {"block": block, "mechanism": mechanism, "cv": cv, "seed": seed,
                             "train_fraction": train_fraction}
    return out


def to_json(result: pd.DataFrame) -> dict:
    """``{"models": {model: {metric: {estimate, ci_low, ci_high, folds}}}, ...}``."""
    folds = result.attrs["folds"]
    out: dict = {"models": {}, "settings": result.attrs["settings"],
                 "fit_seconds": result.attrs["fit_seconds"]}
    for row in result.itertuples(index=False):
        values = folds.loc[folds.model == row.model, row.metric].tolist()
        out["models"].setdefault(row.model, {})[row.metric] = {
            "estimate": row.estimate, "ci_low": row.ci_low, "ci_high": row.ci_high,
            "folds": [None if np.isnan(v) else float(v) for v in values]}
    return out


__all__ = ["compare", "paired", "to_json", "missing_modality_curve", "make_folds", "split_folds",
           "centre_folds"]
