"""bayesrad.features.radiomics: settings, per-ROI extraction, bad input, PET helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bayesrad.errors import FeatureError, ImageError, ImageGeometryError
from bayesrad.features import radiomics as rad

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
TOTALSEG = SHARED / "images" / "totalsegmentator"


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


@pytest.fixture(scope="module")
def two_organs():
    """A 20^3 CT-like image with two box ROIs of known intensities (label 1: ~100 HU, label 2: ~300 HU)."""
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 5.0, (20, 20, 20)).astype(np.float32)
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 3:10, 4:12] = 1
    labels[11:18, 10:17, 5:15] = 2
    values[labels == 1] += 100.0
    values[labels == 2] += 300.0
    return _image(values, (0.8, 0.8, 2.0)), _image(labels, (0.8, 0.8, 2.0)), values, labels


def test_presets_are_listed_and_load():
    names = rad.available_presets()
    for name in ("pyradiomics_default", "pet_suv", "mr_normalised", "ibsi_phantom", "ibsi_a", "ibsi_b", "ibsi_c", "ibsi_d", "ibsi_e"):
        assert name in names
        params = rad.load_settings(name)
        assert set(params) >= {"imageType", "setting", "featureClass"}
    assert rad.load_settings("ibsi_d")["setting"]["resegmentMode"] == "sigma"
    assert rad.load_settings("pet_suv")["setting"]["binWidth"] == 0.25


def test_unknown_preset_and_bad_keys_raise():
    with pytest.raises(FeatureError, match="not_a_preset"):
        rad.load_settings("not_a_preset")
    with pytest.raises(FeatureError, match="unknown top-level"):
        rad.load_settings({"settings": {}})
    with pytest.raises(FeatureError, match="Sobel"):
        rad.load_settings("pyradiomics_default", image_filters={"Sobel": {}})


def test_yaml_file_and_settings_hash(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("setting:\n  binWidth: 10\n  label: 1\nimageType:\n  Original: {}\nfeatureClass:\n  firstorder:\n")
    params = rad.load_settings(path)
    assert params["setting"]["binWidth"] == 10
    reordered = {"featureClass": params["featureClass"], "setting": {"label": 1, "binWidth": 10}, "imageType": params["imageType"]}
    assert rad.settings_hash(params) == rad.settings_hash(reordered)
    assert rad.settings_hash(params) != rad.settings_hash(rad.load_settings(path, binWidth=5))
    assert rad.settings_hash(params) != rad.settings_hash(rad.load_settings(path, image_filters={"LoG": {"sigma": [1.0]}}))


def test_multilabel_mask_gives_per_organ_features_matching_numpy(two_organs):
    image, mask, values, labels = two_organs
    table = rad.extract_radiomics(image, mask, "pyradiomics_default", rois="liver;spleen", modality="CT", patient_id="P1")
    assert list(table["roi"]) == ["liver", "spleen"]
    assert table["settings_hash"].nunique() == 1
    for roi, label in (("liver", 1), ("spleen", 2)):
        row = table.set_index("roi").loc[roi]
        inside = values[labels == label].astype(np.float64)
        assert row["original_firstorder_Mean"] == pytest.approx(inside.mean(), rel=1e-6)
        assert row["original_firstorder_Maximum"] == pytest.approx(inside.max(), rel=1e-6)
        # pyradiomics' variance is the population variance (ddof 0)
        assert row["original_firstorder_Variance"] == pytest.approx(inside.var(), rel=1e-5)
        assert row["original_shape_VoxelVolume"] == pytest.approx((labels == label).sum() * 0.8 * 0.8 * 2.0, rel=1e-9)


def test_unnamed_labels_are_named_by_value(two_organs):
    image, mask, *_ = two_organs
    assert rad.roi_labels(mask) == {"label_1": 1, "label_2": 2}
    assert rad.roi_labels(mask, labels="2", rois="spleen") == {"spleen": 2}


def test_image_filters_add_log_and_wavelet_features(two_organs):
    image, mask, *_ = two_organs
    params = {"imageType": {"Original": {}}, "setting": {"binWidth": 25}, "featureClass": {"firstorder": ["Mean"]}}
    features = rad.radiomics_features(image, mask, 1, params, image_filters={"LoG": {"sigma": [1.0, 2.0]}, "Wavelet": {}})
    assert "log-sigma-1-0-mm-3D_firstorder_Mean" in features
    assert "log-sigma-2-0-mm-3D_firstorder_Mean" in features
    assert sum(k.startswith("wavelet-") for k in features) == 8  # the 8 wavelet decompositions in 3D
    # a Laplacian of Gaussian has zero mean response inside a flat plateau, unlike the original image
    assert abs(features["log-sigma-1-0-mm-3D_firstorder_Mean"]) < 0.5 * features["original_firstorder_Mean"]


def test_wide_column_names_are_snake_case():
    columns = rad.wide_columns("PET", "GTV", {"original_glcm_MaximumProbability": 0.5, "original_firstorder_10Percentile": 1.0})
    assert columns == {"pet_gtv_original_glcm_maximum_probability": 0.5, "pet_gtv_original_firstorder_10_percentile": 1.0}
    assert list(rad.wide_columns("MR_T1C", "lesion core", {"log-sigma-1-0-mm-3D_firstorder_Mean": 2.0})) == [
        "mr_t1c_lesion_core_log_sigma_1_0_mm_3d_firstorder_mean"]


def test_bad_roi_input_raises_naming_patient(two_organs):
    image, mask, values, labels = two_organs
    with pytest.raises(ImageError, match="patient 'P7'.*no voxel"):
        rad.radiomics_features(image, mask, 3, patient_id="P7")
    holed = values.copy()
    holed[3, 4, 5] = np.nan
    with pytest.raises(ImageError, match="patient 'P7'.*NaN"):
        rad.radiomics_features(_image(holed, (0.8, 0.8, 2.0)), mask, 1, patient_id="P7")
    shifted = _image(labels, (0.8, 0.8, 2.0))
    shifted.SetOrigin((5.0, 0.0, 0.0))
    with pytest.raises(ImageGeometryError, match="origin"):
        rad.radiomics_features(image, shifted, 1, patient_id="P7")


def test_real_whole_body_ct_per_organ():
    """A real CT with a 41-label organ segmentation: one feature row per requested organ."""
    ct = sitk.ReadImage(str(TOTALSEG / "example_ct_sm.nii.gz"))
    seg = sitk.ReadImage(str(TOTALSEG / "example_seg.nii.gz"))
    present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(seg)) if v != 0]
    counts = {v: int((sitk.GetArrayViewFromImage(seg) == v).sum()) for v in present}
    chosen = sorted(counts, key=counts.get)[-2:]  # the two largest organs
    params = {"imageType": {"Original": {}}, "setting": {"binWidth": 25}, "featureClass": {"firstorder": ["Mean"], "shape": ["VoxelVolume"]}}
    table = rad.extract_radiomics(ct, seg, params, labels=chosen, modality="CT", patient_id="ts")
    ct_values = sitk.GetArrayViewFromImage(ct)
    seg_values = sitk.GetArrayViewFromImage(seg)
    voxel_ml = np.prod(ct.GetSpacing())
    for label, row in zip(chosen, table.itertuples()):
        assert row.roi == f"label_{label}"
        assert row.original_firstorder_Mean == pytest.approx(ct_values[seg_values == label].mean(), rel=1e-5)
        assert row.original_shape_VoxelVolume == pytest.approx(counts[label] * voxel_ml, rel=1e-6)


# ------------------------------------------------------------------------------------ PET

def _pet(background=1.0, lesion=None):
    array = np.full((16, 16, 16), background, np.float32)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    sphere = (zz - 8) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 <= 9
    if lesion is not None:
        array[sphere] = lesion(zz, yy, xx)[sphere]
    return _image(array, (4.0, 4.0, 4.0)), sphere


def test_check_suv_accepts_suv_and_refuses_activity():
    pet, _ = _pet(1.0, lambda z, y, x: np.full(z.shape, 8.0))
    assert rad.check_suv(pet, units="SUV")
    with pytest.raises(ImageError, match="patient 'P2'.*Bq/mL"):
        rad.check_suv(pet, units="Bq/mL", patient_id="P2")
    activity, _ = _pet(5000.0)
    with pytest.raises(ImageError, match="plausible SUV"):
        rad.check_suv(activity)
    with pytest.warns(UserWarning, match="not in SUV"):
        assert rad.check_suv(activity, on_error="warn") is False


def test_fixed_threshold_recovers_the_lesion():
    pet, sphere = _pet(1.0, lambda z, y, x: np.full(z.shape, 6.0))
    lesion = sitk.GetArrayFromImage(rad.delineate_fixed_suv(pet, 2.5))
    assert np.array_equal(lesion.astype(bool), sphere)
    with pytest.raises(ImageError, match="no voxel reaches SUV 10"):
        rad.delineate_fixed_suv(pet, 10.0)


def test_41_percent_of_suvmax_inside_region():
    # lesion SUV falls off linearly from 10 at the centre: the 41 % contour is a smaller sphere
    def profile(z, y, x):
        return 10.0 - 2.0 * np.sqrt((z - 8.0) ** 2 + (y - 8.0) ** 2 + (x - 8.0) ** 2)

    pet, sphere = _pet(0.5, profile)
    region = _image(sphere.astype(np.uint8), (4.0, 4.0, 4.0))
    lesion_image = rad.delineate_suvmax_fraction(pet, region)
    assert lesion_image.GetSpacing() == pet.GetSpacing() and lesion_image.GetOrigin() == pet.GetOrigin()
    lesion = sitk.GetArrayFromImage(lesion_image).astype(bool)
    values = sitk.GetArrayFromImage(pet)
    expected = sphere & (values >= 0.41 * 10.0)
    assert np.array_equal(lesion, expected)
    assert 0 < lesion.sum() < sphere.sum()
    with pytest.raises(FeatureError, match="fraction"):
        rad.delineate_suvmax_fraction(pet, region, fraction=1.5)
