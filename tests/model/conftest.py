"""Shared fits of the model tests, on the toy generator of ``model_fixtures.py``."""

from __future__ import annotations

import pytest
from model_fixtures import FIT, toy_cohort, toy_graph

from bayesrad.model import HybridBN


@pytest.fixture(scope="session")
def complete_fit():
    """HybridBN fitted on 1000 complete toy patients, and the 2000-patient test set."""
    blocks, _ = toy_cohort(1000, seed=1)
    model = HybridBN(toy_graph(), **FIT).fit(blocks)
    test_blocks, test_truth = toy_cohort(2000, seed=2)
    return model, test_blocks, test_truth
