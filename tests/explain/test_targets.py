"""Categorical and survival targets: Shapley values per class probability and for a stated
survival summary (S at a horizon, restricted mean survival time), efficiency for each, what-if
curves, the sentence and plots, on one small simulated fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from typer.testing import CliRunner

from bayesrad.cli import app
from bayesrad.data import Cohort
from bayesrad.errors import ModelError
from bayesrad.explain import explain_model, sentence, shapley, what_if
from bayesrad.explain.plots import beeswarm, waterfall, what_if_plot
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN

PLAYERS = ["x1", "x2", "x3"]
LEVELS = ["low", "mid", "high"]


def _cohort(n: int, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[:, 1] += 0.6 * x[:, 0]
    # grade: softmax over (low, mid, high) with logits (0, x1, 2 x1 - x2); x3 is a dummy
    logits = np.column_stack([np.zeros(n), x[:, 0], 2 * x[:, 0] - x[:, 1]])
    p = softmax(logits, axis=1)
    grade = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    # Weibull survival (shape 1.5, days): longer with x1, shorter with x2; uniform censoring
    scale = np.exp(6.5 + 0.6 * x[:, 0] - 0.4 * x[:, 1])
    t = scale * rng.weibull(1.5, n)
    c = rng.uniform(100, 2500, n)
    ids = pd.Index([f"C{seed}-{i:03d}" for i in range(n)], name="patient_id")
    return {"clinical": pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2]}, index=ids),
            "outcome": pd.DataFrame({"grade": np.array(LEVELS, dtype=object)[grade],
                                     "os_days": np.minimum(t, c), "os_event": (t <= c) * 1.0},
                                    index=ids)}


@pytest.fixture(scope="module")
def fit():
    graph = Graph([NodeSpec(n, "continuous", block="clinical") for n in PLAYERS]
                  + [NodeSpec("grade", "categorical", block="outcome", levels=LEVELS),
                     NodeSpec("os_days", "survival", block="outcome", event="os_event")])
    for edge in [("x1", "x2"), ("x1", "grade"), ("x2", "grade"), ("x1", "os_days"),
                 ("x2", "os_days")]:
        graph.add_edge(*edge)
    train = _cohort(400, 1)
    model = HybridBN(graph, num_steps=400, min_steps=100, learning_rate=0.05, seed=0,
                     num_threads=1, n_samples=100).fit(train)
    return model, train, _cohort(3, 2)


def test_categorical_contributions_per_class(fit):
    model, _, test = fit
    out = shapley(model, test, "grade", nodes=PLAYERS, n_samples=100, n_particles=8)
    assert {"class", "quantity"} <= set(out.columns)
    assert set(out["class"]) == set(LEVELS) and len(out) == 3 * 3 * 3
    assert set(out["quantity"]) == {f"P(grade = {v})" for v in LEVELS}
    for (pid, cls), rows in out.groupby(["patient", "class"]):
        # efficiency per class, exactly (draw by draw)
        assert rows["value"].sum() == pytest.approx(rows["prediction"].iloc[0]
                                                    - rows["base"].iloc[0], abs=1e-9)
        assert rows.set_index("node").loc["x3", "value"] == pytest.approx(0.0, abs=1e-12)  # dummy
    for pid, rows in out.groupby("patient"):
        # class probabilities sum to 1 in every coalition: contributions sum to 0 over classes
        # (to float32 rounding: the model's probabilities are float32)
        per_node = rows.groupby("node")["value"].sum()
        np.testing.assert_allclose(per_node, 0.0, atol=1e-6)
        preds = rows.groupby("class")["prediction"].first()
        assert preds.sum() == pytest.approx(1.0, abs=1e-6)
        # the prediction (all evidence) is the model's own P[level] (same posterior draws; the
        # parents are observed, so no particles are involved)
        ref = model.predict({k: v.loc[[pid]] for k, v in test.items()}, "grade",
                            n_samples=100, seed=0)
        for level in LEVELS:
            assert preds[level] == pytest.approx(ref[f"P[{level}]"].iloc[0], abs=1e-5)
    # high grade rises with x1: the patient with the largest x1 gets x1's largest push
    x1 = test["clinical"]["x1"]
    high = out[(out["class"] == "high") & (out["node"] == "x1")].set_index("patient")["value"]
    assert high.idxmax() == x1.idxmax() and high[x1.idxmax()] > 0
    text = sentence(out, x1.idxmax())
    assert text.startswith("P(grade = high) ")
    assert sentence(out, x1.idxmax(), which="low").startswith("P(grade = low) ")


def test_survival_contributions_at_a_horizon(fit):
    model, train, test = fit
    horizon = 400.0
    out = shapley(model, test, "os_days", nodes=PLAYERS, n_samples=100, n_particles=8,
                  horizon=horizon, survival_summary="both")
    assert set(out["quantity"]) == {"P(os_days > 400)", "RMST(os_days, 400)"}
    assert (out["horizon"] == horizon).all()
    for _, rows in out.groupby(["patient", "quantity"]):
        assert rows["value"].sum() == pytest.approx(rows["prediction"].iloc[0]
                                                    - rows["base"].iloc[0], abs=1e-9)
        assert rows.set_index("node").loc["x3", "value"] == pytest.approx(0.0, abs=1e-12)
    design = model.preprocessor_.transform(test)
    grid = np.linspace(0.0, horizon, 801)
    curve = model.survival_function(design, "os_days", grid, n_samples=100, seed=0)
    for i, pid in enumerate(design.patient_ids):
        rows = out[out["patient"] == pid].groupby("quantity")["prediction"].first()
        # S(h): the model's own survival function at h (same draws)
        assert rows["P(os_days > 400)"] == pytest.approx(curve[i, -1], abs=1e-5)
        # RMST in closed form (incomplete gamma) against the integral of S(t) over [0, h]
        assert rows["RMST(os_days, 400)"] == pytest.approx(
            np.trapezoid(curve[i], grid), rel=1e-3)
    # default horizon: the median observed (follow-up) time of the training data
    default = shapley(model, test, "os_days", nodes=["x1"], patients=[design.patient_ids[0]],
                      n_samples=20, n_particles=2)
    h = float(np.median(train["outcome"]["os_days"]))
    assert default["horizon"].iloc[0] == pytest.approx(h)
    assert default["quantity"].iloc[0] == f"P(os_days > {h:g})"
    with pytest.raises(ModelError, match="'median'"):
        shapley(model, test, "os_days", nodes=["x1"], survival_summary="median")


def test_what_if_and_plots_for_categorical_and_survival(fit, tmp_path):
    model, _, test = fit
    grid = [-1.0, 0.0, 1.0]
    cat = what_if(model, test, "grade", "x1", grid=grid, do=True, n_samples=50)
    pdp = cat[cat["patient"] == "PDP"]
    # the class probabilities sum to 1 at every grid value; P(high) rises with x1
    np.testing.assert_allclose(pdp.groupby("value")["mean"].sum(), 1.0, atol=1e-6)
    assert np.all(np.diff(pdp[pdp["class"] == "high"]["mean"].to_numpy()) > 0)
    surv = what_if(model, test, "os_days", "x2", grid=grid, n_samples=50, horizon=400.0)
    s = surv[surv["patient"] == "PDP"]["mean"].to_numpy()
    assert (s > 0).all() and (s < 1).all() and np.all(np.diff(s) < 0)     # x2 shortens survival
    table = shapley(model, test, "grade", nodes=PLAYERS, n_samples=30, n_particles=4)
    pid = test["clinical"].index[0]
    for name, fig in [("w", waterfall(table, pid)), ("b", beeswarm(table, which="high")),
                      ("c", what_if_plot(cat)), ("s", what_if_plot(surv))]:
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert waterfall(table, pid, which="mid").axes[0].get_xlabel().startswith("P(grade = mid)")
    with pytest.raises(ModelError, match="'nope'"):
        waterfall(table, pid, which="nope")


def test_model_agnostic_pdp_of_a_class_and_of_survival(fit):
    model, train, _ = fit
    X = train["clinical"].iloc[:20]
    high = explain_model(model, X, "pdp", feature="x1", target="grade", which="high",
                         n_samples=30, grid_resolution=3)
    assert np.all(np.diff(high["mean"]) > 0) and high["mean"].between(0, 1).all()
    surv = explain_model(model, X, "pdp", feature="x2", target="os_days", horizon=400.0,
                         n_samples=30, grid_resolution=3)
    assert np.all(np.diff(surv["mean"]) < 0) and surv["mean"].between(0, 1).all()
    with pytest.raises(ModelError, match="'top'"):
        explain_model(model, X, "pdp", feature="x1", target="grade", which="top")


def test_cli_explains_categorical_and_survival_targets(fit, tmp_path):
    model, _, test = fit
    model.save(tmp_path / "model")
    Cohort(blocks=test).to_directory(tmp_path / "cohort")
    pid = test["clinical"].index[0]
    runner = CliRunner()
    common = [str(tmp_path / "model"), str(tmp_path / "cohort"), "--patient", pid,
              "--n-samples", "20"]
    res = runner.invoke(app, ["explain", *common, "--target", "os_days", "--horizon", "400",
                              "--survival-summary", "both", "--ignore", "grade",
                              "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "s" / "contributions.csv")
    assert set(table["quantity"]) == {"P(os_days > 400)", "RMST(os_days, 400)"}
    for _, rows in table.groupby("quantity"):
        assert rows["value"].sum() == pytest.approx(rows["prediction"].iloc[0]
                                                    - rows["base"].iloc[0], abs=1e-9)
    assert f"{pid}: P(os_days > 400) " in (tmp_path / "s" / "sentences.txt").read_text()
    res = runner.invoke(app, ["explain", *common, "--target", "grade", "--ignore", "os_days",
                              "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "c" / "contributions.csv")
    assert set(table["class"]) == set(LEVELS) and set(table["node"]) == set(PLAYERS)
    assert (tmp_path / "c" / f"waterfall_{pid}.png").stat().st_size > 1000
    bad = runner.invoke(app, ["explain", *common, "--target", "os_days", "--survival-summary",
                              "mean", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "'mean'" in bad.output
