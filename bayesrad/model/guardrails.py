"""Intervention guardrails: a ``do()`` value is checked against what the model was trained on.

A HybridBN's effects are linear (on the link scale) in its continuous parents; a value far
outside the training range is answered by extrapolating those lines without any data there
(``do(dose_mean_gy=500)`` gives P = 1.0 with sd 0). :func:`check_interventions` warns when a
value lies more than ``margin_sd`` training standard deviations outside the training range,
saying how far, and refuses under ``strict=True``; a value that is not a number for a
continuous or count node is an error. ``HybridBN.predict`` / ``counterfactual`` call it; the app
can call it on its own before a query.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

from bayesrad.errors import ModelError

# How far outside the training range (in training sds) a value may go before a warning. A
# convention, not a derived bound: two sds beyond the extremes keeps ordinary what-if queries
# ("+10 Gy" on a cohort treated at 54-66 Gy) quiet and catches values no plan would give
# (500 Gy: 137 sds; -1 Gy: 17 sds on the same cohort).
DEFAULT_MARGIN_SD = 2.0


class ExtrapolationWarning(UserWarning):
    """An intervention lies outside the training range by more than the margin."""


def _number(node: str, value, kind: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"do: {value!r} for {node!r} is not a number ({kind} node); give a value "
                         f"in the node's units (e.g. {node}=70) or a shift ({node}=+10)") from None
    if not math.isfinite(number):
        raise ModelError(f"do: {value!r} for {node!r} is not a finite number")
    return number


def check_interventions(do: Mapping | None, kinds: Mapping[str, str], stats: Mapping[str, Mapping],
                        margin_sd: float = DEFAULT_MARGIN_SD, strict: bool = False) -> dict[str, float]:
    """Check each ``{node: value}`` of ``do`` against the training statistics.

    ``kinds``: node -> kind (``"continuous"``, ``"count"``, ...); ``stats``: the fitted
    preprocessor's ``stats_`` (``mean``, ``sd`` and, for models fitted since the guardrails,
    ``min``/``max`` of the training values; otherwise mean +- 3 sd stands for the range). A
    string ``"+d"``/``"-d"`` is a shift, checked as the shift of a patient at the training mean.
    Only continuous and count nodes are checked (discrete levels are validated where they are
    encoded). Returns ``{node: distance}``, the distance outside the range in training sds (0
    inside). Warns (:class:`ExtrapolationWarning`) when a distance exceeds ``margin_sd``;
    ``strict=True`` raises ``ModelError`` instead.
    """
    distances: dict[str, float] = {}
    for node, value in (do or {}).items():
        kind = kinds.get(node)
        if kind not in ("continuous", "count"):
            continue
        st = stats[node]
        mean, sd = (st["mean"], st["sd"]) if kind == "continuous" else (st["enc_mean"], st["enc_sd"])
        shift = isinstance(value, str) and value.strip()[:1] in ("+", "-")
        number = _number(node, value, kind)
        x = mean + number if shift else number
        if kind == "count" and x < 0:
            raise ModelError(f"do: {node!r} is a count; {x:g} is negative")
        lo, hi = st.get("min", mean - 3 * sd), st.get("max", mean + 3 * sd)
        distance = max(lo - x, x - hi, 0.0) / sd
        distances[node] = distance
        if distance > margin_sd:
            side = "below" if x < lo else "above"
            what = f"a shift of {number:+g} (from the training mean {mean:.4g})" if shift else f"{x:g}"
            message = (f"do({node}={value}): {what} lies {distance:.1f} training sds {side} the "
                       f"training range [{lo:.4g}, {hi:.4g}] (sd {sd:.4g}); the answer extrapolates "
                       f"the fitted effects where no patient was seen")
            if strict:
                raise ModelError(message + "; use a value inside the range or drop strict")
            warnings.warn(message, ExtrapolationWarning, stacklevel=4)
    return distances


__all__ = ["check_interventions", "ExtrapolationWarning", "DEFAULT_MARGIN_SD"]
