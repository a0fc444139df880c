"""Simulation-based calibration of HybridBN's SVI on a small graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesrad.evaluate.sbc import simulate_from_prior, simulation_based_calibration
from bayesrad.graph.graph import Graph, NodeSpec


def _template(n=60):
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(n)]
    return {"clinical": pd.DataFrame({"age_years": rng.normal(65, 9, n),
                                      "dose_mean_gy": rng.normal(60, 4, n)}, index=ids),
            "outcome": pd.DataFrame({"local_control": rng.integers(0, 2, n).astype(float)},
                                    index=ids)}


def _graph():
    return Graph([NodeSpec("age_years", "continuous"), NodeSpec("dose_mean_gy", "continuous"),
                  NodeSpec("local_control", "binary")],
                 [("age_years", "dose_mean_gy"), ("dose_mean_gy", "local_control")])


def test_prior_simulation_follows_the_drawn_parameters():
    template = _template(n=4000)
    blocks, theta = simulate_from_prior(_graph(), template, seed=3)
    clinical = blocks["clinical"]
    assert set(blocks) == {"clinical", "outcome"}
    assert set(blocks["outcome"]["local_control"].unique()) <= {0.0, 1.0}
    age_sd = template["clinical"]["age_years"].std(ddof=0)
    # the age sd on the model scale is theta["age_years.sd"]; in years it is scaled back
    assert abs(clinical["age_years"].std() / age_sd - float(theta["age_years.sd"])) < 0.05


@pytest.mark.slow
def test_sbc_ranks_uniform():
    # HybridBN's default fit settings (the full form, 100 replicates, is in validity.json)
    result = simulation_based_calibration(
        _graph(), _template(), n_replicates=20, n_draws=99, n_bins=5, seed=0, num_threads=1)
    assert result.ranks.shape == (20, 7)
    assert result.ranks.to_numpy().min() >= 0 and result.ranks.to_numpy().max() <= 99
    assert result.min_p_value > 0.01, result.tests
