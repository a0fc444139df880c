"""Empirical-Bayes factors of wide blocks, ridge shrinkage on the target, and the default graph
built from the table people have (the target inside its feature table)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from bayesrad import Graph, HybridBN
from bayesrad.data import Cohort
from bayesrad.errors import ConvergenceWarning, CohortError, GraphError
from bayesrad.graph.graph import NodeSpec
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.model.factors import _log_evidence, fit_ppca, normal_scores, normal_scores_fit


def _low_rank(n=200, p=60, k=4, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, p)) * np.linspace(2.0, 1.0, k)[:, None]
    # equal signal variance per column, so standardising keeps the noise isotropic (PPCA's
    # assumption; heteroscedastic noise makes the evidence prefer more factors)
    w = w / np.linalg.norm(w, axis=0)
    z = rng.normal(size=(n, k))
    x = z @ w + noise * rng.normal(size=(n, p))
    return x, z, w


def test_log_evidence_equals_scikit_learns_minka():
    from sklearn.decomposition._pca import _assess_dimension

    x, _, _ = _low_rank(n=80, p=30)
    spectrum = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2 / 80
    evidence = _log_evidence(spectrum, 29, 80, 30)
    assert evidence.shape == (29,)
    for k in range(1, 30):
        assert evidence[k - 1] == pytest.approx(_assess_dimension(spectrum, k, 80), rel=1e-9)
    # wide and rank-deficient (n < p: zeros past the rank), where the public PCA refuses
    x, _, _ = _low_rank(n=40, p=120)
    spectrum = np.zeros(120)
    spectrum[:40] = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2 / 40
    evidence = _log_evidence(spectrum, 38, 40, 120)
    reference = np.array([_assess_dimension(spectrum, k, 40) for k in range(1, 39)])
    assert np.array_equal(np.isfinite(evidence), np.isfinite(reference))
    finite = np.isfinite(reference)
    np.testing.assert_allclose(evidence[finite], reference[finite], rtol=1e-9)
    assert evidence.argmax() + 1 == 4
    # k beyond p - 1 is undefined
    assert np.all(np.isneginf(_log_evidence(np.array([2.0, 1.0]), 3, 10, 2)[1:]))


def test_ppca_finds_the_rank_and_the_subspace_with_signed_factors():
    x, _, w = _low_rank(n=300, p=60, k=4)
    x = (x - x.mean(0)) / x.std(0)
    fac = fit_ppca(x, np.ones_like(x, bool))
    assert fac["k"] == 4
    # the fitted loadings span the true loadings' row space (principal angles near 0)
    q_true = np.linalg.qr(w.T)[0]
    q_fit = np.linalg.qr(fac["loadings"].T)[0]
    cosines = np.linalg.svd(q_true.T @ q_fit, compute_uv=False)
    assert cosines.min() > 0.99
    # the stated convention: ordered by variance, largest |loading| of each factor positive
    assert np.all(np.diff(fac["variance"]) <= 0)
    pivots = np.abs(fac["loadings"]).argmax(1)
    assert np.all(fac["loadings"][np.arange(4), pivots] > 0)
    # the noise sd of the standardised columns is the part the 4 factors leave
    assert 0.05 < fac["noise_sd"] < 0.6


def test_ppca_on_wide_data_keeps_rank_below_patients():
    x, _, _ = _low_rank(n=40, p=500, k=3, noise=0.5, seed=1)
    x = (x - x.mean(0)) / x.std(0)
    fac = fit_ppca(x, np.ones_like(x, bool), max_factors=64)
    assert 3 <= fac["k"] <= 38
    assert fac["loadings"].shape == (fac["k"], 500)


def test_normal_scores_are_standard_normal_on_training_data_and_monotone():
    rng = np.random.default_rng(0)
    raw = np.column_stack([rng.lognormal(size=300), rng.exponential(size=300) ** 3])
    raw[5, 0] = np.nan
    grid = normal_scores_fit(raw)
    scores = normal_scores(raw, grid)
    assert np.isnan(scores[5, 0]) and np.isfinite(scores[~np.isnan(raw)]).all()
    assert abs(np.nanmean(scores[:, 1])) < 0.05 and abs(np.nanstd(scores[:, 1]) - 1) < 0.1
    order = np.argsort(raw[:, 1])
    assert np.all(np.diff(scores[order, 1]) >= -1e-12)
    # beyond the training range: the extreme score, not an extrapolation
    far = normal_scores(np.array([[1e9, -1e9]]), grid)
    assert np.all(np.isfinite(far)) and np.abs(far).max() < 4


def _wide_table(n=160, p=300, seed=0):
    """One table: a binary target and p correlated features, the signal on 3 factors."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    w = rng.normal(size=(6, p))
    x = np.exp(0.5 * (z @ w) / np.sqrt(6) + 0.4 * rng.normal(size=(n, p)))   # skewed columns
    logit = 1.5 * z[:, 0] - 1.2 * z[:, 1] + 0.8 * z[:, 2]
    prob = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < prob).astype(float)
    frame = pd.DataFrame(x, columns=[f"feature_{j}" for j in range(p)])
    frame.insert(0, "Target", y)
    frame.insert(0, "ID", [f"case{i:03d}" for i in range(n)])
    return frame, prob


@pytest.fixture(scope="module")
def wide_fit():
    frame, prob = _wide_table()
    cohort = Cohort({"table": frame.iloc[:120]}, id_column="ID")
    graph = Graph.default(cohort, target="Target")
    model = HybridBN(graph, seed=0, num_threads=1).fit(cohort)
    test = Cohort({"table": frame.iloc[120:]}, id_column="ID")
    return model, test, prob[120:], frame


def test_target_inside_its_table_gets_the_other_columns_as_parents(wide_fit):
    model, _, _, frame = wide_fit
    graph = model.graph_
    assert graph.parents("Target") == ["table"]
    spec = graph.spec("table")
    assert spec.kind == "latent" and "Target" not in spec.columns and len(spec.columns) == 300
    assert spec.prior["factors"] == "empirical_bayes"
    assert graph.spec("Target").prior["shrinkage"] == "ridge"
    # k was chosen by evidence and is what the fitted layout uses
    k = model.layout_.latent_dim["table"]
    assert 1 <= k <= 64 and spec.latent_dim == k


def test_wide_block_keeps_the_outcome_signal_and_is_calibrated(wide_fit):
    model, test, truth, _ = wide_fit
    pred = model.predict(test, target="Target")
    # the old k = 2 factor answered the base rate (sd 0.02, AUC below chance on real data)
    assert pred["mean"].std() > 0.15
    assert np.corrcoef(pred["mean"], truth)[0, 1] > 0.8
    y = (truth > 0.5).astype(int)
    assert roc_auc_score(y, pred["mean"]) > 0.85
    # the posterior sd of a patient's probability is real uncertainty, not zero
    assert (pred["sd"] > 0.01).all()


def test_missing_block_falls_back_to_the_prior_predictive(wide_fit):
    model, test, _, _ = wide_fit
    frame = test.blocks["table"].copy()
    blank = frame.copy()
    blank.iloc[:, 1:] = np.nan          # the features of every test patient missing
    pred = model.predict({"table": blank}, target="Target")
    # every patient then gets the same answer up to Monte Carlo error (particles differ per
    # patient): the predictive probability near the training share, with a wide band
    assert pred["mean"].std() < 0.02
    share = float(model.train_design_.values["Target"].mean())
    assert abs(float(pred["mean"].mean()) - share) < 0.06
    assert (pred["sd"] > 0.1).all()


def test_factor_loadings_are_fixed_and_saved(wide_fit, tmp_path):
    model, test, _, _ = wide_fit
    assert "table.loadings" in model.layout_.fixed
    assert not any(s.name.startswith("table.") for s in model.layout_.sites)
    model.save(tmp_path / "m")
    again = HybridBN.load(tmp_path / "m")
    a = model.predict(test, target="Target", n_samples=200)
    b = again.predict(test, target="Target", n_samples=200)
    assert np.allclose(a["mean"], b["mean"], atol=1e-5)


def test_unpaired_survival_time_target_is_refused():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"os_days": rng.uniform(30, 2000, 30).round(1),
                          "age": rng.normal(60, 8, 30)},
                         index=pd.Index([f"p{i}" for i in range(30)], name="patient_id"))
    with pytest.raises(GraphError, match="os_days.*survival time.*event"):
        Graph.default({"table": frame}, target="os_days")
    frame["os_status"] = rng.integers(0, 2, 30)
    graph = Graph.default({"table": frame}, target="os_days")
    assert graph.spec("os_days").kind == "survival" and graph.spec("os_days").event == "os_status"
    assert graph.parents("os_days") == ["age"]


def test_cohort_id_column():
    frame = pd.DataFrame({"ID": ["a", "b"], "x": [1.0, 2.0]})
    cohort = Cohort({"table": frame}, id_column="ID")
    assert list(cohort.patient_ids) == ["a", "b"]
    with pytest.raises(CohortError, match="'pid'.*id_column"):
        Cohort({"table": frame}, id_column="pid")


def test_unseen_level_warns_and_is_missing():
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"stage": rng.choice(["i", "ii"], n), "y": rng.integers(0, 2, n).astype(float)},
                         index=pd.Index([f"p{i}" for i in range(n)], name="patient_id"))
    model = HybridBN(Graph.default({"t": frame}, target="y"), num_steps=200, min_steps=100,
                     num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit({"t": frame})
    new = pd.DataFrame({"stage": ["iii"]}, index=pd.Index(["new"], name="patient_id"))
    with pytest.warns(UserWarning, match="stage.*'iii'.*new.*treated as missing"):
        pred = model.predict({"t": new}, target="y")
    assert np.isfinite(pred["mean"]).all()


def test_unconverged_fit_warns_with_the_trend():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(size=50), "y": rng.integers(0, 2, 50).astype(float)},
                         index=pd.Index([f"p{i}" for i in range(50)], name="patient_id"))
    model = HybridBN(Graph.default({"t": frame}, target="y"), num_steps=150, min_steps=500,
                     num_threads=1)
    with pytest.warns(ConvergenceWarning, match="num_steps=150.*Raise num_steps"):
        model.fit({"t": frame})
    assert model.converged_ is False


def test_with_allowed_parents_adds_what_the_tiers_allow():
    specs = [NodeSpec("age", "continuous"), NodeSpec("dose", "continuous"),
             NodeSpec("toxicity", "binary"), NodeSpec("control", "binary"),
             NodeSpec("survival_time", "survival", event="e")]
    graph = Graph(specs)
    graph.add_edge("age", "dose")
    graph.add_edge("control", "survival_time")
    knowledge = ExpertKnowledge(tiers={"patient": ["age"], "treatment": ["dose"],
                                       "outcome": ["toxicity", "control", "survival_time"]})
    full = graph.with_allowed_parents("control", knowledge)
    assert set(full.parents("control")) == {"age", "dose"}
    assert full.spec("control").prior["shrinkage"] == "ridge"
    assert graph.parents("control") == []          # the original is unchanged


# ----------------------------------------------------------------------------- supervision
NUISANCE = 100
LOADING = 1.0


def _weak_signal_table(n=330, p=400, seed=1):
    """A wide block whose outcome signal is a weak factor carried by 8 columns, below the
    variance of 100 nuisance factors (the top 64 principal components are all nuisance): unsupervised
    PCA cannot see it, screening by the outcome can (Bair et al. 2006's setting)."""
    rng = np.random.default_rng(seed)
    nuisance = rng.normal(size=(n, NUISANCE)) @ rng.normal(size=(NUISANCE, p))
    signal = rng.normal(size=n)
    x = nuisance + rng.normal(size=(n, p))
    x[:, :8] = LOADING * signal[:, None] + rng.normal(size=(n, 8))
    prob = 1 / (1 + np.exp(-2.5 * signal))
    y = (rng.random(n) < prob).astype(float)
    frame = pd.DataFrame(x, columns=[f"feature_{j}" for j in range(p)])
    frame.insert(0, "Target", y)
    frame.insert(0, "ID", [f"case{i:03d}" for i in range(n)])
    return frame, prob


def test_screening_keeps_the_columns_that_carry_the_outcome():
    from bayesrad.model.factors import choose_screening

    frame, _ = _weak_signal_table()
    x = frame.filter(like="feature_").to_numpy()
    x = (x - x.mean(0)) / x.std(0)
    with threadpool_limits(1):
        choice = choose_screening(x, np.ones_like(x, dtype=bool), frame["Target"].to_numpy(),
                                  "binary")
    assert choice["m"] < x.shape[1] and choice["columns"] is not None
    assert len(set(choice["columns"]) & set(range(8))) >= 6
    # the full block was a candidate and lost in inner CV
    assert choice["loss"][x.shape[1]] > choice["loss"][choice["m"]]
    # a block no wider than the smallest candidate is not screened
    small = choose_screening(x[:, :20], np.ones((len(x), 20), dtype=bool),
                             frame["Target"].to_numpy(), "binary")
    assert small["columns"] is None and small["m"] == 20


@pytest.fixture(scope="module")
def weak_signal_fits():
    frame, prob = _weak_signal_table()
    train = Cohort({"table": frame.iloc[:130]}, id_column="ID")
    test = Cohort({"table": frame.iloc[130:]}, id_column="ID")
    graph = Graph.default(train, target="Target")
    plain = graph.copy()
    plain.spec("table").prior = {k: v for k, v in plain.spec("table").prior.items()
                                 if k != "supervise"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = {name: HybridBN(g, seed=0, num_threads=1, num_steps=600).fit(train)
                for name, g in (("supervised", graph), ("unsupervised", plain))}
    return fits, test, prob[130:]


def test_supervised_factors_predict_what_unsupervised_ones_miss(weak_signal_fits, tmp_path):
    fits, test, truth = weak_signal_fits
    model = fits["supervised"]
    screening = model.preprocessor_.stats_["table"]["factors"]["screening"]
    assert screening["outcome"] == "Target" and screening["n_columns"] < 400
    # columns screened out have zero loadings and no say in the factors
    kept = [model.preprocessor_.stats_["table"]["columns"].index(c) for c in screening["columns"]]
    loadings = model.layout_.fixed["table.loadings"]
    assert np.all(np.delete(loadings, kept, axis=1) == 0)
    y = (truth > 0.5).astype(int)
    auc = {name: roc_auc_score(y, m.predict(test, target="Target")["mean"])
           for name, m in fits.items()}
    assert auc["supervised"] > 0.85
    assert auc["supervised"] > auc["unsupervised"] + 0.08
    # the screening is part of the saved model
    model.save(tmp_path / "m")
    again = HybridBN.load(tmp_path / "m")
    assert np.allclose(again.predict(test, target="Target", n_samples=100)["mean"],
                       model.predict(test, target="Target", n_samples=100)["mean"], atol=1e-5)
