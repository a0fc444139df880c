"""Dosimetry on analytic dose distributions whose DVH is known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bayesrad.errors import FeatureError, ImageError, ImageGeometryError
from bayesrad.features.dosimetry import (
    dose_features,
    dose_volume_histogram,
    dvh_metrics,
    eqd2,
    extract_dosimetry,
    geud,
    patient_dose_features,
)


def _gradient_doses(n_slices: int, max_dose_gy: float) -> np.ndarray:
    """Dose rising linearly along x across a cube: slice i holds (i + 0.5) * step Gy."""
    step = max_dose_gy / n_slices
    return (np.arange(n_slices) + 0.5) * step


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_uniform_dose_has_a_step_dvh_and_every_metric_equal_to_the_dose():
    dose = np.full((8, 8, 8), 30.0)
    features = dose_features(
        dose,
        {"ptv": np.ones_like(dose, bool)},
        spacing_mm=(2.0, 2.0, 2.0),
        v_levels_gy=(5, 20, 30, 30.5),
        geud_a=-10,
        alpha_beta_gy=3.0,
        n_fractions=10,
    )
    for name in ("mean_gy", "max_gy", "min_gy", "d2_gy", "d50_gy", "d95_gy", "d98_gy", "geud_gy"):
        assert features[f"dose_ptv_{name}"] == pytest.approx(30.0)
    assert features["dose_ptv_v5_pct"] == 100.0
    assert features["dose_ptv_v30_pct"] == 100.0
    assert features["dose_ptv_v30p5_pct"] == 0.0
    assert features["dose_ptv_volume_cc"] == pytest.approx(512 * 8 / 1000)
    # 10 x 3 Gy with alpha/beta 3 Gy: EQD2 = 30 (3 + 3) / (2 + 3) = 36 Gy.
    assert features["dose_ptv_eqd2_mean_gy"] == pytest.approx(36.0)
    assert features["dose_ptv_eqd2_geud_gy"] == pytest.approx(36.0)


def test_linear_gradient_dvh_metrics_are_exact_on_voxels():
    n_slices, max_dose = 100, 60.0
    slice_doses = _gradient_doses(n_slices, max_dose)
    dose = np.broadcast_to(slice_doses[None, None, :], (3, 4, n_slices)).copy()  # (z, y, x): gradient along x
    features = dose_features(dose, {"cube": np.ones(dose.shape, bool)}, v_levels_gy=(20,), geud_a=2)
    step = max_dose / n_slices
    # The hottest x % of the cube are the top x slices; D_x is the coolest of them.
    assert features["dose_cube_d95_gy"] == pytest.approx(5.5 * step)
    assert features["dose_cube_d50_gy"] == pytest.approx(50.5 * step)
    assert features["dose_cube_d2_gy"] == pytest.approx(98.5 * step)
    assert features["dose_cube_d98_gy"] == pytest.approx(2.5 * step)
    assert features["dose_cube_mean_gy"] == pytest.approx(max_dose / 2)
    assert features["dose_cube_min_gy"] == pytest.approx(0.5 * step)
    assert features["dose_cube_max_gy"] == pytest.approx(99.5 * step)
    # Slices with dose >= 20 Gy: (i + 0.5) * 0.6 >= 20  <=>  i >= 33, i.e. 67 of 100.
    assert features["dose_cube_v20_pct"] == pytest.approx(67.0)
    # gEUD with a = 2 is the root mean square dose: step^2 * mean((i + 0.5)^2) = step^2 (N^2 - 1/4) / 3.
    assert features["dose_cube_geud_gy"] == pytest.approx(step * np.sqrt((n_slices**2 - 0.25) / 3))


def test_fine_gradient_converges_to_the_continuous_dvh():
    """Dose uniform on [0, Dmax] by volume: V(d) = 1 - d / Dmax and D_x = Dmax (1 - x / 100)."""
    max_dose = 70.0
    doses = _gradient_doses(2000, max_dose)
    metrics = dvh_metrics(doses, d_levels_pct=(2, 50, 95), v_levels_gy=(10, 35))
    tolerance = max_dose / 2000
    for x in (2, 50, 95):
        assert abs(metrics[f"d{x}_gy"] - max_dose * (1 - x / 100)) <= tolerance
    for d in (10, 35):
        assert metrics[f"v{d}_pct"] == pytest.approx(100 * (1 - d / max_dose), abs=0.05)
    dvh = dose_volume_histogram(doses, voxel_volume_cc=0.001, bin_width_gy=0.5)
    inside = dvh["dose_gy"] <= max_dose
    expected = 100 * (1 - dvh.loc[inside, "dose_gy"] / max_dose)
    assert np.max(np.abs(dvh.loc[inside, "volume_pct"] - expected)) <= 0.05 + 1e-9
    assert dvh["volume_pct"].is_monotonic_decreasing
    assert dvh["volume_cc"].iloc[0] == pytest.approx(2.0)


def test_eqd2_and_geud_reference_values():
    # 2 Gy per fraction is its own EQD2, whatever alpha/beta.
    assert eqd2(60.0, 10.0, 30) == pytest.approx(60.0)
    # 5 x 8 Gy, alpha/beta 10: 40 (8 + 10) / 12 = 60 Gy.
    assert eqd2(40.0, 10.0, 5) == pytest.approx(60.0)
    doses = np.array([10.0, 20.0, 30.0, 40.0])
    assert geud(doses, 1) == pytest.approx(25.0)
    assert geud(doses, 200) == pytest.approx(40.0, rel=0.01)  # large a tends to the maximum
    assert geud(doses, -200) == pytest.approx(10.0, rel=0.01)  # very negative a tends to the minimum
    assert geud(np.array([0.0, 50.0]), -5) == 0.0
    with pytest.raises(FeatureError, match="nonzero"):
        geud(doses, 0)


def test_mask_on_a_finer_grid_is_resampled_onto_the_dose_grid_with_nearest_neighbour():
    # Dose grid: 20^3 voxels of 2 mm, centres at 0, 2, ..., 38 mm; dose = x index (Gy).
    dose_array = np.broadcast_to(np.arange(20, dtype=float)[None, None, :], (20, 20, 20)).copy()
    dose = _image(dose_array, spacing=(2.0, 2.0, 2.0))
    # Mask: 1 mm voxels; a cube over mask voxels 10..29 covers dose voxels 5..14 on each axis.
    # The -0.25 mm origin keeps dose-voxel centres off mask-voxel boundaries (no ties).
    mask_array = np.zeros((40, 40, 40), np.uint8)
    mask_array[10:30, 10:30, 10:30] = 1
    mask = _image(mask_array, spacing=(1.0, 1.0, 1.0), origin=(-0.25, -0.25, -0.25))
    features = dose_features(dose, {"GTV": mask}, patient_id="p1")
    assert features["dose_gtv_volume_cc"] == pytest.approx(10**3 * 8 / 1000)
    assert features["dose_gtv_mean_gy"] == pytest.approx(9.5)
    assert features["dose_gtv_min_gy"] == 5.0 and features["dose_gtv_max_gy"] == 14.0
    # A structure reaching beyond the dose grid would get a truncated DVH: refused.
    mask.SetOrigin((20.75, -0.25, -0.25))  # the cube now spans x = 30.75..50.75 mm; the grid ends at 39 mm
    with pytest.raises(ImageGeometryError, match="'p1'.*'GTV'.*% of the structure lies outside"):
        dose_features(dose, {"GTV": mask}, patient_id="p1")


def test_bad_inputs_name_the_patient_and_structure():
    dose = np.full((4, 4, 4), 10.0)
    with pytest.raises(ImageError, match="'p7'.*'lung'.*no voxel"):
        dose_features(dose, {"lung": np.zeros(dose.shape, bool)}, patient_id="p7")
    nan_dose = dose.copy()
    nan_dose[0, 0, 0] = np.nan
    with pytest.raises(ImageError, match="'p7'.*NaN"):
        dose_features(nan_dose, {"lung": np.ones(dose.shape, bool)}, patient_id="p7")
    with pytest.raises(ImageError, match="negative"):
        dose_features(-dose, {"lung": np.ones(dose.shape, bool)}, patient_id="p7")
    with pytest.raises(ImageGeometryError, match="'heart'"):
        dose_features(dose, {"heart": np.ones((4, 4, 5), bool)}, patient_id="p7")
    with pytest.raises(FeatureError, match="n_fractions"):
        dose_features(dose, {"lung": np.ones(dose.shape, bool)}, alpha_beta_gy=3.0)
    with pytest.raises(FeatureError, match="'heart'.*default"):
        dose_features(dose, {"heart": np.ones(dose.shape, bool)}, geud_a={"lung": 1.0})


def test_cohort_dosimetry_from_files(tmp_path):
    images = []
    for index, dose_gy in enumerate((20.0, 50.0)):
        dose_array = np.full((6, 6, 6), dose_gy)
        dose_array[:, :, 3:] = dose_gy / 2  # the second label (x >= 3) gets half the dose
        labels = np.zeros((6, 6, 6), np.uint8)
        labels[:, :, :3] = 1
        labels[:, :, 3:] = 2
        dose_path, mask_path = tmp_path / f"dose{index}.nii.gz", tmp_path / f"rois{index}.nii.gz"
        sitk.WriteImage(_image(dose_array), str(dose_path))
        sitk.WriteImage(_image(labels), str(mask_path))
        images.append(
            dict(patient_id=f"p{index}", modality="DOSE", path=str(dose_path), mask_path=str(mask_path),
                 mask_labels="1;2", roi="gtv;parotid", frame_times="", units="Gy")
        )

    class _Cohort:  # the images table is all extract_dosimetry reads from a Cohort
        pass

    cohort = _Cohort()
    cohort.images = pd.DataFrame(images)
    table = extract_dosimetry(cohort, alpha_beta_gy={"gtv": 10.0, "parotid": 3.0}, n_fractions=10)
    assert list(table.index) == ["p0", "p1"] and table.index.name == "patient_id"
    assert table.loc["p1", "dose_gtv_mean_gy"] == pytest.approx(50.0)
    assert table.loc["p1", "dose_parotid_mean_gy"] == pytest.approx(25.0)
    assert table.loc["p0", "dose_parotid_eqd2_mean_gy"] == pytest.approx(10 * (1 + 3) / 5)
    single = patient_dose_features(cohort.images.iloc[[0]], patient_id="p0")
    assert single["dose_gtv_d95_gy"] == pytest.approx(20.0)


def test_radiotherapy_scenario_dvh_reproduces_the_simulated_dose_metrics(tmp_path):
    from bayesrad.data.simulate import simulate

    simulation = simulate("radiotherapy", n_patients=6, seed=3, out=tmp_path, image_size=32)
    table = extract_dosimetry(simulation.cohort, alpha_beta_gy=10.0, n_fractions=30, geud_a=-10)
    truth = simulation.cohort.blocks["dosimetry"].loc[table.index]
    assert len(table) >= 4
    # The simulator scales the dose inside the tumour so its voxel mean is dose_mean_gy exactly
    # (written as float32: 1e-5 relative).
    np.testing.assert_allclose(table["dose_gtv_mean_gy"], truth["dose_mean_gy"], rtol=1e-5)
    # Its d95_gy is numpy's interpolated 5th percentile, ours the voxel value (no interpolation):
    # they differ by less than the step between neighbouring voxel doses.
    np.testing.assert_allclose(table["dose_gtv_d95_gy"], truth["d95_gy"], atol=0.5)
    assert (table["dose_gtv_d98_gy"] <= table["dose_gtv_d95_gy"]).all()
    assert (table["dose_gtv_d2_gy"] >= table["dose_gtv_d50_gy"]).all()
    # a cold edge (D95 < mean) makes the target gEUD with a = -10 fall below the mean
    assert (table["dose_gtv_geud_gy"] < table["dose_gtv_mean_gy"]).all()
    # EQD2 rises monotonically with dose (so the maximum maps to the maximum) and is convex
    # (so the mean of voxel EQD2 is at least the EQD2 of the mean dose, Jensen).
    np.testing.assert_allclose(table["dose_gtv_eqd2_max_gy"], eqd2(table["dose_gtv_max_gy"], 10.0, 30), rtol=1e-12)
    assert (table["dose_gtv_eqd2_mean_gy"] >= eqd2(table["dose_gtv_mean_gy"], 10.0, 30) - 1e-9).all()
