"""HybridBN on data with a known generating model: calibration, discrimination against the
oracle, interval coverage, survival, missing modalities, queries, persistence, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesrad.errors import GraphError, ModelError, ModelFileError, NotFittedError
from bayesrad.evaluate import auc, concordance, coverage, ece, survival_calibration
from bayesrad.model import HybridBN

from model_fixtures import FIT, TRUTH, toy_cohort, toy_graph


def test_binary_outcome_calibrated_and_close_to_oracle(complete_fit):
    model, test, truth = complete_fit
    # survival (a child of local control) is not known when local control is predicted
    pred = model.predict(test, "local_control", ignore=["os_days"])
    assert list(pred.index) == list(test["outcome"].index)
    assert {"mean", "sd", "q05", "q50", "q95", "q025", "q975"} <= set(pred.columns)
    assert ((pred["q05"] <= pred["mean"]) & (pred["mean"] <= pred["q95"])).all()
    y = test["outcome"]["local_control"]
    assert len(y) >= 2000
    assert ece(y, pred["mean"]) <= 0.05
    assert auc(y, truth["p_local_control"]) - auc(y, pred["mean"]) <= 0.02


def test_continuous_predictive_intervals_cover(complete_fit):
    model, test, _ = complete_fit
    pred = model.predict(test, "dose_mean_gy")
    observed = test["dosimetry"]["dose_mean_gy"]
    assert 0.85 <= coverage(observed, pred["q05"], pred["q95"]) <= 0.95
    # predictions are in Gy, not on the standardised scale
    assert abs(pred["mean"].mean() - observed.mean()) < 0.5


def test_true_coefficients_recovered(complete_fit):
    model, _, _ = complete_fit
    coefs = model.coefficients()
    inside = [coefs.loc[key, "q05"] <= value <= coefs.loc[key, "q95"]
              for key, value in TRUTH.items()]
    assert np.mean(inside) >= 0.8


def test_survival_concordance_and_calibration(complete_fit):
    model, test, truth = complete_fit
    outcome = test["outcome"]
    follow_up = float(np.median(outcome["os_days"]))
    pred = model.predict(test, "os_days", times=[follow_up])
    true_c = concordance(outcome["os_days"], outcome["os_event"], truth["log_scale"])
    model_c = concordance(outcome["os_days"], outcome["os_event"], pred["median"])
    assert model_c >= true_c - 0.02
    # S(t) of every patient under 40 single posterior draws: the posterior sd of their mean
    draws = np.stack([model.survival_function(test, "os_days", [follow_up], n_samples=1,
                                              seed=100 + s)[:, 0] for s in range(40)])
    calib = survival_calibration(outcome["os_days"], outcome["os_event"],
                                 pred[f"S@{follow_up:g}"], follow_up, draws=draws)
    # mean predicted S(t) against Kaplan-Meier on the same patients, in units of the two
    # errors a calibrated model has (the Kaplan-Meier sd and the posterior sd of the mean
    # prediction): outside 2.58 units once in 100 calibrated fits
    assert abs(calib["z"]) < 2.576, calib
    curve = model.survival_function(test["outcome"].iloc[:5].pipe(lambda o: {"outcome": o}),
                                    "os_days", [100.0, 500.0, 1500.0])
    assert curve.shape == (5, 3) and np.all(np.diff(curve, axis=1) < 0)


def test_patient_without_imaging_is_answered(complete_fit):
    model, test, truth = complete_fit
    no_imaging = {name: frame for name, frame in test.items() if name != "radiomics"}
    pred = model.predict(no_imaging, "local_control", ignore=["os_days"])
    y = test["outcome"]["local_control"]
    assert pred["mean"].notna().all()
    # still calibrated (the latent falls back to its graph prior), but less discriminating
    assert ece(y, pred["mean"]) <= 0.05
    with_imaging = model.predict(test, "local_control", ignore=["os_days"])
    assert auc(y, pred["mean"]) < auc(y, with_imaging["mean"])
    # uncertainty grows when the block is missing
    assert pred["sd"].mean() > with_imaging["sd"].mean()


def test_query_and_do(complete_fit):
    model, _, _ = complete_fit
    low = model.query("local_control", evidence={"age_years": 70.0}, do={"dose_mean_gy": 50.0})
    high = model.query("local_control", evidence={"age_years": 70.0}, do={"dose_mean_gy": 70.0})
    assert high["mean"].iloc[0] > low["mean"].iloc[0] + 0.1
    squamous = model.query("local_control", evidence={"histology": "squamous",
                                                      "dose_mean_gy": 60.0})
    adeno = model.query("local_control", evidence={"histology": "adenocarcinoma",
                                                   "dose_mean_gy": 60.0})
    assert squamous["mean"].iloc[0] < adeno["mean"].iloc[0]
    with pytest.raises(ModelError, match="tumour_size"):
        model.query("local_control", evidence={"tumour_size": 3.0})
    with pytest.raises(ModelError, match="'unknown' is not a level of 'histology'"):
        model.query("local_control", do={"histology": "unknown"})


def test_save_load_round_trip_and_tamper(complete_fit, tmp_path):
    model, test, _ = complete_fit
    path = tmp_path / "model"
    model.save(path)
    loaded = HybridBN.load(path)
    one = {name: frame.iloc[:20] for name, frame in test.items()}
    np.testing.assert_allclose(loaded.predict(one, "local_control")["mean"],
                               model.predict(one, "local_control")["mean"], rtol=1e-6)
    assert loaded.graph_ == model.graph_

    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="version 99"):
        HybridBN.load(path)
    model.save(path)
    raw = bytearray((path / "params.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "params.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="params.safetensors.*modified"):
        HybridBN.load(path)


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR"])
def test_missing_modalities(complete_fit, mechanism):
    """Fitting with 40% of patients missing imaging loses at most 0.03 AUC against the model
    fitted on complete data, both answering the same held-out patients (40% without
    imaging, so the comparison isolates what missing training data costs), and stays
    calibrated."""
    model, _, _ = complete_fit
    train, _ = toy_cohort(1000, seed=3, missing_imaging=0.4, mechanism=mechanism)
    assert 0.3 < 1 - len(train["radiomics"]) / 1000 < 0.5
    fitted = HybridBN(toy_graph(), **FIT).fit(train)
    test, _ = toy_cohort(2000, seed=4, missing_imaging=0.4, mechanism=mechanism)
    y = test["outcome"]["local_control"]
    reference = auc(y, model.predict(test, "local_control", ignore=["os_days"])["mean"])
    pred = fitted.predict(test, "local_control", ignore=["os_days"])
    assert reference - auc(y, pred["mean"]) <= 0.03
    assert ece(y, pred["mean"]) <= 0.06


def test_seeded_fits_identical():
    blocks, _ = toy_cohort(200, seed=5)
    settings = dict(FIT, num_steps=60)
    one = HybridBN(toy_graph(), **settings).fit(blocks)
    two = HybridBN(toy_graph(), **settings).fit(blocks)
    np.testing.assert_array_equal(one.elbo_history_, two.elbo_history_)
    pd.testing.assert_frame_equal(one.predict(blocks, "local_control"),
                                  two.predict(blocks, "local_control"))


def test_bad_input_is_named():
    blocks, _ = toy_cohort(50, seed=6)
    model = HybridBN(toy_graph(), **dict(FIT, num_steps=5))
    with pytest.raises(NotFittedError):
        model.predict(blocks, "local_control")
    broken = dict(blocks, dosimetry=blocks["dosimetry"].astype(object))
    broken["dosimetry"].iloc[3, 0] = "sixty"
    with pytest.raises(ModelError, match=r"'dose_mean_gy'.*'sixty'.*patient 'T6-00003'"):
        model.fit(broken)
    with pytest.raises(GraphError, match="node 'dose_mean_gy'"):
        model.fit({k: v for k, v in blocks.items() if k != "dosimetry"})
    model.fit(blocks)
    with pytest.raises(ModelError, match="target 'relapse' is not a node"):
        model.predict(blocks, "relapse")


def test_query_layer_functions(complete_fit):
    from bayesrad.query import condition, effect, intervene, predict

    model, test, _ = complete_fit
    one = {name: frame.iloc[:3] for name, frame in test.items()}
    pd.testing.assert_frame_equal(predict(model, one, "local_control", seed=1),
                                  model.predict(one, "local_control", seed=1))
    assert condition(model, "local_control", {"age_years": 60.0}).shape[0] == 1
    with pytest.raises(ModelError, match="at least one"):
        intervene(model, "local_control", {})
    # truth: +0.12 logit per Gy, so +10 Gy raises P(local control) clearly
    change = effect(model, "local_control", "dose_mean_gy", 55.0, 65.0)
    assert 0.1 < change["difference"] < 0.45


def test_minibatch_subsampling_fits():
    blocks, _ = toy_cohort(600, seed=7)
    model = HybridBN(toy_graph(), **dict(FIT, num_steps=600, batch_size=200)).fit(blocks)
    assert model.batch_size_ == 200
    coefs = model.coefficients()
    # the strongest effects keep their sign when each step sees a third of the patients
    assert coefs.loc[("age_years", "dose_mean_gy"), "q95"] < 0
    assert coefs.loc[("radiomics[0]", "local_control"), "q95"] < 0
