"""Derived blocks read back with ``--features``: a block that is not the same quantity as a
same-named block of the cohort (the DVH that ``extract`` recomputes vs the planned ``dosimetry``
table) is added beside it under its own name, never silently in its place; clashes that cannot
be resolved are refused naming both blocks."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import bayesrad
from bayesrad.data.derived import load_cohort, write_block
from bayesrad.errors import CohortError
from bayesrad.features.extract import extract_directory


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clash")
    bayesrad.simulate("radiotherapy", n_patients=4, seed=5, missing=0.0, out=tmp / "cohort", image_size=16)
    extract_directory(tmp / "cohort", tmp / "features", steps=["dosimetry"], progress=False)
    return {"dir": tmp, "cohort": bayesrad.Cohort.from_directory(tmp / "cohort")}


def test_extracted_dvh_is_added_beside_the_planned_dose_table(extracted):
    planned = extracted["cohort"].blocks["dosimetry"]
    extracted = extracted["dir"]
    entry = yaml.safe_load((extracted / "features" / "features.yaml").read_text())["blocks"]["dosimetry"]
    assert entry["rename_to"] == "dvh"
    cohort, provenance = load_cohort(extracted / "cohort", [extracted / "features"])
    # the planned metrics are untouched, the DVH is its own block
    pd.testing.assert_frame_equal(cohort.blocks["dosimetry"], planned)
    dvh = pd.read_csv(extracted / "features" / "dosimetry.csv", index_col=0)
    assert list(cohort.blocks["dvh"].columns) == list(dvh.columns) and len(cohort.blocks["dvh"]) == 4
    assert "added as 'dvh'" in provenance["dvh"]["note"] and "dose_mean_gy" in provenance["dvh"]["note"]
    # the recomputed GTV mean dose is the planned mean dose (the simulator plans on the grid)
    gap = (cohort.blocks["dvh"]["dose_gtv_mean_gy"] - cohort.blocks["dosimetry"]["dose_mean_gy"]).abs()
    assert gap.max() < 0.5


def test_dvh_without_a_planned_table_keeps_its_name(extracted, tmp_path):
    extracted["cohort"].drop_block("dosimetry").drop_block("genes").to_directory(tmp_path / "no_plan",
                                                                                 copy_images=False)
    extracted = extracted["dir"]
    loaded, provenance = load_cohort(tmp_path / "no_plan", [extracted / "features"])
    assert "dosimetry" in loaded.blocks and "dvh" not in loaded.blocks and "note" not in provenance["dosimetry"]


def test_rename_target_taken_is_refused(extracted, tmp_path):
    extracted = extracted["dir"]
    features = tmp_path / "other"
    write_block(features, "dvh", pd.DataFrame({"x": [1.0]}, index=["RT0001"]), step="test")
    with pytest.raises(CohortError, match="'dvh' block too"):
        load_cohort(extracted / "cohort", [features, extracted / "features"])


def test_derived_column_named_like_another_blocks_is_refused(extracted, tmp_path):
    features = tmp_path / "copy"
    write_block(features, "plan_copy", extracted["cohort"].blocks["dosimetry"][["dose_mean_gy"]], step="test")
    with pytest.raises(CohortError) as info:
        load_cohort(extracted["dir"] / "cohort", [features])
    message = str(info.value)
    assert "'dose_mean_gy'" in message and "'dosimetry'" in message and "'plan_copy'" in message
