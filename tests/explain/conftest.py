"""The linear-Gaussian fit shared by tests/explain (one fit per session)."""

from __future__ import annotations

import pytest

from bayesrad.model import HybridBN

from explain_fixtures import lg_cohort, lg_graph


@pytest.fixture(scope="session")
def lg_fit():
    model = HybridBN(lg_graph(), num_steps=800, min_steps=300, learning_rate=0.05, seed=0,
                     num_threads=1, n_samples=200).fit(lg_cohort(2000, seed=1))
    return model, lg_cohort(5, seed=2)
