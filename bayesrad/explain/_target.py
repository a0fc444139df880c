"""What an explanation explains: the target's quantities, one or several.

A binary target is explained through P(target = 1), a continuous or count one through its
posterior mean, a categorical or ordinal one through P(target = level) for every level (one
quantity per class: Shapley efficiency holds class by class), a survival one through S(h) =
P(T > h) and/or the restricted mean survival time up to h, with the horizon h in the survival
column's time units (days by bayesrad's convention), default the median observed (follow-up)
time of the training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesrad.errors import ModelError

SURVIVAL_SUMMARIES = ("survival", "rmst", "both")


@dataclass(frozen=True)
class Quantities:
    """The K quantities of ``target``: ``labels`` (K,) as printed (e.g. ``"P(stage = III)"``,
    ``"P(os_days > 730)"``), ``classes`` (K,) the levels of a categorical/ordinal target
    (None otherwise), ``horizon`` of a survival target (time units of the data) and its
    ``summaries`` (``"survival"`` and/or ``"rmst"``)."""

    target: str
    kind: str
    labels: tuple
    classes: tuple | None = None
    horizon: float | None = None
    summaries: tuple = ()

    def columns(self, j: int) -> dict:
        """Columns naming quantity ``j`` in a tidy table."""
        out = {"quantity": self.labels[j]}
        if self.classes is not None:
            out["class"] = self.classes[j]
        if self.horizon is not None:
            out["horizon"] = self.horizon
        return out


def quantities(model, target: str, horizon: float | None = None,
               survival_summary: str = "survival") -> Quantities:
    """The quantities explaining ``target`` (see the module docstring)."""
    kinds = model.layout_.kind
    if target not in kinds:
        raise ModelError(f"target {target!r} is not a node of the graph (nodes: {model.graph_.nodes})")
    kind = kinds[target]
    st = model.preprocessor_.stats_.get(target, {})
    if kind == "binary":
        return Quantities(target, kind, (f"P({target})",))
    if kind in ("continuous", "count"):
        return Quantities(target, kind, (target,))
    if kind in ("categorical", "ordinal"):
        levels = tuple(str(v) for v in st["levels"])
        return Quantities(target, kind, tuple(f"P({target} = {v})" for v in levels), levels)
    if kind == "survival":
        if survival_summary not in SURVIVAL_SUMMARIES:
            raise ModelError(f"survival_summary {survival_summary!r} must be one of "
                             f"{SURVIVAL_SUMMARIES} (S at the horizon, restricted mean "
                             "survival time up to it, or both)")
        h = float(st["time_scale"] if horizon is None else horizon)
        if not h > 0:
            raise ModelError(f"horizon {horizon!r} for the survival target {target!r} must be "
                             "a positive time in the data's time units")
        summaries = ("survival", "rmst") if survival_summary == "both" else (survival_summary,)
        labels = tuple(f"P({target} > {h:g})" if s == "survival" else f"RMST({target}, {h:g})"
                       for s in summaries)
        return Quantities(target, kind, labels, horizon=h, summaries=summaries)
    raise ModelError(f"target {target!r} is a {kind} node; explain an observed node")


def draws(model, data, q: Quantities, **kwargs) -> np.ndarray:
    """Per-draw posterior means (S, n, K) of the K quantities (``HybridBN.predict_draws``;
    ``kwargs``: n_samples, seed, do, ignore, n_particles)."""
    if q.kind == "survival":
        # the same seed: the same draws and particles for both summaries
        return np.stack([model.predict_draws(data, q.target, horizon=q.horizon, summary=s,
                                             **kwargs) for s in q.summaries], axis=-1)
    out = model.predict_draws(data, q.target, **kwargs)
    return out if out.ndim == 3 else out[..., None]


def select(table: pd.DataFrame, which=None, patient=None) -> pd.DataFrame:
    """The rows of one quantity of a tidy table (``shapley`` or ``what_if``): ``which`` a class
    level or a quantity label; default the quantity with the highest prediction (for
    ``patient``, else on average) for a categorical target, else the first quantity."""
    if "quantity" not in table or table["quantity"].nunique() <= 1:
        return table
    if which is None:
        if "class" in table:
            rows = table if patient is None else table[table["patient"] == patient]
            column = "prediction" if "prediction" in rows else "mean"
            which = rows.groupby("quantity", sort=False)[column].mean().idxmax()
        else:
            which = table["quantity"].iloc[0]
    which = str(which)
    mask = table["quantity"] == which
    if "class" in table:
        mask = mask | (table["class"].astype(str) == which)
    if not mask.any():
        raise ModelError(f"{which!r} is neither a class nor a quantity of this table "
                         f"({sorted(table['quantity'].unique())})")
    return table[mask]
