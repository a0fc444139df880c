"""Metrics against reference implementations and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from bayesrad.errors import ModelError
from bayesrad.evaluate import auc, brier, concordance, coverage, ece, survival_calibration
from bayesrad.evaluate import metrics as M


def test_auc_and_brier_reference_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, p) == pytest.approx(0.75)
    assert brier(y, p) == pytest.approx(np.mean([0.01, 0.16, 0.4225, 0.04]))


def test_ece_is_zero_for_perfect_calibration_and_grows_with_miscalibration():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert ece(y, p) < 0.01
    assert ece(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=0.02)
    # hand-computed: two bins, |0.2 - 0.5| and |0.8 - 0.5|, each half the patients
    assert ece([0, 1, 0, 1], [0.2, 0.2, 0.8, 0.8], n_bins=2) == pytest.approx(0.3)


def test_coverage_counts_inclusive_intervals():
    assert coverage([1, 2, 3, 4], [0, 2, 3.5, 0], [1, 3, 4, 3]) == pytest.approx(0.5)
    with pytest.raises(ModelError, match="lower bounds exceed"):
        coverage([1], [2], [1])


def test_concordance_and_survival_calibration():
    rng = np.random.default_rng(1)
    risk = rng.normal(size=2000)
    time = rng.exponential(np.exp(-risk))
    event = (rng.random(2000) < 0.8).astype(float)
    assert concordance(time, event, -risk) > 0.65
    assert concordance(time, event, risk) < 0.35
    t = float(np.median(time))
    km = KaplanMeierFitter().fit(time, event)
    observed = float(km.survival_function_at_times(t).iloc[0])
    calib = survival_calibration(time, event, np.full(2000, observed), t)
    assert calib["difference"] == pytest.approx(0.0, abs=1e-9)
    assert calib["observed_lower"] < observed < calib["observed_upper"]


def test_bad_inputs_are_explained():
    with pytest.raises(ModelError, match="different lengths"):
        auc([0, 1], [0.5])
    with pytest.raises(ModelError, match="0/1 outcomes"):
        brier([0, 2], [0.1, 0.2])
    with pytest.raises(ModelError, match="missing values"):
        ece([0, 1], [np.nan, 0.2])


def test_survival_calibration_in_units_of_its_errors():
    rng = np.random.default_rng(2)
    time = rng.exponential(1.0, 3000)
    event = np.ones(3000)
    t = float(np.median(time))
    # posterior draws of each patient's S(t) around the truth exp(-t): the mean over
    # patients then varies between draws with sd 0.02
    draws = np.exp(-t) + rng.normal(0.0, 0.02, (400, 1)) + rng.normal(0.0, 0.01, (400, 3000))
    calib = survival_calibration(time, event, draws.mean(0), t, draws=draws)
    km_sd = (calib["observed_upper"] - calib["observed_lower"]) / (2 * 1.959964)
    assert calib["predicted_sd"] == pytest.approx(0.02, rel=0.1)
    assert calib["z"] == pytest.approx(calib["difference"] / np.hypot(km_sd, calib["predicted_sd"]))
    assert abs(calib["z"]) < 2.576
    # a prediction off by 0.1 is far outside both errors
    shifted = survival_calibration(time, event, draws.mean(0) + 0.1, t, draws=draws + 0.1)
    assert shifted["z"] > 3
    with pytest.raises(ModelError, match="draws must have shape"):
        survival_calibration(time, event, draws.mean(0), t, draws=draws[:, :10])


def test_calibration_line_equals_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    for n, slope, shift in ((40, 1.0, 0.0), (200, 0.5, 0.3), (500, 2.0, -1.0)):
        logit = rng.normal(0.0, 1.5, n)
        y = (rng.random(n) < 1 / (1 + np.exp(-(shift + slope * logit)))).astype(float)
        p = 1 / (1 + np.exp(-logit))
        line = M.calibration_line(y, p)
        ref = LogisticRegression(C=1e8, tol=1e-10, max_iter=10000).fit(logit[:, None], y)
        assert line["slope"] == pytest.approx(ref.coef_[0, 0], abs=1e-6)
        assert line["intercept"] == pytest.approx(ref.intercept_[0], abs=1e-6)
    # separable outcomes: a large finite slope, as scikit-learn's C=1e8 gives
    p = np.linspace(0.05, 0.95, 30)
    y = (p > 0.5).astype(float)
    assert M.calibration_line(y, p)["slope"] > 50
