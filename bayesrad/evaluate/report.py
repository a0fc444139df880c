"""One self-contained HTML page of a comparison: the table with CIs, ROC curves and
reliability diagrams (binary), class calibration (categorical), Kaplan-Meier by predicted risk
group (survival), missing-modality curves when given, and the settings. Plots are matplotlib
PNGs embedded as base64, so the page opens anywhere and prints to PDF."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _binary_plots(result) -> list[str]:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y = result.attrs["outcome"]["y"]
    preds = result.attrs["predictions"]
    fig, (roc, rel) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, p in preds.items():
        fpr, tpr, _ = roc_curve(y, p[:, 0])
        roc.plot(fpr, tpr, label=name)
        edges = np.quantile(p[:, 0], np.linspace(0, 1, 11))
        bins = np.clip(np.searchsorted(edges, p[:, 0], side="right") - 1, 0, 9)
        means = [(p[bins == b, 0].mean(), y[bins == b].mean()) for b in range(10) if np.any(bins == b)]
        rel.plot(*zip(*means), marker="o", label=name)
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (pooled out-of-fold)")
    rel.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    rel.set(xlabel="predicted probability (decile bins)", ylabel="observed share",
            title="Reliability diagram")
    roc.legend(fontsize=8)
    return ["<h3>ROC curves and reliability diagram</h3>" + _png(fig)]


def _survival_plots(result) -> list[str]:
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter

    out = result.attrs["outcome"]
    t, e = out["y"], out["event"]
    plots = []
    for name, risk in result.attrs["predictions"].items():
        fig, ax = plt.subplots(figsize=(5, 3.6))
        groups = np.digitize(risk[:, 0], np.quantile(risk[:, 0], [1 / 3, 2 / 3]))
        for g, label in enumerate(("low risk", "middle", "high risk")):
            mask = groups == g
            if mask.sum() > 1:
                KaplanMeierFitter().fit(t[mask], e[mask], label=label).plot_survival_function(ax=ax)
        ax.set(title=f"{name}: Kaplan-Meier by predicted risk tertile", xlabel="time", ylabel="S(t)")
        plots.append(f"<h3>{html.escape(str(name))}: survival by predicted risk tertile</h3>" + _png(fig))
    return plots


def _curve_plots(curves: pd.DataFrame) -> list[str]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("auc", "ece")):
        part = curves[curves.metric == metric]
        for name, rows in part.groupby("model"):
            rows = rows.sort_values("fraction")
            ax.plot(rows.fraction, rows.estimate, marker="o", label=name)
            ax.fill_between(rows.fraction, rows.ci_low, rows.ci_high, alpha=0.15)
        ax.set(xlabel=f"share of test patients without block {curves.attrs['settings']['block']!r}",
               ylabel=metric.upper(), title=f"{metric.upper()} as the block goes missing "
                                            f"({curves.attrs['settings']['mechanism']})")
        ax.legend(fontsize=8)
    return ["<h3>Missing-modality curves</h3>" + _png(fig)]


def write_report(result: pd.DataFrame, path, curves: pd.DataFrame | None = None,
                 title: str = "bayesrad evaluation") -> Path:
    """Write the comparison ``result`` of ``compare`` (and optional ``missing_modality_curve``
    rows) as one HTML file at ``path``; returns the path."""
    kind = result.attrs["outcome"]["kind"]
    table = result.pivot_table(index="model", columns="metric",
                               values=["estimate", "ci_low", "ci_high"], aggfunc="first")
    cells = []
    metrics = list(dict.fromkeys(result.metric))
    header = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    for model in dict.fromkeys(result.model):
        row = "".join(
            f"<td>{table.loc[model, ('estimate', m)]:.3f} "
            f"<small>[{table.loc[model, ('ci_low', m)]:.3f}, {table.loc[model, ('ci_high', m)]:.3f}]</small></td>"
            for m in metrics)
        seconds = result.attrs["fit_seconds"].get(model, float("nan"))
        cells.append(f"<tr><th>{html.escape(str(model))}</th>{row}<td>{seconds:.2f}</td></tr>")
    plots = (_binary_plots(result) if kind == "binary"
             else _survival_plots(result) if kind == "survival" else [])
    if curves is not None and len(curves):
        plots += _curve_plots(curves)
    settings = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>"
                       for k, v in result.attrs["settings"].items())
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}small{{color:#666}}img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>Every model was fitted on the same folds; estimates on the pooled out-of-fold predictions,
95% percentile bootstrap intervals over patients. Target kind: {html.escape(kind)}.</p>
<table><tr><th>model</th>{header}<th>fit s / fold</th></tr>{''.join(cells)}</table>
<h2>Plots</h2>{''.join(plots)}
<h2>Settings</h2><ul>{settings}</ul></body></html>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["write_report"]
