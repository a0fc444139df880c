"""The evaluation harness: metrics against references, bootstrap coverage, baselines under one
contract, the same folds for every model, a known ordering recovered, the CLI end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from bayesrad import Graph
from bayesrad.errors import ModelError
from bayesrad.evaluate import metrics as M
from bayesrad.evaluate.baselines import REGISTRY, BayesNet, LogisticBaseline, make_model
from bayesrad.evaluate.harness import compare, missing_modality_curve, paired, to_json
from bayesrad.graph.graph import NodeSpec


def test_threshold_metrics_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    out = M.threshold_metrics(y, p, threshold=0.5)
    # predicted positive: 0.9, 0.8, 0.6, 0.7 -> TP 3, FP 1; negatives: FN 1 (0.3), TN 3
    assert out["sensitivity"] == 0.75 and out["specificity"] == 0.75
    assert out["ppv"] == 0.75 and out["npv"] == 0.75
    assert M.threshold_metrics(y, p)["sensitivity"] + M.threshold_metrics(y, p)["specificity"] >= 1.5


def test_calibration_line_and_noise_floor():
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 1.5, 20000)
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(p.size) < p).astype(float)
    line = M.calibration_line(y, p)
    assert abs(line["slope"] - 1) < 0.05 and abs(line["intercept"]) < 0.05
    over = 1 / (1 + np.exp(-2 * logit))          # twice too confident
    assert abs(M.calibration_line(y, over)["slope"] - 0.5) < 0.05
    small = p[:200]
    floor = M.ece_noise_floor(small, n_draws=300)
    assert 0.02 < floor["mean"] < 0.12
    assert M.ece((rng.random(200) < small).astype(float), small) < floor["q95"] + 0.05


def test_multiclass_metrics_hand_computed():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    out = M.multiclass_metrics(y, probs)
    assert out["accuracy"] == 0.75
    assert out["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    brier = np.mean([0.04 + 0.01 + 0.01, 0.04 + 0.25 + 0.09, 0.01 + 0.04 + 0.09, 0.25 + 0.09 + 0.64])
    assert out["brier"] == pytest.approx(brier)


def test_survival_metrics_match_harrell_without_censoring():
    rng = np.random.default_rng(1)
    time = rng.exponential(100, 80)
    event = np.ones(80)
    risk = -np.log(time) + rng.normal(0, 0.5, 80)
    harrell = M.concordance(time, event, -risk)
    assert M.uno_c(time, event, time, event, risk) == pytest.approx(harrell, abs=1e-9)
    aucs = M.time_dependent_auc(time, event, time, event, risk, [50.0, 100.0])
    assert all(0.6 < v <= 1 for v in aucs.values())
    surv = np.exp(-np.outer(np.ones(80), [50.0, 100.0, 150.0]) / 100.0)
    ibs = M.integrated_brier(time, event, time, event, surv, [50.0, 100.0, 150.0])
    assert 0 < ibs < 0.25


def test_bootstrap_ci_covers_the_mean_at_nominal_rate():
    rng = np.random.default_rng(2)
    hits = 0
    for rep in range(200):
        sample = rng.normal(1.0, 2.0, 60)
        ci = M.bootstrap_ci(np.mean, sample, n_boot=300, seed=rep)
        hits += ci["ci_low"] <= 1.0 <= ci["ci_high"]
    # percentile bootstrap of a mean at n = 60: close to 95%, a little under
    assert 0.88 <= hits / 200 <= 0.99


def _table(n=150, seed=0, strong=2.0):
    rng = np.random.default_rng(seed)
    dose = rng.normal(60, 5, n)
    age = rng.normal(65, 8, n)
    noise = rng.normal(size=(n, 3))
    logit = strong * (dose - 60) / 5 - 0.3 * (age - 65) / 8
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    ids = pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id")
    clinical = pd.DataFrame({"dose_mean_gy": dose, "age_years": age,
                             "centre": rng.choice(["A", "B", "C"], n)}, index=ids)
    extra = pd.DataFrame(noise, columns=["n1", "n2", "n3"], index=ids)
    outcome = pd.DataFrame({"control": y}, index=ids)
    return {"clinical": clinical, "extra": extra, "outcome": outcome}


def test_every_baseline_clones_and_answers_in_one_layout():
    data = _table(80)
    for name in ("l1", "l2", "rf", "practice", "early", "early_mean", "late", "late_stacking"):
        model = clone(make_model(name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(data, "control")
        answer = model.predict({b: f for b, f in data.items() if b != "outcome"})
        assert list(answer.columns) == ["mean"], name
        assert answer.index.equals(data["clinical"].index)
        assert answer["mean"].between(0, 1).all()
    assert set(REGISTRY) >= {"bayesrad", "rf", "l1", "l2", "cox", "rsf", "early", "late"}


def test_harness_recovers_a_known_ordering():
    """The true graph (dose and age -> control) against one missing the strong parent."""
    data = _table(160, seed=3)
    truth = Graph([NodeSpec("dose_mean_gy", "continuous"), NodeSpec("age_years", "continuous"),
                   NodeSpec("control", "binary")],
                  [("dose_mean_gy", "control"), ("age_years", "control")])
    wrong = Graph([NodeSpec("age_years", "continuous"), NodeSpec("control", "binary")],
                  [("age_years", "control")])
    settings = {"num_threads": 1, "num_steps": 800, "min_steps": 300}
    result = compare(data, "control", models=[BayesNet(truth, settings), LogisticBaseline()],
                     cv="3x1", n_boot=200)
    wrong_result = compare(data, "control", models=[BayesNet(wrong, settings)], cv="3x1", n_boot=200)
    # same folds, so the per-patient predictions can be paired
    assert result.attrs["patients"] == wrong_result.attrs["patients"]
    result.attrs["predictions"]["wrong"] = wrong_result.attrs["predictions"]["BayesNet"]
    folds = result.attrs["folds"]
    wrong_folds = wrong_result.attrs["folds"].assign(model="wrong")
    result.attrs["folds"] = pd.concat([folds, wrong_folds])
    diff = paired(result, "BayesNet", "wrong", "auc", n_boot=500)
    assert diff["ci_low"] > 0, diff
    table = result.set_index(["model", "metric"])
    assert table.loc[("BayesNet", "auc"), "estimate"] > 0.8
    assert table.loc[("BayesNet", "auc"), "ci_low"] < table.loc[("BayesNet", "auc"), "estimate"]
    payload = to_json(result)
    assert len(payload["models"]["BayesNet"]["auc"]["folds"]) == 3


def test_bad_inputs_name_the_culprit():
    data = _table(60)
    with pytest.raises(Exception, match="relapse"):
        compare(data, "relapse", models=["l2"])
    constant = {**data, "outcome": data["outcome"].assign(control=1.0)}
    with pytest.raises(ModelError, match="single value|constant"):
        compare(constant, "control", models=["l2"])
    rare = data["outcome"].copy()
    rare["control"] = 0.0
    rare.iloc[:2, 0] = 1.0
    with pytest.raises(ModelError, match="class 1.0 has 2 patients, fewer than the 5 folds"):
        compare({**data, "outcome": rare}, "control", models=["l2"], cv="5x1")
    lonely = data["clinical"].copy()
    lonely.iloc[0, lonely.columns.get_loc("centre")] = "Z"
    with pytest.raises(ModelError, match="centre 'Z' has 1 patient"):
        compare({**data, "clinical": lonely}, "control", models=["l2"], centre="centre")
    empty = {**data, "extra": data["extra"] * np.nan}
    with pytest.raises(ModelError, match="block 'extra' is missing for every patient"):
        compare(empty, "control", models=["l2"], cv="3x1")


def test_leave_one_centre_out_and_missing_curves():
    data = _table(120, seed=4)
    result = compare(data, "control", models=["l2"], centre="centre", n_boot=100)
    assert result.attrs["settings"]["n_folds"] == 3
    curves = missing_modality_curve(data, "control", "extra", models=["early_mean", "late"],
                                    fractions=(0.0, 0.8), cv="3x1", n_boot=100)
    auc = curves[curves.metric == "auc"].set_index(["model", "fraction"])["estimate"]
    assert set(auc.index.get_level_values(0)) == {"early_mean", "late"}
    # the block carries no signal: losing it changes little
    assert abs(auc[("late", 0.8)] - auc[("late", 0.0)]) < 0.1


def test_cli_evaluate_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from bayesrad.cli import app
    from bayesrad.data import Cohort

    data = _table(90, seed=5)
    Cohort(data).to_directory(tmp_path / "cohort")
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cohort"), "--target", "control",
                                      "--out", str(out), "--models", "l2,rf", "--cv", "3x1",
                                      "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"l2", "rf"}
    auc = metrics["models"]["l2"]["auc"]
    assert auc["ci_low"] <= auc["estimate"] <= auc["ci_high"] and len(auc["folds"]) == 3
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "reliability diagram" in page
    bad = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cohort"), "--target", "nothing",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "nothing" in bad.output
