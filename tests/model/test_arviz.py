"""``HybridBN.to_arviz`` on the largest simulated scenario: arviz's summary, rhat, ess and loo
run on it (they crashed with one dim per parameter axis: 75 dims > numpy's 64)."""

from __future__ import annotations

import warnings

import arviz_stats
import numpy as np
import pytest

from bayesrad.data.simulate import SCENARIOS, simulate
from bayesrad.errors import ConvergenceWarning
from bayesrad.graph.graph import Graph
from bayesrad.model import HybridBN


@pytest.fixture(scope="module")
def tree():
    sims = {name: simulate(name, n_patients=60, seed=0) for name in SCENARIOS}
    name = max(SCENARIOS, key=lambda s: (len(sims[s].truth.graph), s))
    graph = Graph.from_networkx(sims[name].truth.graph)
    with warnings.catch_warnings():      # a short fit: the layout, not the fit, is tested
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HybridBN(graph, num_steps=5, min_steps=5, num_threads=1).fit(sims[name].cohort)
    return model, model.to_arviz(n_samples=50)


def test_summary_rhat_ess_and_loo_run_on_the_largest_scenario(tree):
    model, tree = tree
    posterior = tree["posterior"].to_dataset()
    assert len(model.graph_.nodes) >= 14
    assert set(posterior.data_vars) == {s.name for s in model.layout_.sites}
    table = arviz_stats.summary(tree, kind="stats")
    # one row per scalar of every global site
    assert len(table) == sum(s.size for s in model.layout_.sites)
    assert np.isfinite(table["mean"].to_numpy(dtype=float)).all()
    rhat = arviz_stats.rhat(tree)
    ess = arviz_stats.ess(tree)
    assert set(rhat.data_vars) == set(ess.data_vars) == set(posterior.data_vars)
    loo = arviz_stats.loo(tree, var_name="all_nodes")
    assert np.isfinite(loo.elpd) and loo.n_data_points == len(model.train_design_.patient_ids)
    # the joint log-likelihood per patient is the sum of the nodes' pointwise values
    ll = tree["log_likelihood"].to_dataset()
    nodes = [v for v in ll.data_vars if v != "all_nodes"]
    patient = str(ll["all_nodes"].patient_id.values[0])
    parts = sum(float(ll[v].sel({f"{v}_patient": patient}).isel(chain=0, draw=0))
                for v in nodes if patient in ll[v][f"{v}_patient"].values)
    assert float(ll["all_nodes"].sel(patient_id=patient).isel(chain=0, draw=0)) == pytest.approx(
        parts, rel=1e-5)
