"""Simulation-based calibration (Talts et al. 2018) of a HybridBN's inference.

For each replicate: draw the globals from their priors, simulate a cohort from the graph's
model with them, fit, and record the rank of each true global among the posterior draws. If
inference is calibrated the ranks are uniform; ``chi2`` tests that per parameter. The
preprocessing statistics (standardisation, levels) are fixed from a template cohort so that
the fitted prior is exactly the prior the data were simulated from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy import stats

from bayesrad.errors import ModelError
from bayesrad.graph.graph import Graph
from bayesrad.model.compile import Backend, Layout, design_arrays, local_pass
from bayesrad.model.design import Preprocessor, _level_numbers, blocks_of
from bayesrad.model.hybrid import HybridBN


@dataclass
class SBCResult:
    """``ranks``: DataFrame (replicates x parameters) of ranks in 0..n_draws; ``tests``:
    DataFrame per parameter with the chi-square statistic and p-value of uniform ranks over
    ``n_bins`` bins; ``n_draws``."""

    ranks: pd.DataFrame
    tests: pd.DataFrame
    n_draws: int

    @property
    def min_p_value(self) -> float:
        return float(self.tests["p_value"].min())


def simulate_from_prior(graph: Graph, template, seed: int = 0,
                        preprocessor: Preprocessor | None = None):
    """Draw globals from the priors and a cohort of ``template``'s patients from the model.

    Returns ``(blocks, theta)``: blocks in original units laid out like the template's,
    ``theta`` the drawn globals ``{site: tensor}`` on the model scale.
    """
    blocks = blocks_of(template)
    pre = preprocessor or Preprocessor(graph).fit(blocks)
    design = pre.transform(blocks)
    layout = Layout(graph, pre, set())
    be = Backend("pyro")
    arrays = design_arrays(layout, design, be, dtype=torch.float32)
    for key in list(arrays):
        if key.startswith("m:"):
            arrays[key] = torch.zeros_like(arrays[key])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        theta = {s.name: s.prior_dist(be).sample() for s in layout.sites}
        values = local_pass(layout, theta, arrays, be, lambda name, fn: fn.sample(),
                            mode="simulate")
    out: dict[str, pd.DataFrame] = {}
    index = design.patient_ids
    for name in layout.order:
        st = pre.stats_[name]
        kind = layout.kind[name]
        frame = out.setdefault(st["block"], pd.DataFrame(index=index))
        if kind == "latent":
            if st.get("transform"):
                raise ModelError(f"latent node {name!r}: simulating count blocks is not supported")
            cols = values[f"{name}.columns"].numpy() * np.asarray(st["sd"]) + np.asarray(st["mean"])
            for j, col in enumerate(st["columns"]):
                frame[col] = cols[:, j]
            continue
        if kind == "group":
            frame[name] = blocks[st["block"]].reindex(index)[name].to_numpy()
            continue
        value = values[name].numpy()
        if kind == "continuous":
            frame[name] = value * st["sd"] + st["mean"]
        elif kind == "binary":
            frame[name] = np.asarray(st["levels"], dtype=object)[value.astype(int)].astype(float)
        elif kind in ("categorical", "ordinal"):
            levels = st["levels"] if kind == "categorical" else _level_numbers(st["levels"])
            frame[name] = np.asarray(levels, dtype=object)[value.astype(int)]
        elif kind == "count":
            frame[name] = value
        elif kind == "survival":
            frame[name] = value * st["time_scale"]
            frame[st["event"]] = 1.0
    return out, theta


def simulation_based_calibration(graph: Graph, template, n_replicates: int = 50,
                                 n_draws: int = 99, n_bins: int = 5, seed: int = 0,
                                 sites: list[str] | None = None, **fit_settings) -> SBCResult:
    """Run SBC for ``graph`` on cohorts shaped like ``template`` (blocks or Cohort).

    Parameters
    ----------
    n_replicates : simulated cohorts (each is one fit).
    n_draws : posterior draws per fit; ranks lie in 0..n_draws.
    n_bins : rank bins of the chi-square test ((n_draws + 1) must divide evenly).
    sites : global sites to check (default: every coefficient, intercept and sd site).
    fit_settings : passed to ``HybridBN`` (method, num_steps, ...).
    """
    if (n_draws + 1) % n_bins:
        raise ModelError(f"n_draws + 1 ({n_draws + 1}) must be divisible by n_bins ({n_bins})")
    pre = Preprocessor(graph).fit(blocks_of(template))
    rows = []
    for r in range(n_replicates):
        blocks, theta = simulate_from_prior(graph, template, seed=seed + r, preprocessor=pre)
        model = HybridBN(graph, seed=seed + r, **fit_settings).fit(blocks, preprocessor=pre)
        draws = model.posterior_samples(n_draws, seed=seed + r)
        names = sites or [n for n in theta if any(t in n for t in (".coef.", ".intercept", ".sd"))]
        row = {}
        for name in names:
            truth = theta[name].reshape(-1)
            samples = draws[name].reshape(n_draws, -1)
            for j in range(truth.numel()):
                label = name if truth.numel() == 1 else f"{name}[{j}]"
                row[label] = int((samples[:, j] < truth[j]).sum())
        rows.append(row)
    ranks = pd.DataFrame(rows)
    tests = []
    for col in ranks.columns:
        counts = np.bincount(ranks[col].to_numpy() * n_bins // (n_draws + 1), minlength=n_bins)
        chi2, p = stats.chisquare(counts)
        tests.append({"parameter": col, "chi2": float(chi2), "p_value": float(p)})
    return SBCResult(ranks, pd.DataFrame(tests).set_index("parameter"), n_draws)


__all__ = ["SBCResult", "simulate_from_prior", "simulation_based_calibration"]
