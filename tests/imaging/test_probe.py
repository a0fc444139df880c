import numpy as np
import pytest

from bayesrad.errors import ModelError
from bayesrad.imaging.probe import ClipToTrainingRange, linear_probe_r2


def test_probe_recovers_the_known_explained_variance():
    # y = x @ b + noise with Var(x @ b) = 1 and noise variance 1/3: the population R^2 is 0.75
    g = np.random.default_rng(0)
    x = g.standard_normal((400, 10))
    b = np.zeros(10)
    b[:2] = 1 / np.sqrt(2)
    y = np.column_stack([x @ b + g.normal(0, np.sqrt(1 / 3), 400), g.standard_normal(400)])
    out = linear_probe_r2(x, y, n_splits=5, n_repeats=4, seed=1, target_names=["signal", "noise"])
    assert np.array(out["r2"]).shape == (4, 2) and np.array(out["fold_r2"]).shape == (4, 5, 2)
    assert out["mean"][0] == pytest.approx(0.75, abs=0.04)
    # a target unrelated to the features gets R^2 near 0, not a positive score
    assert -0.05 < out["mean"][1] < 0.02
    assert out["sd"][0] < 0.02 and out["targets"] == ["signal", "noise"]
    assert out["mean_over_targets"] == pytest.approx(np.mean(out["mean"]))


def test_a_feature_seen_in_one_patient_does_not_wreck_the_probe():
    # a nearly dead unit (as in random-weight CNNs): weakly on in the three highest-y patients, so
    # the training folds give it a positive weight, and 40x stronger in one low-y patient; a ridge
    # fit extrapolated to that value halves the R^2 (0.93 -> 0.45 without clipping)
    g = np.random.default_rng(2)
    x = g.standard_normal((60, 4))
    y = x[:, 0] + 0.3 * g.standard_normal(60)
    dead = np.zeros((60, 1))
    dead[np.argsort(-y)[:3]] = 0.5
    dead[np.argmin(y)] = 20.0
    clean = linear_probe_r2(x, y, n_repeats=3)["mean"][0]
    with_dead = linear_probe_r2(np.hstack([x, dead]), y, n_repeats=3)["mean"][0]
    assert clean > 0.9 and with_dead == pytest.approx(clean, abs=0.02)
    clip = ClipToTrainingRange().fit(np.array([[0.0, 1.0], [2.0, 3.0]]))
    assert np.array_equal(clip.transform(np.array([[-5.0, 9.0]])), np.array([[0.0, 3.0]]))


def test_probe_refuses_bad_input():
    with pytest.raises(ModelError, match="too few"):
        linear_probe_r2(np.zeros((6, 2)), np.zeros(6))
    with pytest.raises(ModelError, match="NaN"):
        linear_probe_r2(np.full((20, 2), np.nan), np.zeros(20))
