"""matplotlib figures: per-patient waterfall, cohort beeswarm, what-if curves with bands."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesrad.explain._target import select


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def waterfall(contributions: pd.DataFrame, patient, ax=None, which=None):
    """From the base value to the prediction, one bar per node (largest |value| first), with
    each value's 90% credible interval as an error bar. ``which``: the class (categorical
    target; default the patient's most probable) or quantity (survival S / RMST) shown."""
    plt = _plt()
    rows = select(contributions[contributions["patient"] == patient], which, patient)
    rows = rows.reindex(rows["value"].abs().sort_values(ascending=False).index)
    ax = ax or plt.subplots(figsize=(6, 0.4 * len(rows) + 1.5))[1]
    start = float(rows["base"].iloc[0])
    for i, (_, r) in enumerate(rows.iterrows()):
        ax.barh(i, r["value"], left=start, color="tab:red" if r["value"] > 0 else "tab:blue")
        ax.errorbar(start + r["value"], i, xerr=[[r["value"] - r["q05"]], [r["q95"] - r["value"]]],
                    color="black", capsize=2, lw=0.8)
        start += r["value"]
    ax.set_yticks(range(len(rows)), rows["node"])
    ax.invert_yaxis()
    ax.axvline(rows["base"].iloc[0], color="grey", ls=":", lw=0.8)
    ax.axvline(rows["prediction"].iloc[0], color="black", ls="--", lw=0.8)
    ax.set_xlabel(f"{_label(rows)} (base -> prediction)")
    ax.set_title(f"patient {patient}")
    return ax.figure


def _label(rows: pd.DataFrame) -> str:
    if "quantity" in rows:
        return str(rows["quantity"].iloc[0])
    return str(rows["target"].iloc[0]) if "target" in rows else "target"


def beeswarm(contributions: pd.DataFrame, ax=None, seed: int = 0, which=None):
    """Every patient's contribution per node (jittered), nodes by mean |value|; one class or
    quantity (``which``, default the class most probable on average) of a categorical or
    survival target."""
    plt = _plt()
    contributions = select(contributions, which)
    order = (contributions.assign(a=contributions["value"].abs()).groupby("node")["a"].mean()
             .sort_values(ascending=False).index)
    ax = ax or plt.subplots(figsize=(6, 0.4 * len(order) + 1.5))[1]
    rng = np.random.default_rng(seed)
    for i, node in enumerate(order):
        v = contributions.loc[contributions["node"] == node, "value"].to_numpy()
        ax.scatter(v, i + rng.uniform(-0.25, 0.25, len(v)), s=8, alpha=0.6)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"contribution to {_label(contributions)}")
    return ax.figure


def what_if_plot(curves: pd.DataFrame, patient="PDP", ax=None, which="all"):
    """Mean and 90% band of a ``what_if`` table for one patient (or ``"PDP"``), one line per
    mode (observe / do) and quantity (every class of a categorical target unless ``which``
    names one)."""
    plt = _plt()
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    rows = curves[curves["patient"] == patient]
    if which != "all":
        rows = select(rows, which, patient)
    by = ["quantity", "mode"] if "quantity" in rows else ["mode"]
    several = "quantity" in rows and rows["quantity"].nunique() > 1
    for key, c in rows.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        x = np.arange(len(c)) if c["value"].dtype == object else c["value"].to_numpy(float)
        ax.plot(x, c["mean"], label=" ".join(map(str, key)) if several else key[-1])
        ax.fill_between(x, c["q05"].astype(float), c["q95"].astype(float), alpha=0.2)
        if c["value"].dtype == object:
            ax.set_xticks(x, [str(v) for v in c["value"]])
    ax.legend(fontsize=7)
    if "quantity" in rows and not several:
        ax.set_ylabel(str(rows["quantity"].iloc[0]))
    ax.set_title(str(patient))
    return ax.figure
