"""Parameter recovery on the simulated radiotherapy scenario (issue 5: at least 80% of the
true coefficients inside their 90% credible intervals, 500 patients). The fit is the one of
``parameter_recovery`` in ``benchmarks/validity.py --quick`` (its first 500 of 2500 patients)."""

from __future__ import annotations

import pytest

from bayesrad.data.simulate import simulate
from bayesrad.evaluate.recovery import recovery, true_coefficients
from bayesrad.graph.graph import Graph
from bayesrad.model import HybridBN


@pytest.mark.slow
def test_true_coefficients_inside_their_90_percent_intervals():
    sim = simulate("radiotherapy", n_patients=2500, seed=0)
    train = sim.cohort.subset(list(sim.cohort.patient_ids)[:500])
    graph = Graph.from_networkx(sim.truth.graph)
    model = HybridBN(graph, num_steps=1500, learning_rate=0.03, seed=0, num_threads=1,
                     n_samples=1000, tol=1e-5).fit(train)
    # the gene modules' axes are identified only up to rotation: their edges are left out
    table = recovery(model.coefficients(), true_coefficients(sim.truth.parameters, ("genes",)))
    assert len(table) == 26
    assert table["inside"].mean() >= 0.8, table
