"""Views read off the fitted graph: the target's Markov blanket, edge strengths with credible
intervals, path contributions of the linear parts, and one plain-language sentence per
patient."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from bayesrad.errors import ModelError
from bayesrad.explain._target import select
from bayesrad.model.compile import Backend

# intermediate node kinds through which an effect passes linearly (their value is their
# linear predictor plus noise); a binary, count or discrete node in between is not linear
_LINEAR = ("continuous", "latent")


def _node(model, name: str, role: str) -> str:
    if name not in model.layout_.kind:
        raise ModelError(f"{role} {name!r} is not a node of the graph (nodes: {model.graph_.nodes})")
    return name


def markov_blanket(model, target: str) -> list[str]:
    """Parents, children and the children's other parents of ``target``: given these, no other
    node's evidence changes its prediction."""
    return model.graph_.markov_blanket(_node(model, target, "target"))


def edge_strengths(model, n_samples: int | None = None) -> pd.DataFrame:
    """Every edge coefficient on the original scale with its 90% credible interval.

    Columns: parent, child (keys as ``HybridBN.coefficients``: ``node[level]`` for a
    categorical level, ``node[j]`` for a latent's dimension), mean, sd, q05, q95 (effect per
    original unit of the parent on the child's linear predictor) and ``credible``: the 90%
    interval excludes 0. Sorted by |std_mean| (the effect per posterior sd of the parent's
    encoding, comparable across units).
    """
    table = model.coefficients(n_samples).reset_index()
    table["credible"] = (table["q05"] > 0) | (table["q95"] < 0)
    order = table["std_mean"].abs().sort_values(ascending=False).index
    return table.loc[order].reset_index(drop=True)


def path_contributions(model, source: str, target: str, n_samples: int | None = None
                       ) -> pd.DataFrame:
    """How much of ``source``'s effect on ``target`` runs through each directed path.

    Only paths whose intermediate nodes are continuous or latent carry a linear effect (a
    product of coefficient matrices); other paths are listed with ``linear=False`` and no
    value. Effects are per original unit of ``source`` (its first encoding column: a binary
    or continuous source has one) on ``target``'s linear predictor (original units for a
    continuous target, logit for binary, log time for survival), computed per posterior draw
    so the 90% interval (q05, q95) of the product is exact. ``share``: the path's part of the
    sum of linear paths' means.
    """
    _node(model, source, "source")
    _node(model, target, "target")
    layout, be = model.layout_, Backend("pyro")
    g = model.posterior_samples(n_samples)
    graph = nx.DiGraph(model.graph_.edges)
    paths = (list(nx.all_simple_paths(graph, source, target))
             if source in graph and target in graph else [])
    if not paths:
        raise ModelError(f"no directed path from {source!r} to {target!r} in the graph")
    unit_in = model._unit(source)          # original units per unit of the source's encoding
    unit_out = model._child_unit(target)
    rows = []
    for path in paths:
        linear = all(layout.kind[n] in _LINEAR for n in path[1:-1])
        row = {"path": " -> ".join(path), "linear": linear, "mean": np.nan, "q05": np.nan,
               "q95": np.nan}
        if linear:
            effect = None
            for p, c in zip(path[:-1], path[1:]):
                w = layout.coef(g, c, p, be)                     # (S, enc_p, out_c)
                effect = w if effect is None else effect @ w
            draws = (effect[:, 0, 0] * unit_out / unit_in).double().numpy()
            row.update(mean=float(draws.mean()), q05=float(np.quantile(draws, 0.05)),
                       q95=float(np.quantile(draws, 0.95)))
        rows.append(row)
    out = pd.DataFrame(rows)
    total = out.loc[out["linear"], "mean"].sum()
    out["share"] = out["mean"] / total if total else np.nan
    return out


def sentence(contributions: pd.DataFrame, patient, target: str | None = None,
             digits: int = 2, which=None) -> str:
    """One plain-language sentence for ``patient`` from a ``shapley`` table, e.g.
    "P(local_control) 0.62 [0.48, 0.75]; dose_mean_gy pushes it up most (+0.09),
    stage down most (-0.07)." (the bracket is the prediction's 90% credible interval).

    A categorical target speaks of one class (``which``: a level; default the patient's most
    probable class, "P(stage = III) 0.55 [...]"), a survival target of its stated quantity
    ("P(os_days > 730) 0.62 [...]"; ``which`` picks S or RMST when both were computed)."""
    rows = contributions[contributions["patient"] == patient]
    if rows.empty:
        raise ModelError(f"sentence: patient {patient!r} is not in the contributions table")
    rows = select(rows, which, patient)
    first = rows.iloc[0]
    name = target or str(first.get("target", "target"))
    if "quantity" in rows:
        label = str(first["quantity"])
    else:
        label = f"P({name})" if first.get("kind", "binary") == "binary" else name
    text = f"{label} {first['prediction']:.{digits}f}"
    if "prediction_q05" in rows:
        text += f" [{first['prediction_q05']:.{digits}f}, {first['prediction_q95']:.{digits}f}]"
    parts = []
    up, down = rows.loc[rows["value"].idxmax()], rows.loc[rows["value"].idxmin()]
    if up["value"] > 0:
        parts.append(f"{up['node']} pushes it up most ({up['value']:+.{digits}f})")
    if down["value"] < 0:
        parts.append(f"{down['node']} {'down' if parts else 'pushes it down'} most "
                     f"({down['value']:+.{digits}f})")
    return text + ("; " + ", ".join(parts) if parts else "; no evidence moves it") + "."
