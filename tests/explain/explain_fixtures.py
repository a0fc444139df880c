"""A linear-Gaussian graph with a closed-form conditional expectation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesrad.graph.graph import Graph, NodeSpec

NODES = ["x1", "x2", "x3", "x4", "y"]
# y = 1.0 x1 + 0.5 x2 - 0.7 x3 + e; x2 = 0.8 x1 + e; x4 is unconnected (a dummy player)
B = {("x1", "x2"): 0.8, ("x1", "y"): 1.0, ("x2", "y"): 0.5, ("x3", "y"): -0.7}
SD = {"x1": 1.0, "x2": 0.6, "x3": 1.0, "x4": 1.0, "y": 0.5}


def lg_graph() -> Graph:
    graph = Graph([NodeSpec(n, "continuous", block="clinical") for n in NODES])
    for edge in B:
        graph.add_edge(*edge)
    return graph


def lg_cohort(n: int, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0, SD["x1"], n)
    x2 = B["x1", "x2"] * x1 + rng.normal(0, SD["x2"], n)
    x3 = rng.normal(0, SD["x3"], n)
    x4 = rng.normal(0, SD["x4"], n)
    y = B["x1", "y"] * x1 + B["x2", "y"] * x2 + B["x3", "y"] * x3 + rng.normal(0, SD["y"], n)
    ids = pd.Index([f"L{i:04d}" for i in range(n)], name="patient_id")
    return {"clinical": pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "x4": x4, "y": y},
                                     index=ids)}


def lg_covariance() -> np.ndarray:
    """Covariance of (x1, x2, x3, x4, y) from the structural equations (zero means)."""
    a = np.zeros((5, 5))                     # x = a x + e  ->  x = (I - a)^-1 e
    idx = {n: i for i, n in enumerate(NODES)}
    for (p, c), b in B.items():
        a[idx[c], idx[p]] = b
    inv = np.linalg.inv(np.eye(5) - a)
    return inv @ np.diag([SD[n] ** 2 for n in NODES]) @ inv.T
