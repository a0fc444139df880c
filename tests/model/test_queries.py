"""Questions to a fitted HybridBN beyond plain prediction: evidence that reaches missing
parents through their descendants, interventions relative to a patient's own value,
counterfactuals, and the MLP mean. Every check compares against an exact answer (linear-
Gaussian algebra, the truth of a generator) rather than a recorded value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit

from bayesrad.errors import ModelError
from bayesrad.evaluate import auc, ece
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.compile import Backend, latent_marginal_loglik, latent_posterior
from bayesrad.model.particles import weighted_quantiles

SETTINGS = dict(num_steps=1500, learning_rate=0.03, seed=0, num_threads=1, n_samples=400)


# ----------------------------------------------------------------------------- building blocks
def test_latent_marginal_loglik_is_the_gaussian_marginal():
    """log p(observed columns | eta) from the posterior's precision equals the multivariate
    normal with covariance loadings' loadings + diag(sd^2) on the observed columns."""

    class Layout:
        latent_dim, n_columns, fixed = {"z": 3}, {"z": 7}, {}

        def loadings(self, g, c, be):
            return g["z.loadings"]

        def col_mean(self, g, c, be):
            return g["z.col_mean"]

        def col_sd(self, g, c, be):
            return g["z.col_sd"]

    gen = torch.Generator().manual_seed(0)
    draws, n, k, p = 4, 6, 3, 7
    g = {"z.loadings": torch.randn(draws, k, p, generator=gen, dtype=torch.float64),
         "z.col_mean": torch.randn(draws, p, generator=gen, dtype=torch.float64),
         "z.col_sd": torch.rand(draws, p, generator=gen, dtype=torch.float64) + 0.3}
    x = torch.randn(n, p, generator=gen, dtype=torch.float64)
    m = torch.rand(n, p, generator=gen) > 0.3
    m[0] = False                                   # a patient without the block
    x = torch.where(m, x, 0.0)                     # designs hold 0 where unobserved
    eta = torch.randn(draws, n, k, generator=gen, dtype=torch.float64)
    be = Backend("pyro")
    mean, prec = latent_posterior(Layout(), "z", g, eta, x, m, be, torch.ones(n, dtype=torch.float64))
    got = latent_marginal_loglik(Layout(), "z", g, eta, x, m, mean, prec, be)
    for s in range(draws):
        assert got[s, 0] == pytest.approx(0.0, abs=1e-12)
        for i in range(1, n):
            j = m[i]
            lam = g["z.loadings"][s][:, j]
            cov = lam.T @ lam + torch.diag(g["z.col_sd"][s][j] ** 2)
            loc = g["z.col_mean"][s][j] + eta[s, i] @ lam
            ref = torch.distributions.MultivariateNormal(loc, cov).log_prob(x[i, j])
            assert float(got[s, i]) == pytest.approx(float(ref), abs=1e-9)


def test_weighted_quantiles():
    gen = torch.Generator().manual_seed(1)
    samples = torch.randn(4001, 3, generator=gen, dtype=torch.float64)
    flat = torch.full_like(samples, 1.0 / 4001)
    got = weighted_quantiles(samples, flat, [0.05, 0.5, 0.95])
    ref = np.quantile(samples.numpy(), [0.05, 0.5, 0.95], axis=0, method="inverted_cdf")
    np.testing.assert_allclose(got.numpy(), ref)
    # weights that double the upper half move the median to the 1/3 point of the lower half
    values = torch.arange(1.0, 7.0, dtype=torch.float64)[:, None]
    weights = torch.tensor([1, 1, 1, 2, 2, 2], dtype=torch.float64)[:, None] / 9.0
    assert weighted_quantiles(values, weights, [0.5])[0, 0] == 4.0
    assert weighted_quantiles(values, weights, [0.3])[0, 0] == 3.0


# ----------------------------------------------------------------------------- linear-Gaussian chain
A_MEAN, A_SD = 60.0, 5.0           # a: dose-like root, Gy
B_COEF, B_SD = 0.8, 2.0            # b = 10 + 0.8 a + N(0, 2^2): a descendant measurement
Y_COEF, Y_SD = -0.5, 1.5           # y = 40 - 0.5 a + N(0, 1.5^2)


def _chain(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(A_MEAN, A_SD, n)
    b = 10.0 + B_COEF * a + rng.normal(0, B_SD, n)
    y = 40.0 + Y_COEF * a + rng.normal(0, Y_SD, n)
    ids = pd.Index([f"C{seed}-{i:04d}" for i in range(n)], name="patient_id")
    return {"clinical": pd.DataFrame({"a": a, "b": b, "y": y}, index=ids)}


@pytest.fixture(scope="module")
def chain_fit():
    graph = Graph([NodeSpec("a", "continuous"), NodeSpec("b", "continuous"),
                   NodeSpec("y", "continuous")], [("a", "b"), ("a", "y")])
    return HybridBN(graph, **SETTINGS).fit(_chain(1500, 0))


def _exact_y_given_b(model, b):
    """E[y | b] and sd(y | b) averaged over the model's own posterior draws of the globals,
    by Gaussian conditioning (original units)."""
    g = model.posterior_samples()
    st = model.preprocessor_.stats_
    zb = (b[None, :] - st["b"]["mean"]) / st["b"]["sd"]
    a_mu, a_sd = g["a.intercept"][:, 0, None].double(), g["a.sd"][:, None].double()
    wb, b0, b_sd = (g["b.coef.a"][:, 0, 0, None].double(), g["b.intercept"][:, 0, None].double(),
                    g["b.sd"][:, None].double())
    wy, y0, y_sd = (g["y.coef.a"][:, 0, 0, None].double(), g["y.intercept"][:, 0, None].double(),
                    g["y.sd"][:, None].double())
    zb = torch.as_tensor(zb, dtype=torch.float64)
    post_var = 1.0 / (1.0 / a_sd ** 2 + wb ** 2 / b_sd ** 2)
    post_mean = post_var * (a_mu / a_sd ** 2 + wb * (zb - b0) / b_sd ** 2)
    y_mean = y0 + wy * post_mean
    y_var = y_sd ** 2 + wy ** 2 * post_var
    mean = y_mean.mean(0)
    var = (y_var + y_mean ** 2).mean(0) - mean ** 2
    return (mean * st["y"]["sd"] + st["y"]["mean"]).numpy(), (var.sqrt() * st["y"]["sd"]).numpy()


def test_descendant_evidence_reaches_a_missing_parent(chain_fit):
    """With a missing and its child b observed, y's predictive is the exact Gaussian
    conditional given b, not y's marginal."""
    test = _chain(40, 1)["clinical"]
    without_a = {"clinical": test[["b"]]}
    pred = chain_fit.predict(without_a, "y", n_samples=1000)
    mean, sd = _exact_y_given_b(chain_fit, test["b"].to_numpy())
    spread = float(np.std(mean))
    assert spread > 1.0                             # b moves E[y | b] by several units
    np.testing.assert_allclose(pred["mean"], mean, atol=0.04 * float(sd.mean()))
    np.testing.assert_allclose(pred["sd"], sd, rtol=0.05)
    # ignoring b gives y's marginal: the same answer for everyone
    marginal = chain_fit.predict(without_a, "y", ignore=["b"])
    assert float(marginal["mean"].std()) < 0.1 * spread


def test_shift_intervention_equals_absolute_value(chain_fit):
    test = _chain(5, 2)
    a = test["clinical"]["a"].iloc[0]
    one = {"clinical": test["clinical"].iloc[:1]}
    shifted = chain_fit.predict(one, "y", do={"a": "+10"}, seed=3)
    absolute = chain_fit.predict(one, "y", do={"a": float(a) + 10.0}, seed=3)
    assert shifted["mean"].iloc[0] == pytest.approx(absolute["mean"].iloc[0], abs=0.05)
    # an intervention's descendants are no evidence: changing y in the data changes nothing
    moved = {"clinical": one["clinical"].assign(y=one["clinical"]["y"] + 30.0)}
    again = chain_fit.predict(moved, "b", do={"a": 70.0}, seed=3)
    before = chain_fit.predict(one, "b", do={"a": 70.0}, seed=3)
    pd.testing.assert_frame_equal(again, before)
    with pytest.raises(ModelError, match="'\\+ten' for 'a' is not a number"):
        chain_fit.predict(one, "y", do={"a": "+ten"})


def test_counterfactual_of_a_linear_gaussian_node_is_exact(chain_fit):
    """y' = y + coef * delta for every patient (their noise is fixed by the factual y); the
    only uncertainty left is the coefficient's."""
    test = _chain(30, 4)
    cf = chain_fit.counterfactual(test, "y", do={"a": "+10"})
    coef = chain_fit.coefficients().loc[("a", "y")]
    np.testing.assert_allclose(cf["factual"], test["clinical"]["y"])
    np.testing.assert_allclose(cf["mean"] - cf["factual"], 10.0 * coef["mean"],
                               atol=0.05 * 10.0 * coef["sd"] + 1e-3)
    np.testing.assert_allclose(cf["sd"], 10.0 * coef["sd"], rtol=0.1)
    with pytest.raises(ModelError, match="no intervened node"):
        chain_fit.counterfactual(test, "a", do={"b": 5.0})


# ----------------------------------------------------------------------------- latent block with a child
def _latent_cohort(n, seed):
    """z (2-d) -> 8 columns; v20 = 6 + 3 z0 + noise (a dose-volume metric that follows the
    tumour's size); outcome logistic in z. Returns blocks and the true P(outcome)."""
    rng = np.random.default_rng(seed)
    # distinct loading patterns (the second factor contrasts columns), so the two factors
    # are identified; column 0 measures z0 alone (the model's identifying zero)
    loadings = np.random.default_rng(99).uniform(0.6, 1.0, (2, 8))
    loadings[1] *= np.array([1, 1, -1, -1, 1, -1, 1, -1])
    loadings[1, 0] = 0.0
    z = rng.normal(size=(n, 2))
    cols = z @ loadings + rng.normal(0, 0.4, (n, 8))
    v20 = 6.0 + 3.0 * z[:, 0] + rng.normal(0, 0.8, n)
    p = expit(0.3 - 1.2 * z[:, 0] + 0.6 * z[:, 1])
    y = (rng.random(n) < p).astype(float)
    ids = pd.Index([f"L{seed}-{i:05d}" for i in range(n)], name="patient_id")
    blocks = {"radiomics": pd.DataFrame(cols, index=ids, columns=[f"f{j}" for j in range(8)]),
              "dosimetry": pd.DataFrame({"lung_v20_pct": v20}, index=ids),
              "outcome": pd.DataFrame({"local_control": y}, index=ids)}
    return blocks, pd.Series(p, index=ids)


@pytest.fixture(scope="module")
def latent_fit():
    graph = Graph([NodeSpec("radiomics", "latent", block="radiomics", latent_dim=2),
                   NodeSpec("lung_v20_pct", "continuous", block="dosimetry"),
                   NodeSpec("local_control", "binary", block="outcome")],
                  [("radiomics", "lung_v20_pct"), ("radiomics", "local_control")])
    blocks, _ = _latent_cohort(800, 0)
    return HybridBN(graph, **SETTINGS).fit(blocks)


def test_missing_block_is_informed_by_the_latents_observed_child(latent_fit):
    """A patient without imaging but with v20 (a child of the radiomics latent) is predicted
    as well as the true model given v20 alone, far better than when v20 is ignored, and
    calibrated (the issue's bound for patients missing a modality: ECE <= 0.06)."""
    blocks, p_true = _latent_cohort(2000, 1)
    no_imaging = {k: v for k, v in blocks.items() if k != "radiomics"}
    y = blocks["outcome"]["local_control"]
    with_child = latent_fit.predict(no_imaging, "local_control", n_samples=200)
    without = latent_fit.predict(no_imaging, "local_control", n_samples=200,
                                 ignore=["lung_v20_pct"])
    # the true P(y | v20): z0 | v20 is Gaussian (v20 = 6 + 3 z0 + N(0, 0.8^2)), z1 ~ N(0, 1)
    v20 = blocks["dosimetry"]["lung_v20_pct"].to_numpy()
    rng = np.random.default_rng(0)
    z0 = (3.0 * (v20 - 6.0) / 9.64)[:, None] + np.sqrt(0.64 / 9.64) * rng.normal(size=(2000, 2000))
    oracle = expit(0.3 - 1.2 * z0 + 0.6 * rng.normal(size=(2000, 2000))).mean(1)
    assert auc(y, with_child["mean"]) >= auc(y, oracle) - 0.02
    assert auc(y, with_child["mean"]) > auc(y, without["mean"]) + 0.1
    assert ece(y, with_child["mean"]) <= 0.06 and ece(y, without["mean"]) <= 0.06
    # with the whole block the answer is sharper still
    full = latent_fit.predict(blocks, "local_control", n_samples=200)
    assert auc(y, full["mean"]) >= auc(y, with_child["mean"]) - 0.01
    assert auc(y, p_true) - auc(y, full["mean"]) <= 0.02


def test_ignored_block_is_no_evidence(latent_fit):
    """ignore=["radiomics"] answers as if the block were absent from the data: its values
    must not reach the answer through the block likelihood's products."""
    blocks, _ = _latent_cohort(50, 3)
    without_block = {k: v for k, v in blocks.items() if k != "radiomics"}
    ignored = latent_fit.predict(blocks, "local_control", n_samples=100, ignore=["radiomics"])
    absent = latent_fit.predict(without_block, "local_control", n_samples=100)
    pd.testing.assert_frame_equal(ignored, absent, rtol=1e-5)
    # and the block does matter when it is evidence
    used = latent_fit.predict(blocks, "local_control", n_samples=100)
    assert (used["mean"] - absent["mean"]).abs().mean() > 0.05


def test_binary_counterfactual_follows_the_monotone_coupling(latent_fit):
    """do(z0 lowered): P(y' = 1 | y = 1) = 1 when the change only raises P(y = 1), and
    P(y' = 1 | y = 0) = (p' - p) / (1 - p) <= p' (the interventional probability)."""
    blocks, _ = _latent_cohort(60, 2)
    graph_z = latent_fit.predict(blocks, "local_control")
    assert graph_z["mean"].between(0, 1).all()
    do = {"radiomics": [-3.0, 0.0]}
    cf = latent_fit.counterfactual(blocks, "local_control", do=do)
    interventional = latent_fit.predict(blocks, "local_control", do=do)
    y = blocks["outcome"]["local_control"]
    assert (cf["factual"] == y).all()
    # z0 = -3 raises P(y = 1) for nearly every patient (z0's weight is negative)
    raised = cf.index[(y == 1)]
    assert cf.loc[raised, "mean"].median() > 0.95
    failures = cf.index[y == 0]
    assert (cf.loc[failures, "mean"] <= interventional.loc[failures, "mean"] + 0.02).all()


# ----------------------------------------------------------------------------- survival counterfactual
def test_survival_counterfactual_shifts_log_time_by_the_effect(complete_fit):
    """Weibull AFT: an observed event time t becomes t * exp(coef * delta)."""
    model, test, _ = complete_fit
    outcome = test["outcome"]
    # events with local control: more dose cannot undo local control (monotone coupling and
    # a positive effect), so the whole change is the direct one
    chosen = outcome.index[(outcome["os_event"] == 1) & (outcome["local_control"] == 1)][:40]
    one = {k: v.loc[v.index.isin(chosen)] for k, v in test.items()}
    cf = model.counterfactual(one, "os_days", do={"dose_mean_gy": "+10"})
    coef = model.coefficients().loc[("dose_mean_gy", "os_days")]
    assert model.coefficients().loc[("dose_mean_gy", "local_control"), "q05"] > 0
    ratio = cf["median"] / cf["factual"]
    np.testing.assert_allclose(ratio, np.exp(10 * coef["mean"]), rtol=0.02)


# ----------------------------------------------------------------------------- MLP mean
def _nonlinear(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, n), rng.normal(0, 1, n)
    y = 2.0 * np.sin(1.5 * a) + 0.5 * b + rng.normal(0, 0.3, n)
    ids = pd.Index([f"N{seed}-{i}" for i in range(n)], name="patient_id")
    return {"clinical": pd.DataFrame({"a": a, "b": b, "y": y}, index=ids)}


def test_mlp_mean_fits_a_nonlinear_dependence():
    train, test = _nonlinear(400, 0), _nonlinear(1000, 1)
    observed = test["clinical"]["y"]
    rmse = {}
    for hidden in (0, 8):
        prior = {"mlp_hidden": hidden} if hidden else None
        graph = Graph([NodeSpec("a", "continuous"), NodeSpec("b", "continuous"),
                       NodeSpec("y", "continuous", prior=prior)], [("a", "y"), ("b", "y")])
        model = HybridBN(graph, **dict(SETTINGS, num_steps=2000, n_samples=300)).fit(train)
        pred = model.predict(test, "y")
        rmse[hidden] = float(np.sqrt(((pred["mean"] - observed) ** 2).mean()))
        if hidden:
            assert {"y.mlp_w1", "y.mlp_b1", "y.mlp_w2"} <= {s.name for s in model.layout_.sites}
            covered = ((observed >= pred["q05"]) & (observed <= pred["q95"])).mean()
            assert 0.85 <= covered <= 0.95
    # noise sd 0.3; a linear mean leaves the sine in the residual (rmse ~1)
    assert rmse[8] < 0.45 < 0.9 < rmse[0]


def test_mlp_mean_compiles_to_numpyro():
    graph = Graph([NodeSpec("a", "continuous"),
                   NodeSpec("y", "continuous", prior={"mlp_hidden": 4})], [("a", "y")])
    data = _nonlinear(120, 2)
    model = HybridBN(graph, method="nuts", num_warmup=150, num_samples=150, num_chains=1,
                     seed=0, num_threads=1).fit({"clinical": data["clinical"][["a", "y"]]})
    pred = model.predict(_nonlinear(300, 3), "y")
    observed = _nonlinear(300, 3)["clinical"]["y"]
    assert float(np.sqrt(((pred["mean"] - observed) ** 2).mean())) < 0.8
