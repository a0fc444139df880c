"""bayesrad.features.extract: the cohort runner (blocks, failures, cache, processes, Dask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

import bayesrad
from bayesrad.errors import FeatureError
from bayesrad.features import extract as ex
from bayesrad.features import radiomics as rad

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

# Small feature lists keep the runner tests fast; the values are checked against direct calls.
CT_SETTINGS = {"imageType": {"Original": {}}, "setting": {"binWidth": 25},
               "featureClass": {"firstorder": ["Mean", "Maximum"], "shape": ["VoxelVolume"], "glcm": ["Contrast"]}}
PET_SETTINGS = {"imageType": {"Original": {}}, "setting": {"binWidth": 0.25},
                "featureClass": {"firstorder": ["Mean", "Maximum"]}}
STEPS = [ex.radiomics_step({"CT": CT_SETTINGS, "PET": PET_SETTINGS}), ex.dosimetry_step()]


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt_cohort")
    bayesrad.simulate("radiotherapy", n_patients=4, seed=3, missing=0.0, out=out, image_size=24)
    return out


@pytest.fixture(scope="module")
def cohort(cohort_dir):
    return bayesrad.Cohort.from_directory(cohort_dir)


@pytest.fixture(scope="module")
def reference_run(cohort, tmp_path_factory):
    return ex.extract_cohort(cohort, tmp_path_factory.mktemp("ref_out"), steps=STEPS, progress=False)


def test_blocks_hold_every_patient_and_match_direct_extraction(cohort, reference_run):
    result = reference_run
    assert result.failures.empty
    patients = sorted(pd.unique(cohort.images["patient_id"]))
    assert sorted(result.blocks["radiomics"].index) == patients
    assert sorted(result.blocks["dosimetry"].index) == patients
    assert "ct_gtv_original_firstorder_mean" in result.blocks["radiomics"].columns
    assert "pet_gtv_original_firstorder_maximum" in result.blocks["radiomics"].columns
    row = cohort.images[(cohort.images["patient_id"] == patients[0]) & (cohort.images["modality"] == "CT")].iloc[0]
    direct = rad.radiomics_features(row["path"], row["mask_path"], 1, CT_SETTINGS)
    assert result.blocks["radiomics"].loc[patients[0], "ct_gtv_original_firstorder_mean"] == pytest.approx(direct["original_firstorder_Mean"], rel=1e-12)
    # provenance names the settings hash of each modality
    assert result.provenance["radiomics"]["settings_hash"]["CT"] == rad.settings_hash(rad.load_settings(CT_SETTINGS))
    assert result.to_cohort(cohort).block("radiomics").shape[0] == cohort.n_patients


def test_second_run_reads_the_cache_and_an_interrupted_run_resumes(cohort, tmp_path, reference_run):
    first = ex.extract_cohort(cohort, tmp_path, steps=STEPS, progress=False)
    assert first.n_cached == 0 and first.n_computed == first.n_units > 0
    again = ex.extract_cohort(cohort, tmp_path, steps=STEPS, progress=False)
    assert again.n_cached == again.n_units and again.n_computed == 0
    pd.testing.assert_frame_equal(again.blocks["radiomics"], first.blocks["radiomics"])
    # an interruption: some cache entries never got written
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    for path in entries[::2]:
        path.unlink()
    resumed = ex.extract_cohort(cohort, tmp_path, steps=STEPS, progress=False)
    assert resumed.n_computed == len(entries[::2])
    pd.testing.assert_frame_equal(resumed.blocks["radiomics"], first.blocks["radiomics"])
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no partial files
    # new settings -> new hash -> recomputed, not served from the old cache
    changed = [ex.radiomics_step({"CT": {**CT_SETTINGS, "setting": {"binWidth": 10}}, "PET": PET_SETTINGS})]
    rerun = ex.extract_cohort(cohort, tmp_path, steps=changed, progress=False)
    assert rerun.n_cached == sum(1 for _ in cohort.images.itertuples() if _.modality == "PET")
    for name in ("radiomics.csv", "dosimetry.csv", "failures.csv", "provenance.json"):
        assert (tmp_path / name).exists()


def _broken_copies(cohort, tmp_path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The images table with one bad patient per failure kind (the others untouched)."""
    images = cohort.images.copy()
    patients = sorted(pd.unique(images["patient_id"]))
    expected = {}

    def ct_row(pid):
        return images.index[(images["patient_id"] == pid) & (images["modality"] == "CT")][0]

    # 1. unreadable CT file
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"this is not an image")
    images.loc[ct_row(patients[0]), "path"] = str(bad)
    expected[patients[0]] = "ImageError"
    # 2. NaN voxels inside the ROI
    i = ct_row(patients[1])
    image = sitk.ReadImage(images.loc[i, "path"])
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(images.loc[i, "mask_path"]))
    array[mask == 1] = np.nan
    nan_image = sitk.GetImageFromArray(array)
    nan_image.CopyInformation(image)
    sitk.WriteImage(nan_image, str(tmp_path / "nan_ct.nrrd"))
    images.loc[i, "path"] = str(tmp_path / "nan_ct.nrrd")
    expected[patients[1]] = "ImageError"
    # 3. geometry mismatch: the mask moved by 10 mm
    i = ct_row(patients[2])
    moved = sitk.ReadImage(images.loc[i, "mask_path"])
    moved.SetOrigin(tuple(o + 10.0 for o in moved.GetOrigin()))
    sitk.WriteImage(moved, str(tmp_path / "moved_mask.nii.gz"))
    images.loc[i, "mask_path"] = str(tmp_path / "moved_mask.nii.gz")
    expected[patients[2]] = "ImageGeometryError"
    return images, expected


def test_bad_patients_land_in_failures_and_the_others_complete(cohort, tmp_path, reference_run):
    images, expected = _broken_copies(cohort, tmp_path)
    result = ex.extract_cohort(images, tmp_path / "out", steps=STEPS, progress=False)
    ct_failures = result.failures[result.failures["roi"] == "CT/gtv"].set_index("patient_id")
    assert dict(ct_failures["error"]) == expected
    for patient_id in expected:
        assert patient_id in ct_failures.loc[patient_id, "reason"]  # the message names the patient
    good = sorted(set(images["patient_id"]) - set(expected))
    pd.testing.assert_frame_equal(result.blocks["radiomics"].loc[good], reference_run.blocks["radiomics"].loc[good])
    # their PET and dose still completed
    assert result.blocks["radiomics"].loc[list(expected), "pet_gtv_original_firstorder_mean"].notna().all()
    assert set(result.blocks["dosimetry"].index) == set(images["patient_id"])
    # an empty mask label also lands in failures
    empty = images.copy()
    empty.loc[empty["modality"] == "PET", "mask_labels"] = "7"
    empty.loc[empty["modality"] == "PET", "roi"] = "ghost"
    result = ex.extract_cohort(empty, None, steps=[ex.radiomics_step({"CT": CT_SETTINGS, "PET": PET_SETTINGS}, modalities=("PET",))], progress=False)
    assert len(result.failures) == len(pd.unique(images["patient_id"]))
    assert result.failures["reason"].str.contains("no voxel").all()


def test_two_worker_processes_give_identical_blocks(cohort, reference_run):
    result = ex.extract_cohort(cohort, None, steps=STEPS, n_jobs=2, progress=False)
    for name, block in reference_run.blocks.items():
        pd.testing.assert_frame_equal(result.blocks[name], block)


def test_dask_local_cluster_gives_identical_blocks(cohort, reference_run):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        result = ex.extract_cohort(cohort, None, steps=STEPS, client=client, progress=False)
        by_address = ex.extract_cohort(cohort, None, steps=STEPS, client=cluster.scheduler_address, progress=False)
    for name, block in reference_run.blocks.items():
        pd.testing.assert_frame_equal(result.blocks[name], block)
        pd.testing.assert_frame_equal(by_address.blocks[name], block)


def test_extract_directory_and_bad_arguments(cohort_dir, tmp_path):
    result = ex.extract_directory(cohort_dir, tmp_path, steps=["dosimetry"], progress=False)
    assert list(result.blocks) == ["dosimetry"]
    assert (tmp_path / "dosimetry.csv").exists()
    with pytest.raises(FeatureError, match="unknown extraction step"):
        ex.extract_cohort(pd.DataFrame({"patient_id": ["a"], "modality": ["CT"], "path": ["x"]}), None, steps=["texture"])
    with pytest.raises(FeatureError, match="no images table"):
        ex.extract_cohort(pd.DataFrame(), None)
    with pytest.raises(FeatureError, match="n_jobs"):
        ex.extract_cohort(pd.DataFrame({"patient_id": ["a"], "modality": ["CT"], "path": ["x"]}), None, n_jobs=0)


def test_default_steps_plug_in_kinetics_on_dynamic_pet(tmp_path):
    """Glioma scenario: MR + static PET radiomics and, from the 4D PET, the kinetics block."""
    pytest.importorskip("bayesrad.features.kinetics")
    simulation = bayesrad.simulate("glioma_pet", n_patients=2, seed=1, missing=0.0, out=tmp_path / "glioma", image_size=16)
    light = {"imageType": {"Original": {}}, "setting": {"binWidth": 0.25}, "featureClass": {"firstorder": ["Mean"]}}
    steps = [ex.radiomics_step({"MR": light, "PET": light}), ex.kinetics_step()]
    result = ex.extract_cohort(simulation.cohort, None, steps=steps, progress=False)
    assert result.failures.empty
    assert set(result.blocks) == {"radiomics", "kinetics"}
    assert len(result.blocks["kinetics"]) == 2
    assert any(c.startswith("mr_t1c_lesion_") for c in result.blocks["radiomics"].columns)
    assert [s.name for s in ex.default_steps()] == ["radiomics", "dosimetry", "kinetics"]


def test_unnamed_whole_body_segmentation_gives_one_roi_per_organ():
    """A real CT with a 41-label organ segmentation and no ROI names: one column set per label."""
    totalseg = SHARED / "images" / "totalsegmentator"
    assert totalseg.exists(), f"real test data missing at {totalseg}"
    images = pd.DataFrame([{"patient_id": "ts1", "modality": "CT", "path": str(totalseg / "example_ct_sm.nii.gz"),
                            "mask_path": str(totalseg / "example_seg.nii.gz"), "mask_labels": "", "roi": "", "units": "HU"}])
    light = {"imageType": {"Original": {}}, "setting": {"binWidth": 25}, "featureClass": {"firstorder": ["Mean"]}}
    result = ex.extract_cohort(images, None, steps=[ex.radiomics_step(light)], progress=False)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg / "example_seg.nii.gz")))
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg / "example_ct_sm.nii.gz")))
    labels, counts = np.unique(seg[seg != 0], return_counts=True)
    assert result.n_units == len(labels)
    # an organ of a single voxel (label 13 in this segmentation) is that ROI's failure, not the cohort's
    single = {f"CT/label_{label}" for label, n in zip(labels, counts) if n == 1}
    assert single and set(result.failures["roi"]) == single
    assert result.failures["reason"].str.contains("1 segmented voxel").all()
    block = result.blocks["radiomics"]
    for label in labels[counts > 1]:
        assert block.loc["ts1", f"ct_label_{label}_original_firstorder_mean"] == pytest.approx(ct[seg == label].mean(), rel=1e-5)
