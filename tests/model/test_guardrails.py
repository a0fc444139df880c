"""Intervention guardrails (model/guardrails.py), centre levels in coefficients(), tidy survival
curves."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bayesrad.errors import ModelError
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.guardrails import ExtrapolationWarning, check_interventions

KINDS = {"dose": "continuous", "fractions": "count", "histology": "categorical"}
STATS = {"dose": {"mean": 60.0, "sd": 4.0, "min": 50.0, "max": 70.0},
         "fractions": {"enc_mean": 30.0, "enc_sd": 3.0, "min": 20.0, "max": 35.0},
         "histology": {"levels": ["adeno", "squamous"]}}


def test_a_value_inside_the_range_or_margin_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = check_interventions({"dose": 65, "fractions": 33, "histology": "adeno"}, KINDS, STATS)
        assert out == {"dose": 0.0, "fractions": 0.0}
        # 6 Gy above the maximum = 1.5 sds, inside the default 2-sd margin
        assert check_interventions({"dose": 76}, KINDS, STATS)["dose"] == pytest.approx(1.5)


def test_far_values_warn_how_far_and_strict_refuses():
    with pytest.warns(ExtrapolationWarning, match=r"do\(dose=500\).*107.5 training sds above.*\[50, 70\]"):
        assert check_interventions({"dose": 500}, KINDS, STATS)["dose"] == pytest.approx(107.5)
    with pytest.warns(ExtrapolationWarning, match=r"12.8 training sds below"):
        check_interventions({"dose": -1}, KINDS, STATS)
    with pytest.raises(ModelError, match=r"do\(dose=500\).*drop strict"):
        check_interventions({"dose": 500}, KINDS, STATS, strict=True)
    # a shift is checked for a patient at the training mean: 60 + 40 = 100 Gy, 7.5 sds above
    with pytest.warns(ExtrapolationWarning, match=r"shift of \+40.*7.5 training sds"):
        check_interventions({"dose": "+40"}, KINDS, STATS)


def test_non_numbers_and_negative_counts_are_errors_naming_the_node():
    with pytest.raises(ModelError, match=r"'lots' for 'dose' is not a number \(continuous node\)"):
        check_interventions({"dose": "lots"}, KINDS, STATS)
    with pytest.raises(ModelError, match=r"'fractions' is a count; -2 is negative"):
        check_interventions({"fractions": -2}, KINDS, STATS)


@pytest.fixture(scope="module")
def centre_fit():
    """y = centre offset (A: 0, B: +3, C: -3) + noise on 90 patients."""
    rng = np.random.default_rng(0)
    centre = np.repeat(["A", "B", "C"], 30)
    y = pd.Series(centre).map({"A": 0.0, "B": 3.0, "C": -3.0}).to_numpy() + rng.normal(0, 1, 90)
    ids = [f"P{i:03d}" for i in range(90)]
    blocks = {"clinical": pd.DataFrame({"centre": centre, "y": y}, index=pd.Index(ids, name="patient_id"))}
    graph = Graph([NodeSpec("centre", "group", block="clinical", levels=["A", "B", "C"]),
                   NodeSpec("y", "continuous", block="clinical")], [("centre", "y")])
    return HybridBN(graph, num_steps=800, seed=0, num_threads=1, n_samples=200).fit(blocks), blocks


def test_group_centre_levels_appear_in_coefficients(centre_fit):
    model, _ = centre_fit
    table = model.coefficients()
    rows = table.loc[[("centre[A]", "y"), ("centre[B]", "y"), ("centre[C]", "y")], "mean"].to_numpy()
    # random intercepts in y's units, centred near the grand mean: B - A ~ +3, C - A ~ -3
    assert rows[1] - rows[0] == pytest.approx(3.0, abs=0.8)
    assert rows[2] - rows[0] == pytest.approx(-3.0, abs=0.8)


def test_predict_checks_its_interventions(centre_fit):
    model, blocks = centre_fit
    with pytest.raises(ModelError, match="not a number"):
        model.predict(blocks, target="y", do={"y": "lots"})


def test_survival_curves_are_a_tidy_table_in_days(complete_fit):
    model, test, _ = complete_fit
    data = {"outcome": test["outcome"].iloc[:4]}
    times = [100.0, 500.0]
    curves = model.survival_curves(data, "os_days", times, seed=1)
    assert list(curves.columns) == ["patient_id", "time_days", "survival"] and curves.attrs["time_unit"] == "days"
    wide = model.survival_function(data, "os_days", times, seed=1)
    np.testing.assert_allclose(curves["survival"].to_numpy().reshape(4, 2), wide)
    assert curves["patient_id"].tolist()[:2] == [test["outcome"].index[0]] * 2
