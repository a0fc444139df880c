"""What-if curves from the graph: the target's posterior as one node sweeps a range, for each
patient (ICE) or averaged over the cohort (PDP), observational (the node's value is set as
evidence) or under ``do`` (the node is set by intervention: its incoming edges cut and its
descendants' measured values no evidence)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesrad.errors import ModelError
from bayesrad.explain._target import draws, quantities
from bayesrad.model.design import Design, blocks_of


def default_grid(model, node: str, n_points: int = 11) -> np.ndarray:
    """The 5th-95th percentile range of a continuous/count node in the training data
    (levels for discrete nodes), original units."""
    st = model.preprocessor_.stats_[node]
    kind = model.layout_.kind[node]
    if kind in ("binary", "categorical", "ordinal"):
        return np.asarray(st["levels"], dtype=object)
    if kind == "continuous":
        # a normal range from the training mean and sd (the design keeps no raw values)
        return np.linspace(st["mean"] - 1.645 * st["sd"], st["mean"] + 1.645 * st["sd"],
                           n_points)
    if kind == "count":
        return np.arange(0, n_points)
    raise ModelError(f"what_if: node {node!r} is {kind}; sweep a continuous, count or "
                     "discrete node")


def what_if(model, data, target: str, node: str, grid=None, do: bool = False,
            patients=None, n_samples: int = 200, seed: int = 0, n_particles: int = 16,
            horizon: float | None = None, survival_summary: str = "survival") -> pd.DataFrame:
    """ICE and PDP curves of ``target`` against ``node``.

    Returns a DataFrame with columns ``patient`` (a patient id, or ``"PDP"`` for the cohort
    average), ``value`` (the node's value, original units), ``quantity`` (what ``mean``
    is: ``"P(y)"`` for a binary target, the node's name for a continuous/count one,
    ``"P(y = level)"`` per class of a categorical/ordinal one -- with a ``class`` column --,
    ``"P(T > h)"`` and/or ``"RMST(T, h)"`` for a survival one at ``horizon`` (time units of
    the data, default the training median follow-up; ``survival_summary`` as in
    ``shapley``), with a ``horizon`` column), ``mean`` and ``q05``/``q95`` (90% band over
    posterior draws of the globals; the PDP's band is that of the cohort average, draw by
    draw) and ``mode`` (``"observe"`` or ``"do"``).
    """
    for name, role in ((target, "target"), (node, "node")):
        if name not in model.layout_.kind:
            raise ModelError(f"what_if: {role} {name!r} is not a node of the graph "
                             f"(nodes: {model.graph_.nodes})")
    if node == target:
        raise ModelError(f"what_if: node and target are both {node!r}")
    what = quantities(model, target, horizon, survival_summary)
    design = data if isinstance(data, Design) else model.preprocessor_.transform(blocks_of(data))
    if patients is not None:
        ids = list(design.patient_ids)
        missing = [p for p in np.atleast_1d(patients) if p not in ids]
        if missing:
            raise ModelError(f"what_if: patients {missing} are not in the data")
        design = design.take(np.array([ids.index(p) for p in np.atleast_1d(patients)]))
    grid = default_grid(model, node) if grid is None else np.asarray(grid, dtype=object)
    frames = []
    for value in grid:
        if do:
            d = draws(model, design, what, n_samples=n_samples, seed=seed, do={node: value},
                      n_particles=n_particles)
        else:
            # the value as evidence in every row (model scale, as HybridBN's do= converts it)
            set_design = design.take(np.arange(design.n))
            scaled = model._to_model_scale(node, value, design.n).numpy()
            set_design.values[node] = scaled.astype(design.values[node].dtype)
            set_design.observed[node] = np.ones(design.n, dtype=bool)
            d = draws(model, set_design, what, n_samples=n_samples, seed=seed,
                      n_particles=n_particles)                                     # (S, n, K)
        curves = [d, d.mean(1, keepdims=True)]
        names = [list(design.patient_ids), ["PDP"]]
        for j in range(d.shape[-1]):
            for c, who in zip(curves, names):
                frames.append(pd.DataFrame({
                    "patient": who, "value": [value] * len(who), **what.columns(j),
                    "mean": c[..., j].mean(0), "q05": np.quantile(c[..., j], 0.05, axis=0),
                    "q95": np.quantile(c[..., j], 0.95, axis=0),
                    "mode": "do" if do else "observe"}))
    return pd.concat(frames, ignore_index=True)
