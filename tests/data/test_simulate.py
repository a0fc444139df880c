"""The simulator: determinism, missingness, truth graph, parameter convention, file round trip."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import SCENARIOS, simulate
from bayesrad.errors import BayesradError, CohortError


@pytest.fixture(scope="module")
def rt_written(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    sim = simulate("radiotherapy", n_patients=12, seed=3, out=out, image_size=32,
                   missing={"imaging": 0.0, "dosimetry": 0.0, "genes": 0.3})
    return sim, out


def _blocks_equal(a: Cohort, b: Cohort) -> None:
    assert list(a.blocks) == list(b.blocks)
    for name in a.blocks:
        pd.testing.assert_frame_equal(a.blocks[name], b.blocks[name])


def test_radiotherapy_written_cohort_reads_back_equal(rt_written):
    sim, out = rt_written
    back = Cohort.from_directory(out)
    assert back == sim.cohort
    images = back.images
    assert set(images["modality"]) == {"CT", "PET", "DOSE"}
    assert len(images) == 3 * 12
    assert (out / "genes.h5ad").exists() and (out / "truth" / "graph.yaml").exists()
    ct = sitk.ReadImage(sim.cohort.images.loc[0, "path"])
    assert ct.GetSize() == (32, 32, 32)
    assert ct.GetSpacing() == pytest.approx((4.5, 4.5, 4.5))
    assert ct.GetOrigin() == pytest.approx((-69.75,) * 3)


def test_tabular_data_do_not_depend_on_writing_images(rt_written):
    sim, _ = rt_written
    again = simulate("radiotherapy", n_patients=12, seed=3, missing={"imaging": 0.0, "dosimetry": 0.0, "genes": 0.3})
    _blocks_equal(sim.cohort, again.cohort)
    pd.testing.assert_frame_equal(sim.truth.latents, again.truth.latents)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_seed_same_data_other_seed_other_data(scenario):
    a = simulate(scenario, n_patients=30, seed=11)
    b = simulate(scenario, n_patients=30, seed=11)
    c = simulate(scenario, n_patients=30, seed=12)
    _blocks_equal(a.cohort, b.cohort)
    assert a.truth.parameters["coef"] == b.truth.parameters["coef"]
    assert not a.cohort.blocks["clinical"].equals(c.cohort.blocks["clinical"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_truth_graph_is_acyclic_and_matches_the_blocks(scenario):
    sim = simulate(scenario, n_patients=40, seed=1)
    graph, cohort = sim.truth.graph, sim.cohort
    assert nx.is_directed_acyclic_graph(graph)
    columns_of_nodes = set()
    for node, attrs in graph.nodes(data=True):
        assert attrs["kind"] in {"continuous", "binary", "categorical", "ordinal", "count", "survival", "latent", "group"}
        if attrs["kind"] == "latent":
            assert attrs["columns"], node
            assert set(attrs["columns"]) == set(cohort.schema[attrs["block"]])
            columns_of_nodes |= set(attrs["columns"])
        else:
            assert node in cohort.schema[attrs["block"]], node
            columns_of_nodes.add(node)
            if attrs["kind"] == "survival":
                columns_of_nodes.add(attrs["event"])
    block_columns = {c for cols in cohort.schema.values() for c in cols}
    assert block_columns == columns_of_nodes
    for parent_key, child_key in sim.truth.parameters["coef"]:
        assert graph.has_edge(parent_key.split("[")[0], child_key.split("[")[0])
    # Outcomes are never missing by default and their probabilities are proper.
    assert set(cohort.blocks["outcome"].index) == set(cohort.patient_ids)
    probs = sim.truth.outcome_probability
    assert len(probs.columns) and probs.index.equals(cohort.patient_ids)
    assert ((probs >= 0) & (probs <= 1)).all().all()


def test_mcar_rate_and_mar_dependence():
    n = 3000
    sim = simulate("radiotherapy", n_patients=n, seed=5, missing={
        "genes": 0.3, "imaging": {"rate": 0.4, "mechanism": "MAR", "depends_on": "age_years"},
    })
    cohort = sim.cohort
    assert abs(1 - len(cohort.blocks["genes"]) / n - 0.3) < 0.03
    assert abs(1 - len(cohort.blocks["radiomics"]) / n - 0.4) < 0.03
    assert len(cohort.blocks["dosimetry"]) == n
    age = cohort.blocks["clinical"]["age_years"]
    imaged = age.index.isin(cohort.blocks["radiomics"].index)
    assert age[~imaged].mean() - age[imaged].mean() > 5.0
    genes_present = age.index.isin(cohort.blocks["genes"].index)
    assert abs(age[~genes_present].mean() - age[genes_present].mean()) < 1.5
    params = sim.truth.parameters["missingness"]["imaging"]
    assert params["mechanism"] == "MAR" and params["slope_per_sd"] > 0


def test_mar_on_a_categorical_column_follows_its_level_order():
    sim = simulate("radiotherapy", n_patients=2000, seed=5,
                   missing={"genes": {"rate": 0.3, "mechanism": "MAR", "depends_on": "histology"}})
    clinical = sim.cohort.blocks["clinical"]
    missing = pd.Series(~clinical.index.isin(sim.cohort.blocks["genes"].index), index=clinical.index)
    by_level = missing.groupby(clinical["histology"], observed=True).mean()
    levels = sim.truth.parameters["levels"]["histology"]
    assert by_level.loc[levels[0]] < by_level.loc[levels[1]] < by_level.loc[levels[2]]
    assert missing.mean() == pytest.approx(0.3, abs=0.03)
    assert len(sim.cohort.blocks["radiomics"]) == 2000  # a dict replaces the scenario default


def test_float_missing_applies_to_every_non_clinical_modality():
    sim = simulate("radiotherapy", n_patients=400, seed=2, missing=0.5)
    cohort = sim.cohort
    for block in ("radiomics", "genes", "dosimetry"):
        assert 0.4 < len(cohort.blocks[block]) / 400 < 0.6
    assert len(cohort.blocks["clinical"]) == len(cohort.blocks["outcome"]) == 400


def test_local_control_is_logistic_in_its_parents_with_the_stated_coefficients():
    from sklearn.linear_model import LogisticRegression

    sim = simulate("radiotherapy", n_patients=6000, seed=7, missing=0.0)
    coef = {p: c for (p, child), c in sim.truth.parameters["coef"].items() if child == "local_control"}
    features = pd.concat([sim.cohort.blocks["dosimetry"], sim.truth.latents,
                          pd.get_dummies(sim.cohort.blocks["clinical"]["histology"], prefix="histology",
                                         prefix_sep="[").rename(columns=lambda c: c + "]" if "[" in c else c)], axis=1)
    x = features[list(coef)].astype(float).to_numpy()
    centre, scale = x.mean(axis=0), x.std(axis=0)
    y = sim.cohort.blocks["outcome"]["local_control"].to_numpy()
    fit = LogisticRegression(C=1e6, max_iter=500).fit((x - centre) / scale, y)
    slopes = fit.coef_[0] / scale
    np.testing.assert_allclose(slopes, list(coef.values()), atol=0.12)
    intercept = fit.intercept_[0] - slopes @ centre
    assert intercept == pytest.approx(sim.truth.parameters["intercept"]["local_control"], abs=1.2)


def test_overall_survival_is_weibull_aft_with_the_stated_coefficients():
    from lifelines import WeibullAFTFitter

    sim = simulate("radiotherapy", n_patients=3000, seed=8, missing=0.0)
    params = sim.truth.parameters
    coef = {p: c for (p, child), c in params["coef"].items() if child == "overall_survival"}
    clinical, outcome = sim.cohort.blocks["clinical"], sim.cohort.blocks["outcome"]
    frame = pd.concat([clinical, outcome, sim.truth.latents], axis=1)
    effects = params["group_effects"][("centre", "overall_survival")]
    frame["centre_effect"] = clinical["centre"].astype(str).map(effects)
    data = frame[[*coef, "overall_survival", "overall_survival_event"]].astype(float)
    data["log_offset_centre"] = frame["centre_effect"]
    fit = WeibullAFTFitter().fit(data, "overall_survival", "overall_survival_event")
    estimated = fit.params_.loc["lambda_"]
    for name, value in coef.items():
        assert estimated[name] == pytest.approx(value, abs=0.06), name
    rho = np.exp(fit.params_.loc[("rho_", "Intercept")])
    assert rho == pytest.approx(params["weibull_shape"]["overall_survival"], rel=0.08)
    assert 0.2 < 1 - outcome["overall_survival_event"].mean() < 0.6


def test_dose_grid_dvh_matches_the_dosimetry_block(rt_written):
    sim, _ = rt_written
    images = sim.cohort.images
    dosimetry = sim.cohort.blocks["dosimetry"]
    for row in images[images["modality"] == "DOSE"].itertuples():
        assert (row.roi, row.mask_labels) == ("gtv;lung", "1;2")
        dose = sitk.GetArrayFromImage(sitk.ReadImage(row.path))
        structures = sitk.GetArrayFromImage(sitk.ReadImage(row.mask_path))
        gtv, lung = structures == 1, structures == 2
        assert dose[gtv].mean() == pytest.approx(dosimetry.loc[row.patient_id, "dose_mean_gy"], rel=0.01)
        assert np.percentile(dose[gtv], 5) == pytest.approx(dosimetry.loc[row.patient_id, "d95_gy"], rel=0.02)
        v20 = 100.0 * (dose[lung] >= 20.0).mean()
        assert v20 == pytest.approx(dosimetry.loc[row.patient_id, "lung_v20_pct"], abs=0.5)
        assert dose[~gtv].max() < dose[gtv].max() and dose.min() >= 0


def test_pyradiomics_features_of_the_images_track_the_latent_phenotype(rt_written):
    import logging

    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    sim, _ = rt_written
    extractor = featureextractor.RadiomicsFeatureExtractor(binWidth=25)
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(shape=["MeshVolume"], firstorder=["Mean"])
    images, latents = sim.cohort.images, sim.truth.latents
    volume, suv = [], []
    for pid in sim.cohort.patient_ids:
        ct = images[(images.patient_id == pid) & (images.modality == "CT")].iloc[0]
        pet = images[(images.patient_id == pid) & (images.modality == "PET")].iloc[0]
        volume.append(float(extractor.execute(ct.path, ct.mask_path)["original_shape_MeshVolume"]) / 1000.0)
        suv.append(float(extractor.execute(pet.path, pet.mask_path)["original_firstorder_Mean"]))
    assert np.corrcoef(volume, latents["tumour_volume_ml"])[0, 1] > 0.95
    assert np.corrcoef(suv, latents["suv_mean"])[0, 1] > 0.7
    assert np.corrcoef(suv, latents["radiomics[1]"])[0, 1] > 0.7


def test_gene_modules_follow_their_latent():
    sim = simulate("radiotherapy", n_patients=500, seed=4, missing=0.0)
    genes = sim.cohort.blocks["genes"]
    modules = sim.truth.gene_modules
    assert set(modules.index) == set(genes.columns)
    assert (genes.to_numpy() % 1 == 0).all() and (genes.to_numpy() >= 0).all()
    log_expr = np.log1p(genes.div(sim.truth.latents["genes_size_factor"], axis=0))
    loadings = sim.truth.parameters["loadings"]["genes"]
    hypoxia = [g for g in modules.index if modules[g] == 0 and abs(loadings[g][0]) > 0.7]
    corr = [np.corrcoef(log_expr[g], sim.truth.latents["genes[0]"])[0, 1] * np.sign(loadings[g][0]) for g in hypoxia]
    assert np.median(corr) > 0.6
    background = [g for g in modules.index if modules[g] == -1][:20]
    assert np.median([abs(np.corrcoef(log_expr[g], sim.truth.latents["genes[0]"])[0, 1]) for g in background]) < 0.15


@pytest.mark.parametrize("kwargs, culprit", [
    ({"scenario": "brain_mri"}, "scenario"),
    ({"scenario": "radiotherapy", "missing": {"histopathology": 0.2}}, "histopathology"),
    ({"scenario": "radiotherapy", "missing": {"genes": 1.5}}, "rate"),
    ({"scenario": "radiotherapy", "missing": {"genes": {"rate": 0.2, "mechanism": "MAR"}}}, "depends_on"),
    ({"scenario": "radiotherapy", "missing": {"genes": {"rate": 0.2, "mechanism": "MNAR"}}}, "mechanism"),
    ({"scenario": "radiotherapy", "missing": "lots"}, "missing"),
    ({"scenario": "radiotherapy", "n_patients": 1}, "n_patients"),
    ({"scenario": "radiotherapy", "image_size": 8}, "image_size"),
])
def test_bad_arguments_raise_a_bayesrad_error_naming_the_argument(kwargs, culprit):
    with pytest.raises(BayesradError) as info:
        simulate(**kwargs)
    assert isinstance(info.value, CohortError)
    assert culprit in str(info.value)


def test_ordinal_categorical_and_factor_conventions_recover_the_parameters():
    from scipy.optimize import minimize
    from scipy.special import expit
    from sklearn.linear_model import LinearRegression, LogisticRegression

    sim = simulate("radiotherapy", n_patients=5000, seed=6, missing=0.0)
    params, latents = sim.truth.parameters, sim.truth.latents
    clinical = sim.cohort.blocks["clinical"]

    # stage: P(stage <= level_k) = sigmoid(cutpoint_k - eta), eta = coefs . parents.
    x = np.column_stack([latents["radiomics[0]"], clinical["positive_nodes"]])
    level = clinical["stage"].to_numpy().astype(int) - 1

    def nll(theta):
        cut = np.concatenate([[theta[0]], theta[0] + np.cumsum(np.exp(theta[1:3]))])
        eta = x @ theta[3:]
        upper = np.append(expit(cut[None, :] - eta[:, None]), np.ones((len(eta), 1)), axis=1)
        lower = np.insert(upper[:, :-1], 0, 0.0, axis=1)
        rows = np.arange(len(eta))
        return -np.log(np.clip(upper[rows, level] - lower[rows, level], 1e-12, None)).sum()

    theta = minimize(nll, np.array([-1.0, 0.0, 0.0, 0.5, 0.5]), method="BFGS").x
    cut = np.concatenate([[theta[0]], theta[0] + np.cumsum(np.exp(theta[1:3]))])
    np.testing.assert_allclose(cut, params["cutpoints"]["stage"], atol=0.25)
    np.testing.assert_allclose(theta[3:], [params["coef"][("radiomics[0]", "stage")],
                                           params["coef"][("positive_nodes", "stage")]], atol=0.12)

    # histology: softmax with the first level as reference, per-level coefficient lists.
    fit = LogisticRegression(C=1e6, max_iter=500).fit(clinical[["sex_male"]], clinical["histology"].astype(str))
    order = [list(fit.classes_).index(level) for level in params["levels"]["histology"]]
    slopes = fit.coef_[order, 0] - fit.coef_[order[0], 0]
    np.testing.assert_allclose(slopes, params["coef"][("sex_male", "histology")], atol=0.2)

    # radiomics columns: intercept + loadings . z + noise.
    radiomics = sim.cohort.blocks["radiomics"]
    z = latents[["radiomics[0]", "radiomics[1]"]].loc[radiomics.index]
    for column in ("ct_gtv_shape_log_volume_ml", "pet_gtv_suvmax"):
        ols = LinearRegression().fit(z, radiomics[column])
        np.testing.assert_allclose(ols.coef_, params["loadings"]["radiomics"][column], rtol=0.05, atol=0.02)
        residual_sd = np.std(radiomics[column] - ols.predict(z))
        assert residual_sd == pytest.approx(params["sd"][column], rel=0.05)
