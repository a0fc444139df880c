"""Parameter recovery: a fitted model's edge coefficients against a simulator's truth."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def true_coefficients(parameters: Mapping, exclude: tuple[str, ...] = ()) -> dict[tuple[str, str], float]:
    """The simulator's true edge coefficients, keyed like ``HybridBN.coefficients()`` rows:
    ``(parent_key, child_key)``, a categorical child's levels as ``"child[level]"`` (its
    first, reference level has no coefficient). ``parameters``: ``Simulation.truth.parameters``;
    edges touching a node named in ``exclude`` are left out (e.g. a latent whose axes the
    model identifies only up to rotation)."""
    out = {}
    for (parent, child), value in parameters["coef"].items():
        if any(name in parent or name in child for name in exclude):
            continue
        if isinstance(value, list):
            for level, v in zip(parameters["levels"][child][1:], value[1:]):
                out[(parent, f"{child}[{level}]")] = float(v)
        else:
            out[(parent, child)] = float(value)
    return out


def recovery(coefficients: pd.DataFrame, truth: Mapping[tuple[str, str], float],
             lower: str = "q05", upper: str = "q95") -> pd.DataFrame:
    """One row per true coefficient: ``truth``, the posterior ``mean``, ``sd``, the interval
    ``[lower, upper]`` columns of ``coefficients`` (``HybridBN.coefficients()``) and whether
    it holds the truth (``inside``). The share of ``inside`` is the recovery rate."""
    rows = []
    for key, value in truth.items():
        row = coefficients.loc[key]
        rows.append({"parent": key[0], "child": key[1], "truth": value, "mean": row["mean"],
                     "sd": row["sd"], "lower": row[lower], "upper": row[upper],
                     "inside": bool(row[lower] <= value <= row[upper])})
    return pd.DataFrame(rows).set_index(["parent", "child"])


__all__ = ["true_coefficients", "recovery"]
