"""Dynamic PET kinetics: exact TAC descriptors and habitats recovering a known subregion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from bayesrad.errors import FeatureError, ImageError, NotFittedError
from bayesrad.features.kinetics import (
    KineticHabitats,
    extract_kinetics,
    frame_mid_times,
    habitat_features,
    kinetic_maps,
    patient_kinetics,
    roi_kinetics,
    save_habitat_map,
    tac_features,
    voxel_curves,
)

FRAME_TIMES_S = np.array([60, 180, 300, 420, 540, 720, 900, 1200, 1500, 1800, 2100, 2400], dtype=float)


def _washout(t):  # early peak (~10 min) then washout: FET type III, aggressive
    return 4.0 * (1 - np.exp(-t / 200.0)) * np.exp(-t / 3000.0)


def _accumulating(t):  # keeps rising: FET type I
    return 3.0 * (1 - np.exp(-t / 1500.0))


def _background(t):
    return 1.0 * (1 - np.exp(-t / 600.0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _phantom(seed: int, aggressive_radius: float = 4.5, size: int = 28):
    """4D PET (t, z, y, x) of a tumour sphere (radius 9 voxels) holding an off-centre
    aggressive sphere; blurred per frame (PSF) and 8 % multiplicative noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size]
    centre = (size - 1) / 2
    tumour = (z - centre) ** 2 + (y - centre) ** 2 + (x - centre) ** 2 <= 9**2
    aggressive = (z - centre) ** 2 + (y - centre) ** 2 + (x - centre - 3) ** 2 <= aggressive_radius**2
    frames = []
    for t in FRAME_TIMES_S:
        frame = np.where(aggressive, _washout(t), np.where(tumour, _accumulating(t), _background(t)))
        frame = gaussian_filter(frame, sigma=0.7)
        frames.append(frame * (1 + 0.08 * rng.standard_normal(frame.shape)))
    return np.stack(frames), tumour, aggressive & tumour


def _as_4d_image(series: np.ndarray, spacing_mm=2.0) -> sitk.Image:
    frames = []
    for frame in series:
        image = sitk.GetImageFromArray(frame.astype(np.float32))
        image.SetSpacing((spacing_mm,) * 3)
        image.SetOrigin((-10.0, 5.0, 20.0))
        frames.append(image)
    return sitk.JoinSeries(frames, float(FRAME_TIMES_S[0]), 120.0)


def test_tac_descriptors_are_exact_on_analytic_curves():
    times = np.arange(0, 3601, 300.0)  # 13 frames, 0..60 min
    linear = 1.0 + times / 600.0  # +6 SUV per hour
    features = tac_features(linear, times, suv_windows_s={"20-40 min": (1200, 2400)})
    assert features["early_slope_suv_per_h"] == pytest.approx(6.0)
    assert features["late_slope_suv_per_h"] == pytest.approx(6.0)
    assert features["time_to_peak_s"] == 3600
    assert features["peak_suv"] == pytest.approx(7.0)
    assert features["auc_suv_min"] == pytest.approx((1.0 * 3600 + 3600**2 / 1200) / 60)  # trapezoid exact on a line
    assert features["suv_20_40_min"] == pytest.approx(1.0 + 1800 / 600)  # time average = value at mid window

    peaked = np.stack([_washout(times), _accumulating(times)])  # two curves at once
    vectorised = tac_features(peaked, times)
    # The washout curve peaks at 200 ln(1 + 3000 / 200) = 554 s: frame 600 s on this grid.
    assert vectorised["time_to_peak_s"][0] == 600 and vectorised["time_to_peak_s"][1] == 3600
    assert vectorised["late_slope_suv_per_h"][0] < 0 < vectorised["late_slope_suv_per_h"][1]
    assert vectorised["suv_early"].shape == (2,)
    with pytest.raises(FeatureError, match="late window.*widen"):
        tac_features(linear, times, late_window_s=(3500, 3700))


def test_habitats_recover_the_aggressive_subregion():
    series, tumour, aggressive = _phantom(seed=0)
    curves = voxel_curves(series, tumour)
    habitats = KineticHabitats(random_state=0).fit(curves, FRAME_TIMES_S)
    assert habitats.n_habitats_ == 2  # chosen by silhouette over 2..5
    features, labels = habitat_features(series, tumour, FRAME_TIMES_S, habitats, roi="tumour")
    # Habitat 1 is the most washing-out one: the aggressive subregion.
    assert dice(labels == 1, aggressive) > 0.8
    assert features["dpet_tumour_habitat1_fraction"] == pytest.approx(aggressive.sum() / tumour.sum(), abs=0.05)
    assert features["dpet_tumour_habitat1_late_slope_suv_per_h"] < 0 < features["dpet_tumour_habitat2_late_slope_suv_per_h"]
    assert features["dpet_tumour_habitat1_time_to_peak_s"] < features["dpet_tumour_habitat2_time_to_peak_s"]
    assert np.all(labels[~tumour] == 0)

    # A Gaussian mixture with k by BIC also splits the accumulating tissue (core / partial-
    # volume border), but its habitat 1 is still the aggressive subregion.
    mixture = KineticHabitats(method="gmm", criterion="bic").fit(curves, FRAME_TIMES_S)
    assert 2 <= mixture.n_habitats_ <= 5
    assert dice(mixture.predict(curves) == 1, aggressive[tumour]) > 0.8


def test_roi_kinetics_and_habitat_map_on_images(tmp_path):
    series, tumour, aggressive = _phantom(seed=1)
    pet = _as_4d_image(series)
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    mask.SetSpacing((2.0,) * 3)
    mask.SetOrigin((-10.0, 5.0, 20.0))
    features = roi_kinetics(pet, mask, FRAME_TIMES_S, roi="tumour")
    assert features["dpet_tumour_volume_ml"] == pytest.approx(tumour.sum() * 8 / 1000)
    mean_curve = series[:, tumour].mean(axis=1)
    assert features["dpet_tumour_peak_suv"] == pytest.approx(mean_curve.max(), rel=1e-5)

    habitats = KineticHabitats(n_habitats=2).fit(voxel_curves(pet, mask), FRAME_TIMES_S)
    _, labels = habitat_features(pet, mask, FRAME_TIMES_S, habitats)
    path = save_habitat_map(labels, pet, tmp_path / "maps" / "p0_habitats.nii.gz")
    saved = sitk.ReadImage(path)
    assert saved.GetSize() == pet.GetSize()[:3]
    assert np.allclose(saved.GetSpacing(), pet.GetSpacing()[:3]) and np.allclose(saved.GetOrigin(), pet.GetOrigin()[:3])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), labels)

    maps = kinetic_maps(pet, mask, FRAME_TIMES_S)
    assert np.isnan(maps["time_to_peak_s"][~tumour]).all()
    # voxel-wise: the aggressive (washout) voxels peak earlier than the accumulating ones
    assert np.median(maps["time_to_peak_s"][aggressive]) < np.median(maps["time_to_peak_s"][tumour & ~aggressive])
    assert np.median(maps["late_slope_suv_per_h"][aggressive]) < 0

    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ImageError, match="'p9'.*origin"):
        voxel_curves(pet, shifted, patient_id="p9")
    with pytest.raises(ImageError, match="'p9'.*empty"):
        voxel_curves(series, np.zeros_like(tumour), patient_id="p9")
    with pytest.raises(NotFittedError):
        KineticHabitats().predict(voxel_curves(series, tumour))


def test_cohort_kinetics_pools_habitats_across_patients(tmp_path):
    images, truth_fraction = [], {}
    for index, radius in enumerate((3.5, 4.5, 5.5)):
        series, tumour, aggressive = _phantom(seed=10 + index, aggressive_radius=radius)
        pet_path, mask_path = tmp_path / f"dpet{index}.nii.gz", tmp_path / f"mask{index}.nii.gz"
        sitk.WriteImage(_as_4d_image(series), str(pet_path))
        mask = sitk.GetImageFromArray(tumour.astype(np.uint8) * 2)  # the tumour is label 2
        mask.SetSpacing((2.0,) * 3)
        mask.SetOrigin((-10.0, 5.0, 20.0))
        sitk.WriteImage(mask, str(mask_path))
        images.append(dict(patient_id=f"p{index}", modality="DPET", path=str(pet_path), mask_path=str(mask_path),
                           mask_labels="2", roi="tumour", frame_times=";".join(f"{t:g}" for t in FRAME_TIMES_S),
                           units="SUV"))
        truth_fraction[f"p{index}"] = aggressive.sum() / tumour.sum()

    class _Cohort:  # extract_kinetics reads only the images table of a Cohort
        pass

    cohort = _Cohort()
    cohort.images = pd.DataFrame(images)
    table = extract_kinetics(cohort, habitat_dir=tmp_path / "habitats")
    assert list(table.index) == ["p0", "p1", "p2"]
    assert table.attrs["habitats"].n_habitats_ == 2
    for patient, fraction in truth_fraction.items():
        assert table.loc[patient, "dpet_tumour_habitat1_fraction"] == pytest.approx(fraction, abs=0.05)
        assert (tmp_path / "habitats" / f"{patient}_habitats.nii.gz").exists()
    # the aggressive fraction raises the ROI's washout: its late slope falls with the radius
    assert table["dpet_tumour_late_slope_suv_per_h"].is_monotonic_decreasing

    cohort.images.loc[1, "frame_times"] = "60;180"
    with pytest.raises(FeatureError, match="frame"):
        extract_kinetics(cohort)


def test_glioma_scenario_habitat_matches_the_true_aggressive_subregion(tmp_path):
    from bayesrad.data.simulate import simulate

    simulation = simulate("glioma_pet", n_patients=8, seed=1, out=tmp_path / "cohort", image_size=32)
    table = extract_kinetics(simulation.cohort, habitat_dir=tmp_path / "habitats")
    assert table.attrs["habitats"].n_habitats_ == 2  # aggressive washout vs slowly rising change
    truth_paths = simulation.truth.truth_images.set_index("patient_id")["path"]
    dices = []
    for patient in table.index:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "habitats" / f"{patient}_habitats.nii.gz")))
        aggressive = sitk.GetArrayFromImage(sitk.ReadImage(truth_paths[patient])) > 0
        dices.append(dice(labels == 1, aggressive))
    assert min(dices) > 0.85
    true_fraction = simulation.truth.latents.loc[table.index, "aggressive_fraction"]
    assert np.corrcoef(table["dpet_lesion_habitat1_fraction"], true_fraction)[0, 1] > 0.9
    # the aggressive habitat peaks earlier and washes out
    assert (table["dpet_lesion_habitat1_time_to_peak_s"] < table["dpet_lesion_habitat2_time_to_peak_s"]).all()
    assert (table["dpet_lesion_habitat1_late_slope_suv_per_h"] < 0).all()


def test_patient_kinetics_for_the_cohort_runner(tmp_path):
    series, tumour, aggressive = _phantom(seed=5)
    pet_path, mask_path = tmp_path / "dpet.nii.gz", tmp_path / "mask.nii.gz"
    sitk.WriteImage(_as_4d_image(series), str(pet_path))
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    mask.SetSpacing((2.0,) * 3)
    mask.SetOrigin((-10.0, 5.0, 20.0))
    sitk.WriteImage(mask, str(mask_path))
    starts = ";".join(f"{t:g}" for t in FRAME_TIMES_S)
    rows = pd.DataFrame([dict(patient_id="p1", modality="DPET", path=str(pet_path), mask_path=str(mask_path),
                              mask_labels="1", roi="tumour", frame_times=starts, units="SUV")])
    habitats = KineticHabitats().fit(voxel_curves(series, tumour), FRAME_TIMES_S)
    features = patient_kinetics(rows, "p1", habitats=habitats, habitat_path=tmp_path / "p1_habitats.nii.gz")
    assert features["dpet_tumour_habitat1_fraction"] == pytest.approx(aggressive.sum() / tumour.sum(), abs=0.05)
    saved = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p1_habitats.nii.gz")))
    assert dice(saved == 1, aggressive) > 0.8
    # frame_times are start times: the last frame is taken to last as long as the one before
    np.testing.assert_allclose(frame_mid_times(starts)[-2:], [2250.0, 2550.0])  # starts 2100, 2400 (+300)
    with pytest.raises(FeatureError, match="'p1'.*12 frames.*lists 3"):
        patient_kinetics(rows.assign(frame_times="0;60;120"), "p1")
    with pytest.raises(FeatureError, match="'p1'.*'Bq/ml', not SUV"):
        patient_kinetics(rows.assign(units="Bq/ml"), "p1")
