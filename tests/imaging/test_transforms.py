from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from bayesrad.errors import ImageError
from bayesrad.imaging.transforms import (
    PreprocessConfig, ZScoreWithinBodyd, dynamic_summary, metatensor_to_sitk, modality_family, preprocess_patient,
    sitk_to_metatensor,
)
from tests.imaging._synth import make_image, sphere_patient

STS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "radiomics_reference" / "ibsi" / "data_sets" / "ibsi_validation" / "nifti" / "STS_001"


def test_geometry_round_trip_keeps_spacing_origin_direction():
    # an oblique, anisotropic grid: a bug in the LPS/RAS or axis-order conversion shows here
    angle = np.deg2rad(20)
    direction = (np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1)
    image = make_image(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), (0.8, 1.1, 3.0), (10, -20, 5), direction)
    back = metatensor_to_sitk(sitk_to_metatensor(image)[0], sitk_to_metatensor(image).affine)
    assert np.allclose(back.GetSpacing(), image.GetSpacing())
    assert np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.allclose(back.GetDirection(), image.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_ct_pet_on_different_grids_are_aligned_cropped_and_scaled(tmp_path):
    radius = 10.0
    rows = pd.DataFrame(sphere_patient(tmp_path, "P1", radius, suv=6.0, centre_mm=(8.0, -6.0, 4.0)))
    config = PreprocessConfig(modalities=("CT", "PET"), spacing_mm=2.0, size=24, margin_mm=4.0)
    vol = preprocess_patient(rows, "P1", config)
    assert vol.image.shape == (2, 24, 24, 24) and vol.mask.shape == (1, 24, 24, 24)
    # the crop is centred on the mask
    centroid = torch.nonzero(vol.mask[0]).float().mean(0)
    assert torch.allclose(centroid, torch.full((3,), 11.5), atol=1.0)
    # physical size is preserved (no rescaling): 4/3 pi r^3 within 10 %
    volume_mm3 = float(vol.mask.sum()) * 8.0
    assert volume_mm3 == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.1)
    ct, pet = vol.image
    assert 0.0 <= float(ct.min()) and float(ct.max()) <= 1.0
    inside, outside = vol.mask[0] > 0, vol.mask[0] == 0
    # PET came from a coarser, shifted grid: its hot sphere must sit on the CT mask
    assert float(pet[inside].mean()) > 3 * float(pet[outside & (pet > 0)].mean())
    assert float(pet[inside].mean()) == pytest.approx(6.0 / config.suv_max, rel=0.25)
    # CT window (-200, 250): 60 HU -> 0.578, 0 HU -> 0.444
    assert float(ct[inside].mean()) == pytest.approx(260 / 450, abs=0.03)


def test_mr_is_z_scored_within_the_body():
    rng = np.random.default_rng(1)
    x = torch.zeros(1, 20, 20, 20)
    x[:, 4:16, 4:16, 4:16] = torch.as_tensor(rng.normal(300, 40, (12, 12, 12)), dtype=torch.float32)
    out = ZScoreWithinBodyd("mr")({"mr": x})["mr"]
    body = out[:, 4:16, 4:16, 4:16]
    assert float(body.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(body.std()) == pytest.approx(1.0, abs=1e-2)


def test_modality_family():
    assert [modality_family(m) for m in ("CT_arterial", "PET", "DPET", "MR_T1C", "DOSE", "US")] == [
        "CT", "PET", "PET", "MR", "DOSE", "OTHER"]


def test_missing_modality_names_patient_and_fix(tmp_path):
    rows = pd.DataFrame(sphere_patient(tmp_path, "P7", 8.0, 3.0))
    with pytest.raises(ImageError, match="'P7' has no 'MR_T1'"):
        preprocess_patient(rows, "P7", PreprocessConfig(modalities=("CT", "MR_T1")))
    with pytest.raises(ImageError, match="repeats"):
        PreprocessConfig(modalities=("CT", "CT"))


def test_augmentation_changes_the_volume_but_keeps_its_shape(tmp_path):
    rows = pd.DataFrame(sphere_patient(tmp_path, "P2", 9.0, 4.0))
    config = PreprocessConfig(modalities=("CT", "PET"), size=16, spacing_mm=3.0)
    plain = preprocess_patient(rows, "P2", config)
    augmented = [preprocess_patient(rows, "P2", config, augment=True, seed=s).image for s in range(3)]
    assert all(a.shape == plain.image.shape for a in augmented)
    assert any(not torch.allclose(a, plain.image) for a in augmented)
    # the same seed gives the same augmentation
    assert torch.equal(preprocess_patient(rows, "P2", config, augment=True, seed=1).image, augmented[1])


@pytest.mark.skipif(not STS.is_dir(), reason="shared real data not present")
def test_real_sarcoma_patient_ct_pet_mr_end_to_end():
    rows = pd.DataFrame([dict(patient_id="STS_001", modality=m, path=str(STS / f"{m}_image.nii.gz"),
                              mask_path=str(STS / f"{m}_mask.nii.gz"), mask_labels="", roi="gtv",
                              frame_times="", units="") for m in ("CT", "PET", "MR_T1")])
    vol = preprocess_patient(rows, "STS_001", PreprocessConfig(modalities=("CT", "PET", "MR_T1"), size=32, spacing_mm=4.0))
    assert vol.image.shape == (3, 32, 32, 32)
    assert torch.isfinite(vol.image).all()
    inside = vol.mask[0] > 0
    assert inside.sum() > 100
    # a sarcoma takes up FDG: PET inside the GTV exceeds PET outside it
    pet = vol.image[1]
    assert float(pet[inside].mean()) > 2 * float(pet[~inside].mean())


PYRADIOMICS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "radiomics_reference" / "pyradiomics" / "data"


@pytest.mark.skipif(not PYRADIOMICS.is_dir(), reason="shared real data not present")
@pytest.mark.parametrize("case, modality", [("lung1", "CT"), ("brain1", "MR_T1")])
def test_real_pyradiomics_case_end_to_end(case, modality):
    """pyradiomics' real scans (nrrd): read, reoriented, resampled, normalised and cropped around
    the tumour mask like any cohort image."""
    rows = pd.DataFrame([dict(patient_id=case, modality=modality, path=str(PYRADIOMICS / f"{case}_image.nrrd"),
                              mask_path=str(PYRADIOMICS / f"{case}_label.nrrd"), mask_labels="", roi="gtv",
                              frame_times="", units="")])
    vol = preprocess_patient(rows, case, PreprocessConfig(modalities=(modality,), size=32, spacing_mm=4.0))
    assert vol.image.shape == (1, 32, 32, 32)
    assert torch.isfinite(vol.image).all()
    inside = vol.mask[0] > 0
    assert inside.sum() >= 10
    # the crop is centred on the tumour: its centre of mass lies near the middle of the box
    centre = torch.stack(torch.nonzero(inside, as_tuple=True)).float().mean(1)
    assert torch.all((centre - 15.5).abs() < 8)
    if modality == "CT":
        # a lung tumour is soft tissue, denser than the aerated lung around it
        assert float(vol.image[0][inside].mean()) > float(vol.image[0][~inside].mean())


def _dynamic_series(frame_values, spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    """A 4D series (t, z, y, x) = (T, 10, 10, 10) whose frame k is uniformly ``frame_values[k]``."""
    frames = [make_image(np.full((10, 10, 10), v, np.float32), spacing, (-9.0, -9.0, -9.0)) for v in frame_values]
    return sitk.JoinSeries(frames)


def test_dynamic_series_enters_as_its_last_frame_or_a_duration_weighted_window():
    series = _dynamic_series([1.0, 2.0, 3.0, 4.0, 5.0])
    starts = "0;60;180;300;600"  # durations 60, 120, 120, 300, 300 s; mid times 30, 120, 240, 450, 750 s
    last = dynamic_summary(series, starts, None)
    assert last.GetDimension() == 3 and np.allclose(sitk.GetArrayFromImage(last), 5.0)
    window = dynamic_summary(series, starts, (100.0, 500.0))
    assert np.allclose(sitk.GetArrayFromImage(window), (2 * 120 + 3 * 120 + 4 * 300) / 540)
    assert window.GetSpacing() == (2.0, 2.0, 2.0) and np.allclose(window.GetOrigin(), (-9.0, -9.0, -9.0))
    with pytest.raises(ImageError, match="needs the series' frame_times"):
        dynamic_summary(series, "", (100.0, 500.0), "P3")
    with pytest.raises(ImageError, match="lists 3 frames but the series has 5"):
        dynamic_summary(series, "0;60;180", (100.0, 500.0), "P3")
    with pytest.raises(ImageError, match="no frame .* widen"):
        dynamic_summary(series, starts, (800.0, 900.0), "P3")
    with pytest.raises(ImageError, match="dynamic_window_s"):
        PreprocessConfig(dynamic_window_s=(900.0, 300.0))


def test_early_window_of_a_dynamic_pet_reaches_the_channel(tmp_path):
    # a sphere whose uptake peaks early (SUV 6 at 5-15 min) and washes out (SUV 2 at the end)
    rows = sphere_patient(tmp_path, "P4", 9.0, 3.0)
    ct = sitk.ReadImage(rows[0]["path"])
    inside = sitk.GetArrayFromImage(sitk.ReadImage(rows[0]["mask_path"])) > 0
    frames = []
    for suv in (1.0, 6.0, 6.0, 2.0):
        frame = sitk.GetImageFromArray(np.where(inside, suv, 0.5).astype(np.float32))
        frame.CopyInformation(ct)
        frames.append(frame)
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "dpet.nii.gz"))
    table = pd.DataFrame(rows + [dict(patient_id="P4", modality="DPET", path=str(tmp_path / "dpet.nii.gz"), mask_path="",
                                      mask_labels="", roi="gtv", frame_times="0;300;600;900", units="SUV")])
    for window, suv in ((None, 2.0), ((300.0, 900.0), 6.0)):
        config = PreprocessConfig(modalities=("CT", "DPET"), size=16, spacing_mm=3.0, dynamic_window_s=window)
        vol = preprocess_patient(table, "P4", config)
        core = vol.mask[0] > 0
        assert float(vol.image[1][core].median()) == pytest.approx(suv / config.suv_max, rel=0.05)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
