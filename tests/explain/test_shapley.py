"""Shapley values over evidence: closed form on a linear-Gaussian graph, the axioms, the
causal variant, pyAgrum's conditional Shapley values on a discrete network, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from bayesrad.errors import BayesradError, CohortError, ModelError
from bayesrad.explain import exact_from_values, shapley
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN

from explain_fixtures import NODES, lg_covariance

PLAYERS = ["x1", "x2", "x3", "x4"]


def closed_form(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact conditional Shapley values of E[y | x_S] for one patient (zero means), and
    E[y | x] (the prediction): Gaussian conditioning on the true covariance."""
    cov = lg_covariance()
    y = NODES.index("y")
    values = np.zeros(16)
    for mask in range(16):
        s = [j for j in range(4) if mask >> j & 1]
        if s:
            values[mask] = cov[y, s] @ np.linalg.solve(cov[np.ix_(s, s)], x[s])
    return exact_from_values(values), values[-1]


def test_linear_gaussian_matches_closed_form_and_efficiency(lg_fit):
    model, test = lg_fit
    out = shapley(model, test, "y", nodes=PLAYERS, n_samples=200, seed=0)
    x = test["clinical"][PLAYERS].to_numpy()
    for i, pid in enumerate(test["clinical"].index):
        got = out[out.patient == pid].set_index("node").loc[PLAYERS]
        truth, pred = closed_form(x[i])
        # tolerance 0.1 (y's sd is ~1.6): fitted coefficients off by ~0.03 on 2000 patients,
        # and 200 draws x 32 particles of the hidden nodes
        np.testing.assert_allclose(got["value"], truth, atol=0.1)
        assert got["value"].sum() == pytest.approx(got["prediction"].iloc[0] - got["base"].iloc[0],
                                                  abs=1e-9)
        assert got["prediction"].iloc[0] == pytest.approx(pred, abs=0.1)
        assert (got["q05"] <= got["value"]).all() and (got["value"] <= got["q95"]).all()
        # dummy: x4 has no edge, so hiding or showing it changes nothing, draw by draw
        assert got.loc["x4", ["value", "q05", "q95"]].abs().max() == 0.0


def test_axioms_on_a_known_game():
    # v(S) = 3*[a] + 3*[b] + 2*[a and b] + 5*[c], d a dummy: a and b symmetric
    k = 4
    v = np.array([3 * (m & 1 > 0) + 3 * (m & 2 > 0) + 2 * (m & 3 == 3) + 5 * (m & 4 > 0)
                  for m in range(2 ** k)], dtype=float)
    phi = exact_from_values(v)
    np.testing.assert_allclose(phi, [4.0, 4.0, 5.0, 0.0])
    assert phi.sum() == pytest.approx(v[-1] - v[0])


def test_sampled_agrees_with_exact(lg_fit):
    model, test = lg_fit
    exact = shapley(model, test, "y", nodes=PLAYERS, patients=["L0000"], seed=0)
    sampled = shapley(model, test, "y", nodes=PLAYERS, patients=["L0000"], method="sampled",
                      n_permutations=200, seed=0)
    diff = (sampled["value"] - exact["value"]).abs()
    # within 4 Monte Carlo standard errors (plus the particles' own noise)
    assert (diff <= 4 * sampled["mc_se"] + 0.05).all(), pd.concat([exact, sampled])
    assert sampled["value"].sum() == pytest.approx(exact["value"].sum(), abs=1e-9)


def test_causal_gives_zero_without_a_directed_path(lg_fit):
    model, test = lg_fit
    # x2 is x1's child: evidence about x1 observationally, no effect on it under do
    cond = shapley(model, test, "x1", nodes=["x2", "x3"], patients=["L0000"], seed=0)
    causal = shapley(model, test, "x1", nodes=["x2", "x3"], patients=["L0000"], seed=0,
                     causal=True)
    cond, causal = cond.set_index("node"), causal.set_index("node")
    assert abs(cond.loc["x2", "value"]) > 0.2
    assert causal.loc["x2", "value"] == pytest.approx(0.0, abs=1e-6)
    assert causal.loc["x3", "value"] == pytest.approx(0.0, abs=1e-6)
    # y's causal values: x1's includes its effect through x2 (1.0 + 0.5 * 0.8 per unit)
    y_causal = shapley(model, test, "y", nodes=["x1", "x3"], patients=["L0000"], seed=0,
                       causal=True).set_index("node")
    x1 = test["clinical"].loc["L0000", "x1"]
    assert y_causal.loc["x1", "value"] == pytest.approx(1.4 * x1, abs=0.1)


# ------------------------------------------------------------------ pyAgrum
_LOGIT = {"d": (-0.4, {}), "a": (-0.5, {"d": 1.5}), "b": (0.0, {}),
          "c": (-1.0, {"a": 2.0, "b": -1.5}), "y": (-1.0, {"a": 1.2, "c": 2.0})}


def _discrete_sample(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = {}
    for node, (b0, parents) in _LOGIT.items():
        eta = b0 + sum(w * out[p] for p, w in parents.items())
        out[node] = (rng.random(n) < expit(eta)).astype(float)
    return pd.DataFrame(out, index=pd.Index([f"D{i:04d}" for i in range(n)], name="patient_id"))


def _agrum_net():
    import pyagrum as gum  # a dev dependency (pyproject [dev])

    bn = gum.fastBN("d->a;b->c;a->c;a->y;c->y")
    for node, (b0, parents) in _LOGIT.items():
        names = list(parents)
        for values in itertools.product([0, 1], repeat=len(names)):
            p = expit(b0 + sum(parents[q] * v for q, v in zip(names, values)))
            bn.cpt(node)[dict(zip(names, values))] = [1 - p, p]
    return bn


def test_agrees_with_pyagrum_conditional_shap_values():
    import pyagrum.explain as ex

    graph = Graph([NodeSpec(n, "binary", block="clinical") for n in _LOGIT])
    for node, (_, parents) in _LOGIT.items():
        for p in parents:
            graph.add_edge(p, node)
    model = HybridBN(graph, num_steps=800, min_steps=300, learning_rate=0.05, seed=0,
                     num_threads=1, n_samples=200).fit({"clinical": _discrete_sample(3000, 1)})
    test = _discrete_sample(3, 2)
    ours = shapley(model, {"clinical": test}, "y", nodes=["a", "b", "c", "d"], seed=0)
    agrum = ex.ConditionalShapValues(_agrum_net(), "y", logit=False)
    for pid, row in test.iterrows():
        evidence = {k: int(row[k]) for k in "abcd"}
        theirs = agrum.compute(pd.DataFrame([evidence]))[1]
        got = ours[ours.patient == pid].set_index("node")["value"]
        # tolerance 0.04 in probability: ours is fitted on 3000 patients (theirs is the true
        # network), and averages P(y=1) over posterior draws. Definitions agree: both are
        # the conditional value v(S) = P(y=1 | x_S) on the probability scale (logit=False)
        for node in "abcd":
            assert got[node] == pytest.approx(float(theirs[node]), abs=0.04), (pid, node)


# ------------------------------------------------------------------ bad input
def test_bad_input_names_the_culprit(lg_fit):
    model, test = lg_fit
    with pytest.raises(ModelError, match="'nope'"):
        shapley(model, test, "y", nodes=["x1", "nope"])
    with pytest.raises(CohortError, match="'P999'"):
        shapley(model, test, "y", patients=["P999"])
    with pytest.raises(ModelError, match="'zz'"):
        shapley(model, test, "zz")
    assert issubclass(ModelError, BayesradError)


def test_more_than_twelve_exact_players_is_refused():
    nodes = [f"n{j:02d}" for j in range(13)] + ["t"]
    graph = Graph([NodeSpec(n, "continuous", block="clinical") for n in nodes])
    for n in nodes[:-1]:
        graph.add_edge(n, "t")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 14)), columns=nodes,
                         index=pd.Index([f"Q{i}" for i in range(40)], name="patient_id"))
    model = HybridBN(graph, num_steps=5, min_steps=1, seed=0, num_threads=1,
                     n_samples=10).fit({"clinical": frame})
    with pytest.raises(ModelError, match="13 players.*sampled"):
        shapley(model, {"clinical": frame}, "t", patients=["Q0"])
    out = shapley(model, {"clinical": frame}, "t", patients=["Q0"], method="sampled",
                  n_permutations=4, n_samples=10)
    assert len(out) == 13
