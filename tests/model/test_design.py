"""The design's conversion of a block's columns: every numeric dtype people load, one call per
block, and clear refusals naming the column and the patient."""

import numpy as np
import pandas as pd
import pytest

from bayesrad import Graph
from bayesrad.data import Cohort
from bayesrad.errors import ModelError
from bayesrad.model.design import Preprocessor


def _table(n=40, p=14, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"feature_{j:02d}" for j in range(p)])
    frame.insert(0, "Target", (rng.random(n) < 0.5).astype(int))
    frame.insert(0, "ID", [f"p{i:02d}" for i in range(n)])
    return frame


def _fitted(frame):
    cohort = Cohort({"table": frame}, id_column="ID")
    graph = Graph.default(cohort, target="Target")
    latent = [n for n in graph.nodes if graph.spec(n).kind == "latent"]
    assert latent, "a table of 14 numeric columns becomes one latent block"
    return cohort, Preprocessor(graph).fit(cohort.blocks), latent[0]


def test_mixed_numeric_dtypes_convert_as_column_by_column():
    frame = _table()
    _, prep, node = _fitted(frame)
    mixed = frame.set_index("ID").copy()
    # nullable integers with a missing value, booleans and numbers read as text
    mixed["feature_00"] = pd.array(np.round(mixed["feature_00"] * 10).astype(int), dtype="Int64")
    mixed.loc["p03", "feature_00"] = pd.NA
    mixed["feature_01"] = mixed["feature_01"] > 0
    mixed["feature_02"] = mixed["feature_02"].map(lambda v: f"{v:.6f}").astype(object)
    floats = mixed.copy()
    floats["feature_00"] = mixed["feature_00"].astype("float64")      # pd.NA -> NaN
    floats["feature_01"] = mixed["feature_01"].astype(float)
    floats["feature_02"] = mixed["feature_02"].astype(float)
    got, want = prep.transform({"table": mixed}), prep.transform({"table": floats})
    np.testing.assert_array_equal(got.observed[node], want.observed[node])
    np.testing.assert_array_equal(got.values[node], want.values[node])
    j = prep.stats_[node]["columns"].index("feature_00")
    assert not got.observed[node][3, j] and got.observed[node][:, j].sum() == 39


def test_a_column_absent_at_prediction_is_unobserved():
    frame = _table()
    _, prep, node = _fitted(frame)
    design = prep.transform({"table": frame.set_index("ID").drop(columns=["feature_05"])})
    j = prep.stats_[node]["columns"].index("feature_05")
    assert not design.observed[node][:, j].any()
    assert design.observed[node][:, [i for i in range(14) if i != j]].all()


def test_text_infinite_and_twice_given_columns_are_refused_naming_them():
    frame = _table()
    _, prep, _ = _fitted(frame)
    bad = frame.set_index("ID").astype({"feature_07": object})
    bad.loc["p11", "feature_07"] = "n/a?"
    with pytest.raises(ModelError, match=r"feature_07.*'n/a\?'.*p11"):
        prep.transform({"table": bad})
    bad = frame.set_index("ID")
    bad.loc["p09", "feature_03"] = np.inf
    with pytest.raises(ModelError, match=r"feature_03.*inf.*p09"):
        prep.transform({"table": bad})
    # a block given as a plain DataFrame with a column twice: which copy is meant is unknown
    twice = pd.concat([frame.set_index("ID"), frame.set_index("ID")[["feature_04"]]], axis=1)
    with pytest.raises(ModelError, match=r"feature_04.*twice"):
        prep.transform({"table": twice})
