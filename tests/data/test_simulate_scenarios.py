"""Each imaging scenario written small: files read back equal, and the images carry the signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import SCENARIOS, simulate
from bayesrad.data.simulate._core import SCENARIO_REGISTRY


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cache = {}

    def get(scenario, n=10, **kwargs):
        if scenario not in cache:
            out = tmp_path_factory.mktemp(scenario)
            cache[scenario] = (simulate(scenario, n_patients=n, seed=21, out=out, image_size=32, **kwargs), out)
        return cache[scenario]

    return get


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_writes_a_cohort_that_reads_back_equal(written, scenario):
    sim, out = written(scenario)
    back = Cohort.from_directory(out)
    assert back == sim.cohort
    assert (out / "truth" / "parameters.json").exists() and (out / "truth" / "latents.csv").exists()
    latents = pd.read_csv(out / "truth" / "latents.csv", index_col=0)
    np.testing.assert_allclose(latents.to_numpy(), sim.truth.latents.to_numpy())
    modalities = SCENARIO_REGISTRY[scenario].modalities
    for group in modalities.values():
        for block in group.blocks:
            for image_modality in group.images:
                with_image = set(back.images.loc[back.images.modality == image_modality, "patient_id"])
                assert with_image == set(back.blocks[block].index), (block, image_modality)
    if scenario != "incomplete_multimodal":
        assert len(back.images) > 0


def test_missing_modality_removes_its_images(tmp_path):
    sim = simulate("radiotherapy", n_patients=10, seed=4, out=tmp_path, image_size=32,
                   missing={"imaging": 0.5, "dosimetry": 0.0, "genes": 0.0})
    imaged = set(sim.cohort.blocks["radiomics"].index)
    images = sim.cohort.images
    assert 0 < len(imaged) < 10
    assert set(images.loc[images.modality == "CT", "patient_id"]) == imaged
    assert set(images.loc[images.modality == "PET", "patient_id"]) == imaged
    assert set(images.loc[images.modality == "DOSE", "patient_id"]) == set(sim.cohort.patient_ids)
    absent = sorted(set(sim.cohort.patient_ids) - imaged)[0]
    assert not (tmp_path / "images" / absent / "ct.nii.gz").exists()


def test_glioma_aggressive_subregion_has_early_peak_and_washout(written):
    sim, _ = written("glioma_pet")
    images = sim.cohort.images
    dynamic = images[images.modality == "DPET"].set_index("patient_id")
    starts = np.array([float(t) for t in dynamic["frame_times"].iloc[0].split(";")])
    fractions = []
    for pid, path in sim.truth.aggressive_masks.items():
        frames = _array(dynamic.loc[pid, "path"])
        assert frames.shape == (len(starts), 32, 32, 32)
        lesion = _array(dynamic.loc[pid, "mask_path"]) > 0
        aggressive = _array(path) > 0
        assert aggressive.any() and not (aggressive & ~lesion).any()
        fractions.append(aggressive.sum() / lesion.sum())
        tac_aggressive = frames[:, aggressive].mean(axis=1)
        assert starts[tac_aggressive.argmax()] <= 900  # peaks within 15 min
        assert tac_aggressive[-1] < tac_aggressive.max()
        rest = lesion & ~aggressive
        if rest.sum() >= 5:
            tac_rest = frames[:, rest].mean(axis=1)
            assert tac_rest[-1] >= tac_rest[len(starts) // 2]  # treatment-related change keeps rising
    assert np.corrcoef(fractions, sim.truth.latents["aggressive_fraction"])[0, 1] > 0.9


def test_liver_enhancement_pattern_follows_the_class(written):
    sim, _ = written("liver_multiphase", n=16)
    images = sim.cohort.images
    classes = sim.cohort.blocks["outcome"]["tumour_class"].astype(str)
    washout = {}
    for pid in sim.cohort.patient_ids:
        rows = images[images.patient_id == pid].set_index("modality")
        labels = _array(rows.loc["CT_arterial", "mask_path"])
        lesion, liver = labels == 2, labels == 1
        arterial, delayed = _array(rows.loc["CT_arterial", "path"]), _array(rows.loc["CT_delayed", "path"])
        # Arterial-to-delayed contrast of the lesion relative to the liver: HCC positive (washout), iCCA negative.
        washout[pid] = (arterial[lesion].mean() - arterial[liver].mean()) - (delayed[lesion].mean() - delayed[liver].mean())
    washout = pd.Series(washout)
    hcc, icca = washout[classes == "HCC"], washout[classes == "iCCA"]
    assert len(hcc) and len(icca)
    assert hcc.mean() > 20 and icca.mean() < 0
    truth = sim.truth.latents
    expected = (truth["lesion_hu_arterial"] - 70.0) - (truth["lesion_hu_delayed"] - 90.0)
    assert np.corrcoef(washout, expected.loc[washout.index])[0, 1] > 0.9
    probs = sim.truth.outcome_probability
    assert list(probs.columns) == ["tumour_class[HCC]", "tumour_class[iCCA]", "tumour_class[mixed]"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_wholebody_organ_uptake_matches_block_and_carries_the_scanner_factor(written):
    sim, _ = written("wholebody_petct")
    images = sim.cohort.images
    organ_suv = sim.cohort.blocks["organ_suv"]
    labels = sim.truth.parameters["organ_labels"]
    for row in images[images.roi == "organs"].itertuples():
        pet, organs = _array(row.path), _array(row.mask_path)
        for organ in ("liver", "brain", "spleen"):
            measured = np.median(pet[organs == labels[organ]])
            assert measured == pytest.approx(np.exp(organ_suv.loc[row.patient_id, f"{organ}_log_suvmean"]), rel=0.05)
    lesions = sim.truth.lesions
    assert set(lesions["patient_id"]) == set(sim.cohort.patient_ids)
    n_lesions = lesions.groupby("patient_id").size()
    np.testing.assert_array_equal(n_lesions.loc[sim.cohort.patient_ids],
                                  1 + sim.cohort.blocks["clinical"].loc[sim.cohort.patient_ids, "n_metastases"])
    # Every measured organ node is the biological value times the centre's scanner factor:
    # the random intercepts implied by the organ network reproduce one shared log factor.
    params = sim.truth.parameters
    scanner = params["scanner_log_factor"]
    liver_effect = params["group_effects"][("centre", "liver_log_suvmean")]
    spleen_effect = params["group_effects"][("centre", "spleen_log_suvmean")]
    slope = params["coef"][("liver_log_suvmean", "spleen_log_suvmean")]
    for centre, shift in scanner.items():
        assert liver_effect[centre] == pytest.approx(shift)
        assert spleen_effect[centre] + slope * liver_effect[centre] == pytest.approx(shift)
    assert params["protected"] == ["blood_glucose_mmol_l"]


def test_wholebody_centre_effect_is_visible_and_glucose_effect_is_biological():
    sim = simulate("wholebody_petct", n_patients=3000, seed=9, missing=0.0)
    frame = pd.concat([sim.cohort.blocks["clinical"], sim.cohort.blocks["organ_suv"]], axis=1)
    scanner = pd.Series(sim.truth.parameters["scanner_log_factor"])
    centre_mean = frame.groupby("centre", observed=True)["liver_log_suvmean"].mean()
    # Centre means of liver uptake follow the scanner factors (plus a small glucose confounding).
    assert np.corrcoef(centre_mean.loc[scanner.index], scanner)[0, 1] > 0.8
    from sklearn.linear_model import LinearRegression

    x = pd.get_dummies(frame["centre"]).astype(float).iloc[:, 1:]
    x["blood_glucose_mmol_l"] = frame["blood_glucose_mmol_l"]
    x["age_years"] = frame["age_years"]
    fit = LinearRegression().fit(x, frame["brain_log_suvmean"])
    assert fit.coef_[-2] == pytest.approx(
        sim.truth.parameters["coef"][("blood_glucose_mmol_l", "brain_log_suvmean")], abs=0.01)


def test_glioma_missing_mr_blanks_the_mr_features_and_drops_the_mr_image(tmp_path):
    sim = simulate("glioma_pet", n_patients=12, seed=2, out=tmp_path, image_size=16,
                   missing={"mr": 0.5, "pet": 0.0})
    radiomics, images = sim.cohort.blocks["radiomics"], sim.cohort.images
    mr_columns = [c for c in radiomics.columns if c.startswith("mr_")]
    without_mr = radiomics[mr_columns].isna().all(axis=1)
    assert 0 < without_mr.sum() < 12
    assert not radiomics.drop(columns=mr_columns).isna().any().any()
    with_mr_image = set(images.loc[images.modality == "MR_T1C", "patient_id"])
    assert with_mr_image == set(radiomics.index[~without_mr])
    assert set(images.loc[images.modality == "DPET", "patient_id"]) == set(sim.cohort.patient_ids)


def test_same_seed_renders_identical_images(tmp_path):
    first = simulate("wholebody_petct", n_patients=3, seed=5, out=tmp_path / "a", image_size=16)
    second = simulate("wholebody_petct", n_patients=3, seed=5, out=tmp_path / "b", image_size=16)
    for a, b in zip(first.cohort.images.itertuples(), second.cohort.images.itertuples()):
        np.testing.assert_array_equal(_array(a.path), _array(b.path))
        np.testing.assert_array_equal(_array(a.mask_path), _array(b.mask_path))
    pd.testing.assert_frame_equal(first.truth.lesions, second.truth.lesions)


def test_glioma_centres_shift_the_reference_uptake_as_specified():
    from bayesrad.data.simulate.glioma_pet import BACKGROUND_LOG_SD, CENTRES, SCANNER_LOG_FACTOR

    sim = simulate("glioma_pet", n_patients=800, seed=5)
    centre = sim.cohort.blocks["clinical"]["centre"].astype(str)
    background = sim.cohort.blocks["pet_reference"]["pet_background_log_suv"]
    assert set(centre) == set(CENTRES)
    assert sim.truth.centre_effects == {"pet_background_log_suv": SCANNER_LOG_FACTOR}
    assert sim.truth.graph.has_edge("centre", "pet_background_log_suv")
    for level, values in background.groupby(centre):
        # each centre's mean sits on its calibration, within 4 standard errors
        assert abs(values.mean() - SCANNER_LOG_FACTOR[level]) < 4 * BACKGROUND_LOG_SD / np.sqrt(len(values)), level
    np.testing.assert_allclose(sim.truth.latents["scanner_factor"],
                               np.exp(centre.map(SCANNER_LOG_FACTOR).to_numpy(float)))


def test_glioma_pet_images_carry_the_scanner_factor(written):
    import json

    from bayesrad.data.simulate._render import Grid

    sim, out = written("glioma_pet")
    saved = json.loads((out / "truth" / "centre_effects.json").read_text())
    assert saved == sim.truth.centre_effects
    grid = Grid(32, SCENARIO_REGISTRY["glioma_pet"].field_of_view_mm)
    inner_brain = ((grid.x / 45.0) ** 2 + (grid.y / 60.0) ** 2 + (grid.z / 40.0) ** 2) <= 1.0
    images = sim.cohort.images
    static = images[images.modality == "PET"].set_index("patient_id")
    factor = sim.truth.latents["scanner_factor"]
    background = {}
    for pid, row in static.iterrows():
        lesion = _array(row["mask_path"]) != 0
        background[pid] = np.median(_array(row["path"])[inner_brain & ~lesion])
    background = pd.Series(background)
    # normal brain reads the scanner's factor times the same late uptake (~0.97 SUV) in every
    # patient: divided by the factor it agrees across patients, undivided it does not
    calibrated = background / factor[background.index]
    assert calibrated.max() / calibrated.min() < 1.08
    assert factor[background.index].max() / factor[background.index].min() > 1.15
    assert background.max() / background.min() > 1.12
