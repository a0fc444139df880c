"""Shapley values over a patient's evidence, computed from the graph itself.

A coalition's value is the model's posterior mean of the target with only that coalition's
evidence observed; every other node is hidden and so marginalised by the model (the
conditional definition, exact in a Bayesian network rather than a background-data
approximation). ``causal=True`` replaces conditioning by intervention, v(S) = E[target |
do(x_S)] (causal Shapley values, Heskes et al. 2020).

Every coalition is answered on the SAME posterior draws of the globals, so the Shapley
values are computed per draw and their 5% / 95% quantiles are a 90% credible interval;
efficiency (values sum to prediction - base) holds in every draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bayesrad.errors import CohortError, ModelError
from bayesrad.explain._target import Quantities, draws, quantities
from bayesrad.model.design import Design, blocks_of

MAX_EXACT = 12


def shapley_weights(k: int) -> np.ndarray:
    """w[s] = s! (k - s - 1)! / k! for a coalition of size s not holding the player, (k,)."""
    return np.array([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
                     for s in range(k)])


def exact_from_values(values: np.ndarray) -> np.ndarray:
    """Shapley values from a table of coalition values.

    ``values``: (2**k, ...) with row ``mask`` the value of the coalition whose players are the
    set bits of ``mask`` (player j <-> bit j). Returns (k, ...).
    """
    n = values.shape[0]
    k = int(round(math.log2(n)))
    if 2 ** k != n:
        raise ModelError(f"exact Shapley needs 2**k coalition values, got {n}")
    masks = np.arange(n)
    size = np.array([bin(m).count("1") for m in masks])
    w = shapley_weights(k) if k else np.zeros(0)
    out = np.empty((k,) + values.shape[1:])
    for j in range(k):
        without = masks[(masks >> j) & 1 == 0]
        gain = values[without | (1 << j)] - values[without]
        out[j] = np.tensordot(w[size[without]], gain, axes=(0, 0))
    return out


def _players(model, design: Design, target: str, nodes) -> tuple[list[str], list[list[str]]]:
    """Names and node lists of the players: nodes, or blocks (every node of the block)."""
    graph = model.graph_
    kinds = model.layout_.kind
    if target not in kinds:
        raise ModelError(f"shapley: target {target!r} is not a node of the graph "
                         f"(nodes: {graph.nodes})")
    blocks: dict[str, list[str]] = {}
    for name in graph.nodes:
        block = getattr(graph.spec(name), "block", None)
        if block and kinds.get(name) not in (None, "group"):
            blocks.setdefault(block, []).append(name)
    if nodes is None:
        later = graph.descendants(target) | {target}
        names = [n for n in graph.nodes if n not in later and kinds.get(n) != "group"
                 and np.asarray(design.observed[n]).any()]
        return names, [[n] for n in names]
    names, groups = [], []
    for item in nodes:
        if item in kinds and kinds[item] != "group":
            groups.append([item])
        elif item in blocks:
            groups.append([n for n in blocks[item] if n != target])
        else:
            raise ModelError(f"shapley: {item!r} is neither a node nor a block of the graph "
                             f"(nodes: {graph.nodes}; blocks: {sorted(blocks)})")
        if target in groups[-1] or not groups[-1]:
            raise ModelError(f"shapley: {item!r} is (or holds only) the target {target!r}; "
                             "its own value is never evidence for itself")
        names.append(item)
    return names, groups


def _hide(design: Design, rows: np.ndarray, hidden: np.ndarray, groups) -> Design:
    """The patient's design replicated at ``rows``; ``hidden`` (len(rows), k) bool hides the
    players' nodes (unobserved with value 0: the design's contract)."""
    out = design.take(rows)
    for j, group in enumerate(groups):
        h = hidden[:, j]
        for node in group:
            obs = out.observed[node].copy()
            val = out.values[node].copy()
            obs[h] = False
            val[h] = 0
            out.observed[node], out.values[node] = obs, val
    return out


def _original_value(model, design: Design, node: str, row: int):
    """A patient's observed value of ``node`` in original units (for ``do``); None if missing."""
    st = model.preprocessor_.stats_[node]
    kind = model.layout_.kind[node]
    if not bool(np.asarray(design.observed[node][row]).all()):
        return None
    x = design.values[node][row]
    if kind == "continuous":
        return float(x) * st["sd"] + st["mean"]
    if kind in ("binary", "categorical", "ordinal"):
        return st["levels"][int(x)]
    if kind == "count":
        return float(x)
    raise ModelError(f"shapley(causal=True): node {node!r} is {kind}; an intervention needs a "
                     "continuous, count or discrete node (explain a latent block "
                     "observationally)")


def _patient_rows(design: Design, patients) -> list[int]:
    ids = list(design.patient_ids)
    if patients is None:
        return list(range(len(ids)))
    if isinstance(patients, (str, int)):
        patients = [patients]
    rows = []
    for p in patients:
        if p not in ids:
            raise CohortError(f"shapley: patient {p!r} is not in the data "
                              f"({len(ids)} patients, e.g. {ids[:3]})")
        rows.append(ids.index(p))
    return rows


def _design_for(model, data, patients) -> Design:
    """The design of ``data``, only the requested patients transformed (explaining one patient
    of a large cohort should not pay for encoding all of them)."""
    if isinstance(data, Design):
        return data
    blocks = blocks_of(data)
    if patients is None:
        return model.preprocessor_.transform(blocks)
    wanted = [patients] if isinstance(patients, (str, int)) else list(patients)
    # the design keys patients by their id as text (Preprocessor.transform)
    known = {str(i) for b in blocks.values() for i in b.index}
    for p in wanted:
        if str(p) not in known:
            raise CohortError(f"shapley: patient {p!r} is not in the data "
                              f"({len(known)} patients, e.g. {sorted(known)[:3]})")
    wanted = [str(p) for p in wanted]
    blocks = {k: v.loc[v.index.map(str).isin(wanted)] for k, v in blocks.items()}
    return model.preprocessor_.transform(blocks, patient_ids=pd.Index(wanted, name="patient_id"))


def shapley(model, data, target: str, nodes: Sequence[str] | None = None,
            method: str = "exact", causal: bool = False, n_samples: int = 200, seed: int = 0,
            patients=None, n_permutations: int = 64, n_particles: int = 32,
            horizon: float | None = None, survival_summary: str = "survival") -> pd.DataFrame:
    """Shapley contributions of each patient's evidence to the posterior mean of ``target``.

    Parameters
    ----------
    model : a fitted ``HybridBN``.
    data : cohort, blocks or ``Design`` holding the patients.
    target : the node explained, through the quantities of ``bayesrad.explain._target``:
        binary P(target = 1); continuous or count its mean (original units); categorical or
        ordinal P(target = level) for every level (one set of values per class, each with
        its own efficiency); survival S(horizon) = P(T > horizon) and/or the restricted mean
        survival time up to ``horizon`` (``survival_summary`` ``"survival"``, ``"rmst"`` or
        ``"both"``), horizon in the survival column's time units (days), default the median
        observed (follow-up) time of the training data.
    nodes : players: node names or block names (a block plays as one: all its nodes are
        observed or hidden together). Default: every node observed for some patient explained
        that is neither the target nor one of its descendants. Nodes that are not players are hidden
        in every coalition (the base value is the prediction with no evidence at all).
    method : ``"exact"`` (all 2**k coalitions, k <= 12, one batched model call per patient)
        or ``"sampled"`` (``n_permutations`` random orders; ``mc_se`` is the Monte Carlo
        standard error of each value).
    causal : coalitions by intervention, v(S) = E[target | do(x_S)] (Heskes et al. 2020):
        a node with no directed path to the target gets 0. One model call per coalition and
        patient (the interventions differ per row), so keep k small.
    n_samples : posterior draws of the globals (the same for every coalition).
    patients : patient ids to explain (default: all of ``data``).
    n_particles : particles of the unobserved nodes per draw (common random numbers across
        coalitions): the 90% interval is then the globals' uncertainty, not particle noise.

    Returns
    -------
    DataFrame, one row per (patient, player[, class]): ``patient, node, value, q05, q95,
    mc_se, base, prediction, prediction_q05, prediction_q95, target, kind, quantity`` (the
    quantity explained, e.g. ``"P(stage = III)"``, ``"P(os_days > 730)"``), plus ``class``
    for a categorical/ordinal target and ``horizon`` for a survival one. ``value`` is the
    posterior mean contribution (the quantity's units), ``q05``/``q95`` its 90% credible
    interval over the draws, ``base`` the prediction with no evidence and ``prediction`` with
    all players' evidence; per patient and quantity ``value`` sums to ``prediction - base``
    (exactly, draw by draw).
    """
    if method not in ("exact", "sampled"):
        raise ModelError(f"shapley: method {method!r} must be 'exact' or 'sampled'")
    what = quantities(model, target, horizon, survival_summary)
    design = _design_for(model, data, patients)
    if patients is not None and not isinstance(data, Design):
        patients = [str(p) for p in ([patients] if isinstance(patients, (str, int))
                                     else patients)]
    rows = _patient_rows(design, patients)
    names, groups = _players(model, design, target, nodes)
    k = len(names)
    if method == "exact" and k > MAX_EXACT:
        raise ModelError(f"shapley: {k} players with method='exact' (at most {MAX_EXACT}: "
                         f"2**{k} coalitions); pass method='sampled' or fewer nodes/blocks")
    outsiders = [n for n in model.graph_.nodes
                 if n != target and model.layout_.kind[n] != "group"
                 and not any(n in g for g in groups)]
    rng = np.random.default_rng(seed)
    frames = []
    for row in rows:
        if method == "exact":
            masks = np.arange(2 ** k)
            coalitions = ((masks[:, None] >> np.arange(k)) & 1).astype(bool)   # (2**k, k)
        else:
            orders = np.array([rng.permutation(k) for _ in range(n_permutations)])
            # coalition t of permutation m: its first t players (t = 0..k)
            coalitions = np.zeros((n_permutations, k + 1, k), dtype=bool)
            for t in range(1, k + 1):
                coalitions[np.arange(n_permutations)[:, None], t, orders[:, :t]] = True
            coalitions = coalitions.reshape(-1, k)
        values = _coalition_values(model, design, row, what, groups, coalitions, causal,
                                   outsiders, n_samples, seed, n_particles)              # (C, S, K)
        if method == "exact":
            phi = exact_from_values(values)                                       # (k, S, K)
            mc = np.zeros((k, values.shape[-1]))
            base, full = values[0], values[-1]                                    # (S, K)
        else:
            v = values.reshape((n_permutations, k + 1) + values.shape[1:])
            gains = np.diff(v, axis=1)                                            # (M, k, S, K)
            per_perm = np.empty_like(gains)
            per_perm[np.arange(n_permutations)[:, None], orders] = gains
            phi = per_perm.mean(0)
            mc = (per_perm.mean(2).std(0, ddof=1) / math.sqrt(n_permutations)
                  if n_permutations > 1 else np.full((k, values.shape[-1]), np.nan))
            base, full = v[0, 0], v[0, -1]
        for j in range(values.shape[-1]):
            frame = pd.DataFrame({
                "patient": design.patient_ids[row], "node": names, "value": phi[:, :, j].mean(1),
                "q05": np.quantile(phi[:, :, j], 0.05, axis=1),
                "q95": np.quantile(phi[:, :, j], 0.95, axis=1),
                "mc_se": mc[:, j], "base": float(base[:, j].mean()),
                "prediction": float(full[:, j].mean()),
                "prediction_q05": float(np.quantile(full[:, j], 0.05)),
                "prediction_q95": float(np.quantile(full[:, j], 0.95)),
                "target": target, "kind": what.kind, **what.columns(j)})
            if "class" in frame:        # the class right after the node: tidy by (patient, node, class)
                frame.insert(2, "class", frame.pop("class"))
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _coalition_values(model, design, row, what: Quantities, groups, coalitions, causal,
                      outsiders, n_samples, seed, n_particles) -> np.ndarray:
    """(C, S, K) per-draw values of the K quantities for the C coalitions (rows of
    ``coalitions``, (C, k) bool)."""
    if not causal:
        # one design with a row per coalition, one batched model call over the same draws
        rep = np.full(len(coalitions), row)
        coalition_design = _hide(design, rep, ~coalitions, groups)
        return draws(model, coalition_design, what, n_samples=n_samples, seed=seed,
                     ignore=outsiders, n_particles=n_particles).transpose(1, 0, 2)
    single = design.take(np.array([row]))
    cache: dict[bytes, np.ndarray] = {}
    out = []
    for c in coalitions:
        key = c.tobytes()
        if key not in cache:
            do = {}
            for j in np.flatnonzero(c):
                for node in groups[j]:
                    value = _original_value(model, design, node, row)
                    if value is not None:
                        do[node] = value
            hidden = outsiders + [n for j in np.flatnonzero(~c) for n in groups[j]]
            cache[key] = draws(model, single, what, n_samples=n_samples, seed=seed,
                               do=do or None, ignore=hidden, n_particles=n_particles)[:, 0]
        out.append(cache[key])
    return np.stack(out)
