"""Graph views, what-if curves, model-agnostic methods and plots on the linear-Gaussian fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesrad.errors import ModelError
from bayesrad.explain import (edge_strengths, explain_model, markov_blanket, path_contributions,
                              sentence, shapley, what_if)
from bayesrad.explain.plots import beeswarm, waterfall, what_if_plot

from explain_fixtures import B


def test_markov_blanket_and_edges(lg_fit):
    model, _ = lg_fit
    assert set(markov_blanket(model, "y")) == {"x1", "x2", "x3"}
    assert set(markov_blanket(model, "x2")) == {"x1", "y", "x3"}
    edges = edge_strengths(model).set_index(["parent", "child"])
    for edge, b in B.items():
        assert edges.loc[edge, "q05"] - 0.05 <= b <= edges.loc[edge, "q95"] + 0.05
        assert edges.loc[edge, "credible"]


def test_path_contributions_sum_to_the_total_effect(lg_fit):
    model, _ = lg_fit
    paths = path_contributions(model, "x1", "y").set_index("path")
    # x1 -> y (1.0) and x1 -> x2 -> y (0.8 * 0.5): total 1.4
    assert paths.loc["x1 -> y", "mean"] == pytest.approx(1.0, abs=0.1)
    assert paths.loc["x1 -> x2 -> y", "mean"] == pytest.approx(0.4, abs=0.06)
    assert paths["share"].sum() == pytest.approx(1.0)
    with pytest.raises(ModelError, match="no directed path from 'y' to 'x1'"):
        path_contributions(model, "y", "x1")


def test_sentence_names_the_strongest_pushes(lg_fit):
    model, test = lg_fit
    table = shapley(model, test, "y", nodes=["x1", "x2", "x3"], patients=["L0000"])
    text = sentence(table, "L0000")
    up = table.loc[table["value"].idxmax()]
    assert text.startswith(f"y {up['prediction']:.2f} [")
    assert f"{up['node']} pushes it up most ({up['value']:+.2f})" in text


def test_what_if_observe_and_do(lg_fit):
    model, test = lg_fit
    grid = [-1.0, 0.0, 1.0]
    obs = what_if(model, test, "y", "x2", grid=grid, n_samples=100)
    do = what_if(model, test, "y", "x2", grid=grid, do=True, n_samples=100)
    pdp_obs = obs[obs.patient == "PDP"]["mean"].to_numpy()
    pdp_do = do[do.patient == "PDP"]["mean"].to_numpy()
    # under do only the direct edge (0.5 per unit); observing x2 also informs about x1 where
    # x1 is hidden -- here x1 is observed, so both slopes are the direct 0.5
    assert np.diff(pdp_do) == pytest.approx([0.5, 0.5], abs=0.07)
    assert np.diff(pdp_obs) == pytest.approx([0.5, 0.5], abs=0.07)
    assert (do["q05"] <= do["mean"]).all() and (do["mean"] <= do["q95"]).all()
    # with x1 hidden, observing x2 also says x1 is high: slope 0.5 + 1.0 * cov/var
    hidden = {"clinical": test["clinical"].drop(columns=["x1"])}
    obs_h = what_if(model, hidden, "y", "x2", grid=grid, n_samples=100)
    slope = np.diff(obs_h[obs_h.patient == "PDP"]["mean"].to_numpy())
    expected = 0.5 + 1.0 * 0.8 / (0.8 ** 2 + 0.6 ** 2)
    assert slope == pytest.approx([expected] * 2, abs=0.12)


def test_model_agnostic_methods_on_a_linear_function():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])

    def f(frame):          # a known linear model: every method has a closed form
        return 2.0 * frame["a"].to_numpy() - 1.0 * frame["b"].to_numpy()

    pdp = explain_model(f, X, "pdp", feature="a")
    assert np.polyfit(pdp["value"], pdp["mean"], 1)[0] == pytest.approx(2.0)
    ice = explain_model(f, X, "ice", feature="b")
    assert len(ice) == 60 * ice["value"].nunique()
    ale = explain_model(f, X, "ale", feature="a")
    assert np.polyfit(ale["edge"], ale["ale"], 1)[0] == pytest.approx(2.0)
    shap_v = explain_model(f, X, "shap", rows=[0, 1], background=30)
    row0 = shap_v[shap_v.row == 0].set_index("feature")["value"]
    bg_mean = X.sample(30, random_state=0).mean()
    assert row0["a"] == pytest.approx(2.0 * (X.loc[0, "a"] - bg_mean["a"]), abs=1e-6)
    assert row0["c"] == pytest.approx(0.0, abs=1e-9)
    lime_v = explain_model(f, X, "lime", rows=[0], num_samples=300)
    weights = lime_v.set_index("feature")["value"]
    assert abs(weights["a"]) > abs(weights["c"]) and abs(weights["b"]) > abs(weights["c"])
    with pytest.raises(ModelError, match="'nope'"):
        explain_model(f, X, "pdp", feature="nope")


def test_hybrid_predict_function_and_plots(lg_fit, tmp_path):
    model, test = lg_fit
    X = test["clinical"].drop(columns=["y"])
    pdp = explain_model(model, X, "pdp", feature="x3", target="y", n_samples=50,
                        grid_resolution=3)
    assert np.polyfit(pdp["value"].astype(float), pdp["mean"], 1)[0] == pytest.approx(-0.7, abs=0.1)
    table = shapley(model, test, "y", nodes=["x1", "x2", "x3"])
    for name, fig in [("w", waterfall(table, "L0000")), ("b", beeswarm(table)),
                      ("c", what_if_plot(what_if(model, test, "y", "x3", grid=[0, 1],
                                                 n_samples=50)))]:
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
