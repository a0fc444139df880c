"""benchmarks/settings.py: the recording wrapper the notebook 05 figures rely on.

The notebook itself (run by nbmake) checks that its figures equal
benchmarks/results/settings.json; here, the cheap part: the harness names a model by its
class, so each recording wrapper must keep its own class through ``sklearn.base.clone`` and
hand back exactly the inner model's predictions."""

import numpy as np
import pandas as pd
from sklearn.base import clone

from bayesrad.evaluate.baselines import make_model


def test_recording_keeps_its_name_and_the_inner_predictions(settings):
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(60)]
    x = pd.DataFrame(rng.normal(size=(60, 3)), index=ids, columns=["a", "b", "c"])
    y = pd.DataFrame({"y": (x["a"] + rng.normal(size=60) > 0).astype(int)}, index=ids)
    blocks = {"clinical": x, "outcome": y}
    wrapped = clone(settings._recording("late_fusion", make_model("l2", 0)))
    assert type(wrapped).__name__ == "late_fusion"
    settings._RECORD.clear()
    got = wrapped.fit(blocks, "y").predict({"clinical": x})
    want = make_model("l2", 0).fit(blocks, "y").predict({"clinical": x})
    np.testing.assert_allclose(got["mean"], want["mean"])
    assert len(settings._RECORD["late_fusion"]) == 1
    pd.testing.assert_frame_equal(settings._RECORD["late_fusion"][0], got)


def test_wholebody_centre_r2_sees_a_centre_shift_and_only_that(settings):
    """Notebook 03's check of harmonised features: the OLS slope of the first covariate and the
    centre's partial R^2 given the covariates (0 without a centre shift, large with one)."""
    rng = np.random.default_rng(1)
    n = 400
    glucose = rng.normal(6.0, 1.0, n)
    centre = rng.choice(np.array(["A", "B", "C"]), n)
    biology = -0.12 * glucose + rng.normal(0.0, 0.05, n)
    shift = pd.Series({"A": 0.1, "B": 0.0, "C": -0.1})[centre].to_numpy()
    slope, r2 = settings._ols_slope_and_centre_r2(biology, glucose[:, None], centre)
    assert abs(slope + 0.12) < 0.01 and r2 < 0.02
    slope, r2 = settings._ols_slope_and_centre_r2(biology + shift, glucose[:, None], centre)
    assert abs(slope + 0.12) < 0.01 and r2 > 0.5


def test_wholebody_knowledge_renames_the_tumour_latent_and_keeps_the_centre_a_root(settings):
    from bayesrad.graph import templates

    nodes = ["centre", "blood_glucose_mmol_l", "radiomics", "brain_log_suvmean", "response"]
    knowledge = settings._wholebody_knowledge(templates.load("wholebody_petct"), nodes)
    assert knowledge.tier_of("radiomics") == "disease" and knowledge.tier_of("tumour") is None
    assert not knowledge.allows("blood_glucose_mmol_l", "centre")
    assert knowledge.allows("centre", "blood_glucose_mmol_l")
    assert ("blood_glucose_mmol_l", "brain_log_suvmean") in knowledge.required_edges()
