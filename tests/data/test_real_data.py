"""Cohorts built from the real public data in ../shared/data."""

from __future__ import annotations

import pandas as pd

from bayesrad import Cohort
from bayesrad.data.readers import read_image, read_mask


def test_pyradiomics_cases_as_cohort(shared_data):
    base = shared_data / "radiomics_reference/pyradiomics/data"
    images = pd.DataFrame(
        {
            "patient_id": ["brain1", "lung1"],
            "modality": ["MR", "CT"],
            "path": [str(base / "brain1_image.nrrd"), str(base / "lung1_image.nrrd")],
            "mask_path": [str(base / "brain1_label.nrrd"), str(base / "lung1_label.nrrd")],
            "mask_labels": ["1", "1"],
        }
    )
    cohort = Cohort(images=images)
    assert cohort.n_patients == 2
    assert cohort.missing.loc["brain1", "CT"] and not cohort.missing.loc["lung1", "CT"]
    for row in cohort.images.itertuples():
        mask = read_mask(row.mask_path, read_image(row.path), labels=row.mask_labels, patient_id=row.patient_id)
        assert mask.GetSize() == read_image(row.path).GetSize()


def test_ibsi_sts_patient_with_ct_pet_mr(shared_data, tmp_path):
    base = shared_data / "radiomics_reference/ibsi/data_sets/ibsi_validation/nifti/STS_001"
    rows = [
        {"patient_id": "STS_001", "modality": m, "path": str(base / f"{m}_image.nii.gz"), "mask_path": str(base / f"{m}_mask.nii.gz"), "roi": "GTV_Mass", "units": u}
        for m, u in (("CT", "HU"), ("PET", "SUV"), ("MR_T1", "a.u."))
    ]
    cohort = Cohort(images=pd.DataFrame(rows), name="ibsi_sts")
    assert cohort.image_modalities == ["CT", "PET", "MR_T1"]
    assert not cohort.missing.loc["STS_001"].any()
    back = Cohort.from_directory(cohort.to_directory(tmp_path / "sts"))
    assert back == cohort


def test_hn1_clinical_table_with_survival(shared_data):
    path = shared_data / "tables/hn1_radiomics_survival/HN_ClinicalData.csv"
    cohort = Cohort.from_files(clinical=path, id_column="id", name="HN1")
    assert cohort.n_patients == 137
    types = cohort.schema["clinical"]
    assert types["overall_survival_in_days"].kind == "survival"
    assert types["overall_survival_in_days"].event == "event_overall_survival"
    assert types["event_overall_survival"].kind == "event"
    assert int(cohort.blocks["clinical"]["event_overall_survival"].sum()) == 74
    assert types["index_tumour_location"].kind == "categorical"
    assert types["age_at_diagnosis"].kind == "continuous"
    # missing haemoglobin values stay missing, not dropped
    assert cohort.blocks["clinical"]["pretreat_hb_in_mmolperlitre"].isna().sum() > 0
