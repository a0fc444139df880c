"""Cohort construction, typing, missingness, round trips and every bad-input error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bayesrad import Cohort, ColumnType
from bayesrad.errors import (
    BayesradError,
    CohortError,
    ImageError,
    ImageGeometryError,
    MissingFileError,
    SchemaError,
)


def _clinical(n=6):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "age_years": rng.normal(65, 8, n).round(1),
            "stage": rng.integers(1, 5, n),
            "histology": rng.choice(["adeno", "squamous"], n),
            "sex_male": rng.integers(0, 2, n),
        }
    )


def _outcome(ids):
    return pd.DataFrame(
        {
            "patient_id": ids,
            "overall_survival": np.linspace(100, 900, len(ids)),
            "overall_survival_event": [1, 0] * (len(ids) // 2) + [1] * (len(ids) % 2),
        }
    )


def _write_image(path, array, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture
def image_pair(tmp_path):
    image = np.random.default_rng(1).normal(0, 100, (8, 16, 16)).astype(np.float32)
    mask = np.zeros((8, 16, 16), np.uint8)
    mask[2:6, 4:10, 4:10] = 1
    return _write_image(tmp_path / "ct.nii.gz", image), _write_image(tmp_path / "mask.nii.gz", mask)


def test_types_are_inferred_and_survival_pairs_found():
    clinical = _clinical()
    cohort = Cohort({"clinical": clinical, "outcome": _outcome(clinical.patient_id)})
    types = cohort.schema
    assert types["clinical"]["age_years"].kind == "continuous"
    assert types["clinical"]["stage"].kind == "ordinal"
    assert types["clinical"]["histology"] == ColumnType("categorical", levels=("adeno", "squamous"))
    assert types["clinical"]["sex_male"].kind == "binary"
    assert types["outcome"]["overall_survival"] == ColumnType("survival", event="overall_survival_event")
    assert types["outcome"]["overall_survival_event"].kind == "event"
    table = cohort.schema_table()
    assert len(table) == 6 and set(table["block"]) == {"clinical", "outcome"}


def test_missing_modalities_are_derived_not_dropped(image_pair):
    clinical = _clinical(6)
    ids = list(clinical.patient_id)
    radiomics = pd.DataFrame({"patient_id": ids[:4], "ct_gtv_volume": [1.0, 2.0, np.nan, 4.0]})
    radiomics.loc[2, "ct_gtv_volume"] = np.nan  # an all-empty row counts as missing
    images = pd.DataFrame({"patient_id": [ids[0]], "modality": ["CT"], "path": [image_pair[0]], "mask_path": [image_pair[1]]})
    cohort = Cohort({"clinical": clinical, "radiomics": radiomics}, images)
    missing = cohort.missing
    assert list(missing.columns) == ["clinical", "radiomics", "CT"]
    assert missing["radiomics"].tolist() == [False, False, True, False, True, True]
    assert missing["CT"].sum() == 5
    assert cohort.n_patients == 6  # patients absent from radiomics are kept, and reported
    summary = cohort.summary()
    assert summary.loc["radiomics", "n_missing"] == 3
    assert cohort.block("radiomics").shape == (6, 1)


def test_subset_and_with_block():
    clinical = _clinical(6)
    cohort = Cohort({"clinical": clinical, "outcome": _outcome(clinical.patient_id)})
    sub = cohort.subset(["P003", "P001"])
    assert list(sub.patient_ids) == ["P003", "P001"]
    assert list(sub.blocks["clinical"].index) == ["P003", "P001"]
    extra = pd.DataFrame({"dose_mean_gy": [60.0, 70.0]}, index=pd.Index(["P000", "P005"], name="patient_id"))
    bigger = cohort.with_block("dosimetry", extra)
    assert bigger.missing["dosimetry"].sum() == 4
    with pytest.raises(CohortError, match="P999"):
        cohort.subset(["P999"])


def test_directory_round_trip_with_images_and_genes(tmp_path, image_pair):
    clinical = _clinical(4)
    ids = list(clinical.patient_id)
    genes = pd.DataFrame(np.arange(12.0).reshape(4, 3), index=pd.Index(ids, name="patient_id"), columns=["TP53", "EGFR", "KRAS"])
    images = pd.DataFrame(
        {"patient_id": ids[:1], "modality": ["CT"], "path": [image_pair[0]], "mask_path": [image_pair[1]], "mask_labels": ["1"], "units": ["HU"]}
    )
    cohort = Cohort({"clinical": clinical, "outcome": _outcome(ids), "genes": genes}, images, name="rt")
    out = cohort.to_directory(tmp_path / "cohort")
    assert (out / "genes.h5ad").exists() and (out / "manifest.csv").exists()
    assert (out / "images" / "P000" / "ct.nii.gz").exists()  # outside images are copied in
    back = Cohort.from_directory(out)
    assert back == cohort
    assert back.schema == cohort.schema
    # a second write over the first keeps an equal cohort (files replaced atomically)
    back.to_directory(out)
    assert Cohort.from_directory(out) == cohort


def test_from_files_with_manifest_relative_paths(tmp_path, image_pair):
    clinical = _clinical(3)
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    manifest = pd.DataFrame({"patient_id": ["P000"], "modality": ["CT"], "path": ["ct.nii.gz"], "mask_path": ["mask.nii.gz"]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    cohort = Cohort.from_files(clinical=tmp_path / "clinical.csv", manifest=tmp_path / "manifest.csv")
    assert cohort.images.loc[0, "path"] == str((tmp_path / "ct.nii.gz").resolve())


# ---------------------------------------------------------------- bad input: each has a test
def test_duplicated_patient_ids_named():
    clinical = _clinical(3)
    clinical.loc[2, "patient_id"] = "P000"
    with pytest.raises(CohortError, match=r"duplicated patient_id \['P000'\]"):
        Cohort({"clinical": clinical})


def test_patient_in_one_table_not_in_patient_list_named():
    clinical = _clinical(3)
    outcome = _outcome(["P000", "P001", "P002", "P777"])
    with pytest.raises(CohortError, match=r"block 'outcome' has patient\(s\) \['P777'\]"):
        Cohort({"clinical": clinical, "outcome": outcome}, patient_ids=clinical.patient_id)


def test_non_numeric_text_in_numeric_column_names_patient_and_column():
    clinical = _clinical(3)
    clinical["age_years"] = clinical["age_years"].astype(object)
    clinical.loc[1, "age_years"] = "sixty"
    with pytest.raises(SchemaError, match=r"column 'age_years'.*patient 'P001' \('sixty'\)"):
        Cohort({"clinical": clinical}, schema={"clinical": {"age_years": "continuous"}})


def test_unknown_declared_type_named():
    with pytest.raises(SchemaError, match=r"column 'age_years'.*unknown column type 'numberish'"):
        Cohort({"clinical": _clinical(3)}, schema={"clinical": {"age_years": {"kind": "numberish"}}})


def test_declared_column_absent_named():
    with pytest.raises(SchemaError, match="'tumour_grade'"):
        Cohort({"clinical": _clinical(3)}, schema={"clinical": {"tumour_grade": "ordinal"}})


def test_negative_survival_time_named():
    outcome = _outcome(["P000", "P001"])
    outcome.loc[1, "overall_survival"] = -5
    with pytest.raises(SchemaError, match=r"survival time.*patient 'P001'"):
        Cohort({"outcome": outcome})


def test_event_not_zero_one_named():
    outcome = _outcome(["P000", "P001"])
    outcome.loc[0, "overall_survival_event"] = 2
    with pytest.raises(SchemaError, match=r"overall_survival_event.*0 or 1.*patient 'P000'"):
        Cohort({"outcome": outcome}, schema={"outcome": {"overall_survival": {"kind": "survival", "event": "overall_survival_event"}, "overall_survival_event": "event"}})


def test_value_outside_declared_levels_named():
    with pytest.raises(SchemaError, match="histology"):
        Cohort({"clinical": _clinical(4)}, schema={"clinical": {"histology": {"kind": "categorical", "levels": ["adeno"]}}})


def test_missing_image_file_named(tmp_path):
    images = pd.DataFrame({"patient_id": ["P000"], "modality": ["CT"], "path": [str(tmp_path / "nope.nii.gz")]})
    with pytest.raises(MissingFileError, match=r"patient 'P000', file .*nope.nii.gz"):
        Cohort({"clinical": _clinical(2)}, images)


def test_missing_block_file_named(tmp_path):
    with pytest.raises(MissingFileError, match="clinical.csv"):
        Cohort.from_files(clinical=tmp_path / "clinical.csv")


def test_image_mask_geometry_mismatch_named(tmp_path):
    image = _write_image(tmp_path / "ct.nii.gz", np.zeros((8, 16, 16), np.float32))
    mask = _write_image(tmp_path / "m.nii.gz", np.ones((8, 16, 16), np.uint8), spacing=(1.0, 1.0, 3.0))
    images = pd.DataFrame({"patient_id": ["P000"], "modality": ["CT"], "path": [image], "mask_path": [mask]})
    with pytest.raises(ImageGeometryError, match=r"patient 'P000'.*spacing.*resample"):
        Cohort({"clinical": _clinical(2)}, images)


def test_all_errors_share_one_base():
    for exc in (CohortError, SchemaError, MissingFileError, ImageError, ImageGeometryError):
        assert issubclass(exc, BayesradError)


def test_images_table_without_required_columns_named():
    with pytest.raises(CohortError, match=r"lacks column\(s\) \['path'\]"):
        Cohort({"clinical": _clinical(2)}, pd.DataFrame({"patient_id": ["P000"], "modality": ["CT"]}))


def test_cohort_yaml_from_another_version_refused(tmp_path):
    cohort = Cohort({"clinical": _clinical(2)})
    out = cohort.to_directory(tmp_path / "c")
    text = (out / "cohort.yaml").read_text().replace("version: 1", "version: 99")
    (out / "cohort.yaml").write_text(text)
    with pytest.raises(CohortError, match="version 99"):
        Cohort.from_directory(out)


def test_drop_block_keeps_patients():
    clinical = _clinical(4)
    cohort = Cohort({"clinical": clinical, "outcome": _outcome(clinical.patient_id)})
    smaller = cohort.drop_block("outcome")
    assert list(smaller.blocks) == ["clinical"] and smaller.n_patients == 4
    with pytest.raises(CohortError, match="no block 'genes'"):
        cohort.drop_block("genes")
