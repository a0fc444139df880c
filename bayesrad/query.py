"""Questions to a fitted ``HybridBN``, as functions: predict, condition, intervene,
counterfactual.

These are the query layer's public spelling of the model's methods, so that explain/app/cli
code reads as the question it asks::

    from bayesrad.query import predict, condition, intervene, counterfactual
    condition(model, "local_control", {"age_years": 70, "stage": 3})
    intervene(model, "local_control", {"dose_mean_gy": 70}, evidence={"age_years": 70})
    counterfactual(model, cohort, "local_control", {"dose_mean_gy": "+10"})

Every answer is a tidy DataFrame indexed by patient_id (see ``HybridBN.predict``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from bayesrad.errors import ModelError
from bayesrad.model import HybridBN


def _check(model) -> HybridBN:
    if not isinstance(model, HybridBN):
        raise ModelError(f"expected a fitted HybridBN (got {type(model).__name__})")
    return model


def predict(model: HybridBN, data, target: str, n_samples: int | None = None,
            seed: int | None = None) -> pd.DataFrame:
    """Posterior predictive of ``target`` for each patient of ``data`` (Cohort or blocks);
    everything the patient lacks is marginalised."""
    return _check(model).predict(data, target, n_samples=n_samples, seed=seed)


def condition(model: HybridBN, target: str, evidence: Mapping | pd.DataFrame,
              n_samples: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """P(target | evidence) for one hypothetical patient (``{node or column: value}`` in
    original units) or a DataFrame of them."""
    return _check(model).query(target, evidence=evidence, n_samples=n_samples, seed=seed)


def intervene(model: HybridBN, target: str, do: Mapping, evidence: Mapping | None = None,
              n_samples: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """P(target | do(node = value), evidence): the intervened nodes are set for everyone and
    their incoming edges cut (their parents no longer explain them)."""
    if not do:
        raise ModelError("intervene needs at least one {node: value} in do=")
    return _check(model).query(target, evidence=evidence, do=do, n_samples=n_samples, seed=seed)


def counterfactual(model: HybridBN, data, target: str, do: Mapping,
                   n_samples: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """What ``target`` would have been for each patient of ``data`` had ``do`` held, given
    everything that was observed about them, the target's factual value included
    (abduction, action, prediction); ``"+10"`` shifts a patient's own value."""
    if not do:
        raise ModelError("counterfactual needs at least one {node: value} in do=")
    return _check(model).counterfactual(data, target, do, n_samples=n_samples, seed=seed)


def effect(model: HybridBN, target: str, node: str, low, high,
           evidence: Mapping | None = None, n_samples: int | None = None,
           seed: int | None = 0) -> dict[str, float]:
    """Average causal effect on ``target``'s mean of setting ``node`` from ``low`` to
    ``high`` (same posterior draws for both arms, so the difference is not noise)."""
    lo = intervene(model, target, {node: low}, evidence, n_samples, seed)["mean"].iloc[0]
    hi = intervene(model, target, {node: high}, evidence, n_samples, seed)["mean"].iloc[0]
    return {"low": float(lo), "high": float(hi), "difference": float(hi - lo)}


__all__ = ["predict", "condition", "intervene", "counterfactual", "effect"]
