"""Gene modules recovered from counts with known co-expression modules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from bayesrad.errors import FeatureError, NotFittedError
from bayesrad.features.genes import UNASSIGNED, GeneModules, extract_gene_modules


@pytest.fixture(autouse=True)
def _scanpy_caches_in_tmp(tmp_path, monkeypatch):
    """scanpy writes caches under ./data and ~: keep them out of the repository and home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))


def _module_counts(n_patients=120, module_sizes=(30, 25, 20, 15), n_background=300, seed=0):
    """Negative-binomial counts: genes of module m follow latent factor m; background genes
    follow none. Returns (counts DataFrame, true module Series (0 = background), latents)."""
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(n_patients, len(module_sizes)))
    size_factor = np.exp(rng.normal(0, 0.3, size=n_patients))  # library size differences
    log_mean, truth = [], []
    for m, size in enumerate(module_sizes, start=1):
        loading = rng.uniform(0.5, 1.0, size=size) * rng.choice([1, 1, 1, -1], size=size)
        log_mean.append(rng.uniform(3, 6, size=size) + latents[:, [m - 1]] * loading)
        truth += [m] * size
    log_mean.append(np.broadcast_to(rng.uniform(3, 6, size=n_background), (n_patients, n_background)))
    truth += [0] * n_background
    mean = size_factor[:, None] * np.exp(np.hstack(log_mean))
    dispersion = 20.0
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mean))
    genes = [f"g{j:03d}" for j in range(counts.shape[1])]
    patients = pd.Index([f"p{i:03d}" for i in range(n_patients)], name="patient_id")
    return pd.DataFrame(counts, index=patients, columns=genes), pd.Series(truth, index=genes), latents


def test_hierarchical_modules_recover_the_true_modules_and_eigengenes():
    counts, truth, latents = _module_counts()
    modules = GeneModules(n_top_genes=5000, min_module_size=5).fit(counts)
    membership = modules.membership_
    module_genes = truth.index[truth > 0]
    ari = adjusted_rand_score(truth[module_genes], membership.loc[module_genes, "module"])
    assert ari > 0.9
    assert modules.n_modules_ == 4  # the tree cut at mean |r| 0.3 finds the four modules
    # Background genes, correlated with nothing, must not make a module of their own.
    assert (membership.loc[truth.index[truth == 0], "module"] == UNASSIGNED).mean() > 0.95

    eigengenes = modules.transform(counts)
    assert list(eigengenes.columns) == [f"genes_module{k}_eigengene" for k in range(1, 5)]
    assert eigengenes.index.equals(counts.index)
    np.testing.assert_allclose(eigengenes.std(ddof=1), 1.0, atol=1e-8)
    for column, module in zip(eigengenes.columns, modules.modules_):
        true_module = truth[modules.modules_[module]].mode()[0]
        r = np.corrcoef(eigengenes[column], latents[:, true_module - 1])[0, 1]
        # Eigengene sign follows the module's mean expression; most genes load positively.
        assert r > 0.9
        genes = modules.modules_[module]
        mean_expression = np.log1p(counts[genes].div(counts.sum(axis=1), axis=0) * 1e6).mean(axis=1)
        assert np.corrcoef(eigengenes[column], mean_expression)[0, 1] > 0
    assert (membership.loc[module_genes, "kme"].abs() > 0.3).all()


def test_new_patients_are_scored_without_refitting():
    counts, truth, latents = _module_counts(n_patients=160, seed=1)
    train, test = counts.iloc[:120], counts.iloc[120:]
    modules = GeneModules().fit(train)
    assert modules.n_modules_ == 4
    loadings_before = modules.eigengene_loadings_.copy()
    scored = modules.transform(test[list(reversed(test.columns))])  # gene order does not matter
    pd.testing.assert_frame_equal(modules.eigengene_loadings_, loadings_before)
    assert scored.index.equals(test.index)
    one_patient = modules.transform(test.iloc[[0]])
    np.testing.assert_allclose(one_patient.to_numpy(), scored.iloc[[0]].to_numpy(), atol=1e-10)


def test_leiden_modules_and_anndata_input():
    import anndata

    counts, truth, _ = _module_counts(seed=2)
    adata = anndata.AnnData(X=counts.to_numpy().astype(float), obs=pd.DataFrame(index=counts.index),
                            var=pd.DataFrame(index=counts.columns))
    eigengenes, membership = extract_gene_modules(adata, method="leiden", n_top_genes=5000)
    module_genes = truth.index[truth > 0]
    assert adjusted_rand_score(truth[module_genes], membership.loc[module_genes, "module"]) > 0.8
    assert eigengenes.shape == (len(counts), membership["module"].max())


def test_bad_expression_input_is_named():
    counts, _, _ = _module_counts(n_patients=20, seed=3)
    with pytest.raises(NotFittedError):
        GeneModules().transform(counts)
    negative = counts.astype(float)
    negative.iloc[2, 5] = -1
    with pytest.raises(FeatureError, match="p002.*g005.*raw counts"):
        GeneModules().fit(negative)
    fitted = GeneModules().fit(counts)
    with pytest.raises(FeatureError, match="absent"):
        fitted.transform(counts.drop(columns=fitted.genes_[:3]))
    with pytest.raises(FeatureError, match="method"):
        GeneModules(method="wgcna").fit(counts)
    with pytest.raises(FeatureError, match="hvg_flavor"):
        GeneModules(hvg_flavor="seurat_v3").fit(counts)


def test_radiotherapy_scenario_modules_match_the_simulator_truth():
    from bayesrad.data.simulate import simulate

    simulation = simulate("radiotherapy", n_patients=200, seed=0)
    counts = simulation.cohort.blocks["genes"]
    truth = simulation.truth.gene_modules.loc[counts.columns]  # -1: the gene follows no module
    in_module = truth.index[truth >= 0]

    hierarchical = GeneModules().fit(counts)
    assert hierarchical.n_modules_ == truth[truth >= 0].nunique()
    # Unassigned genes (0) against background genes (-1) count in the index too.
    assert adjusted_rand_score(truth, hierarchical.membership_.loc[truth.index, "module"]) > 0.9
    # Total-count scaling makes background genes co-vary through the library composition
    # (they gather into spurious modules); median-of-ratios size factors do not.
    total_count = GeneModules(normalization="total").fit(counts)
    assert adjusted_rand_score(truth, total_count.membership_.loc[truth.index, "module"]) < 0.9
    eigengenes = hierarchical.transform(counts)
    latent_columns = [c for c in simulation.truth.latents.columns if c.startswith("genes[")]
    latents = simulation.truth.latents.loc[counts.index, latent_columns]
    for column, genes in zip(eigengenes.columns, hierarchical.modules_.values()):
        dimension = truth[genes].mode()[0]
        assert abs(np.corrcoef(eigengenes[column], latents[f"genes[{dimension}]"])[0, 1]) > 0.85

    leiden_eigengenes, leiden_membership = extract_gene_modules(simulation.cohort, method="leiden")  # the genes block
    assert adjusted_rand_score(truth[in_module], leiden_membership.loc[in_module, "module"]) > 0.9
    assert leiden_eigengenes.index.equals(counts.index)
