"""Prior overrides of the graph reach the posterior: a known sign of an edge constrains its
coefficient, and the regularised horseshoe of a node with many parents shrinks the null
effects and keeps the real ones (against the default Normal prior on the same data)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN

SETTINGS = dict(num_steps=1500, learning_rate=0.03, seed=0, num_threads=1, n_samples=1000)


def _dose_response(n, seed, effect):
    rng = np.random.default_rng(seed)
    dose = rng.normal(60.0, 5.0, n)
    response = 2.0 + effect * (dose - 60.0) + rng.normal(0.0, 1.0, n)
    ids = pd.Index([f"D{i}" for i in range(n)], name="patient_id")
    return {"clinical": pd.DataFrame({"dose_mean_gy": dose, "response": response}, index=ids)}


def _sign_fit(data, sign):
    graph = Graph([NodeSpec("dose_mean_gy", "continuous"), NodeSpec("response", "continuous")])
    graph.add_edge("dose_mean_gy", "response", prior={"sign": sign} if sign else None)
    fitted = HybridBN(graph, **SETTINGS).fit(data)
    return fitted.coefficients().loc[("dose_mean_gy", "response")]


def test_known_sign_constrains_the_coefficient():
    # a clear positive effect (0.1 per Gy, 5 Gy sd, unit noise, 200 patients: z ~ 7)
    data = _dose_response(200, 0, effect=0.1)
    free, positive, negative = (_sign_fit(data, s) for s in (None, "positive", "negative"))
    # the right sign changes little where the data already speak
    assert abs(positive["mean"] - free["mean"]) < 0.25 * free["sd"] + 0.005
    assert positive["q05"] > 0.0
    # the wrong sign is enforced: every draw keeps it, pressed against zero
    assert negative["q95"] <= 0.0
    assert abs(negative["mean"]) < 0.25 * abs(free["mean"])


def _sparse(n, seed, n_parents=24):
    """y depends on the first two of ``n_parents`` standard-normal parents."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_parents))
    y = 1.0 * x[:, 0] - 0.7 * x[:, 1] + rng.normal(0.0, 1.0, n)
    ids = pd.Index([f"S{seed}-{i}" for i in range(n)], name="patient_id")
    frame = pd.DataFrame(x, columns=[f"x{j:02d}" for j in range(n_parents)], index=ids)
    return {"clinical": frame.assign(y=y)}, {"x00": 1.0, "x01": -0.7}


def test_horseshoe_shrinks_null_effects_and_keeps_real_ones():
    train, truth = _sparse(60, 0)
    test, _ = _sparse(2000, 1)
    parents = [c for c in train["clinical"].columns if c != "y"]
    results = {}
    for prior in (None, {"shrinkage": "horseshoe"}):
        graph = Graph([NodeSpec(p, "continuous") for p in parents]
                      + [NodeSpec("y", "continuous", prior=prior)], [(p, "y") for p in parents])
        # both fits meet the default tolerance within 1,200 steps (801 and 1,101)
        model = HybridBN(graph, **dict(SETTINGS, num_steps=1200)).fit(train)
        coefs = model.coefficients().xs("y", level="child")
        pred = model.predict(test, "y")
        observed = test["clinical"]["y"]
        results["horseshoe" if prior else "normal"] = {
            "null_abs": coefs.drop(index=list(truth))["mean"].abs().mean(),
            "real": coefs.loc[list(truth), "mean"],
            "rmse": float(np.sqrt(((pred["mean"] - observed) ** 2).mean())),
            "coverage": float(((observed >= pred["q05"]) & (observed <= pred["q95"])).mean()),
        }
    hs, normal = results["horseshoe"], results["normal"]
    # 60 patients, 24 parents: the Normal prior leaves the null effects at noise level
    assert hs["null_abs"] < 0.5 * normal["null_abs"]
    for parent, value in truth.items():
        assert abs(hs["real"][parent] - value) < 0.3
    assert hs["rmse"] < normal["rmse"]
    assert 0.85 <= hs["coverage"] <= 0.95
