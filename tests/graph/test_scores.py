"""Structure scores: the numpy versions equal pgmpy's, and the GLM score's families equal
the maximum-likelihood fits of statsmodels."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesrad.graph.scores import (ConditionalGaussianBIC, DiscreteBIC, GaussianBIC, GLMBIC,
                                   standardise_continuous)


def _all_parent_sets(columns, variable, largest):
    others = [c for c in columns if c != variable]
    for k in range(largest + 1):
        yield from itertools.combinations(others, k)


@pytest.fixture(scope="module")
def mixed():
    """Mixed data in raw units (sds from 0.1 to 100), a 3-level factor with a level of ~5%,
    a 6-level factor (groups of a few rows, some below the dimension), a dependent binary."""
    rng = np.random.default_rng(0)
    n = 240
    a = rng.normal(size=n) * 5 + 3
    b = pd.Categorical(rng.choice(["x", "y", "z"], n, p=[0.6, 0.35, 0.05]))
    c = a * 0.5 + rng.normal(size=n) * 100
    d = pd.Categorical(np.where(a + rng.normal(size=n) > 3, "hi", "lo"))
    e = c * 0.01 + (np.asarray(d) == "hi") + rng.normal(size=n) * 0.1
    f = pd.Categorical(rng.choice(list("pqrstu"), n))
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "e": e, "f": f})


def test_conditional_gaussian_bic_equals_pgmpy_bic_cg(mixed):
    from pgmpy.structure_score import BICCondGauss

    ours, theirs = ConditionalGaussianBIC(mixed), BICCondGauss(mixed)
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variable in mixed.columns:
            # every parent set up to two; three for one continuous and one discrete child
            largest = 3 if variable in ("d", "e") else 2
            for parents in _all_parent_sets(mixed.columns, variable, largest):
                expected = theirs.local_score(variable, parents)
                assert ours.local_score(variable, parents) == pytest.approx(
                    expected, rel=1e-6), (variable, parents)
                # the value does not depend on the order the parents are listed in
                assert ours.local_score(variable, parents[::-1]) == ours.local_score(
                    variable, parents)
                checked += 1
    assert checked == 6 * (1 + 5 + 10) + 2 * 10


def test_conditional_gaussian_bic_matches_pgmpy_on_singular_covariances():
    """Exact collinearity (scipy's pseudo-determinant and zero density off the support) and
    groups with fewer rows than dimensions (pgmpy's identity covariance)."""
    from pgmpy.structure_score import BICCondGauss

    rng = np.random.default_rng(1)
    n = 60
    a = rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "g": 2 * a + 1, "h": np.round(rng.normal(size=n)),
                          "b": pd.Categorical(rng.choice(list("xyz"), n, p=[0.9, 0.07, 0.03])),
                          "f": pd.Categorical(rng.choice(list("pqrstuvw"), n))})
    ours, theirs = ConditionalGaussianBIC(frame), BICCondGauss(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for variable in frame.columns:
            for parents in _all_parent_sets(frame.columns, variable, 3):
                expected = theirs.local_score(variable, parents)
                got = ours.local_score(variable, parents)
                assert got == expected or got == pytest.approx(expected, rel=1e-6), (
                    variable, parents)


def test_discrete_and_gaussian_bic_equal_pgmpy():
    from pgmpy.structure_score import BIC, BICGauss

    rng = np.random.default_rng(2)
    n = 300
    x = rng.integers(0, 3, n)
    y = (x + rng.integers(0, 2, n)) % 4
    z = rng.integers(0, 2, n)
    discrete = pd.DataFrame({"x": pd.Categorical(x), "y": pd.Categorical(y),
                             "z": pd.Categorical(z), "w": pd.Categorical((y + z) % 2)})
    ours, theirs = DiscreteBIC(discrete), BIC(discrete)
    for variable in discrete.columns:
        for parents in _all_parent_sets(discrete.columns, variable, 3):
            assert ours.local_score(variable, parents) == pytest.approx(
                theirs.local_score(variable, parents), rel=1e-9)
    u = rng.normal(size=150)
    continuous = pd.DataFrame({"u": u, "v": 0.8 * u + rng.normal(size=150),
                               "w": rng.normal(size=150)})
    ours, theirs = GaussianBIC(continuous), BICGauss(continuous)
    for variable in continuous.columns:
        for parents in _all_parent_sets(continuous.columns, variable, 2):
            assert ours.local_score(variable, parents) == pytest.approx(
                theirs.local_score(variable, parents), rel=1e-9)


def test_glm_families_are_the_statsmodels_maximum_likelihood_fits():
    import statsmodels.api as sm
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    rng = np.random.default_rng(3)
    n = 400
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    eta = 0.8 * x1 - 0.5 * x2
    frame = pd.DataFrame({
        "x1": x1, "x2": x2,
        "y": eta + rng.normal(size=n),
        "binary": pd.Categorical(np.where(eta + rng.logistic(size=n) > 0, "yes", "no")),
        "kind": pd.Categorical(rng.choice(list("abc"), n)),
        "grade": pd.Categorical(np.digitize(eta + rng.logistic(size=n), [-1.0, 0.5]),
                                categories=[0, 1, 2], ordered=True),
        "count": rng.poisson(np.exp(0.3 + 0.4 * x1)),
    })
    score = GLMBIC(frame)
    log_n = np.log(n)
    z = np.column_stack([(v - v.mean()) / v.std() for v in (x1, x2)])
    design = sm.add_constant(z)

    def ll(variable):
        value = score.local_score(variable, ("x1", "x2"))
        assert value == pytest.approx(score.log_likelihood(variable, ("x1", "x2"))
                                      - score.n_parameters(variable, ("x1", "x2")) / 2 * log_n)
        return score.log_likelihood(variable, ("x1", "x2"))

    y = (frame["y"] - frame["y"].mean()) / frame["y"].std(ddof=0)
    assert ll("y") == pytest.approx(sm.OLS(y, design).fit().llf, rel=1e-9)
    assert ll("binary") == pytest.approx(
        sm.Logit(frame["binary"].cat.codes, design).fit(disp=0).llf, rel=1e-6)
    assert ll("kind") == pytest.approx(
        sm.MNLogit(frame["kind"].cat.codes, design).fit(disp=0).llf, rel=1e-6)
    assert ll("count") == pytest.approx(
        sm.Poisson(frame["count"], design).fit(disp=0).llf, rel=1e-6)
    ordinal = OrderedModel(frame["grade"].cat.codes.to_numpy(), z, distr="logit")
    assert ll("grade") == pytest.approx(
        ordinal.fit(method="newton", disp=0, maxiter=200).llf, rel=1e-6)
    # free parameters: p + 2, (r - 1)(p + 1), r - 1 + p, p + 1
    assert [score.n_parameters(v, ("x1", "x2")) for v in
            ("y", "binary", "kind", "grade", "count")] == [4, 3, 6, 4, 3]


def test_glm_score_adds_discrete_effects_that_the_cg_score_cells_cannot_afford():
    """A continuous child with three additive categorical parents (4 x 3 x 4 = 48 cells):
    the GLM score gains from the true parents; the conditional-Gaussian BIC, which pays
    for one regression per cell, gains less than it (here it loses)."""
    rng = np.random.default_rng(4)
    n = 400
    p1, p2, p3 = rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(0, 4, n)
    child = 0.4 * p1 - 0.5 * p2 + 0.3 * p3 + rng.normal(size=n)
    frame = pd.DataFrame({"p1": pd.Categorical(p1), "p2": pd.Categorical(p2),
                          "p3": pd.Categorical(p3), "child": child})
    parents = ("p1", "p2", "p3")
    glm = GLMBIC(frame)
    cg = ConditionalGaussianBIC(standardise_continuous(frame))
    glm_gain = glm.local_score("child", parents) - glm.local_score("child", ())
    cg_gain = cg.local_score("child", parents) - cg.local_score("child", ())
    assert glm_gain > 0
    assert cg_gain < glm_gain


def test_vector_node_is_a_multivariate_regression_invariant_to_rotation():
    rng = np.random.default_rng(5)
    n = 300
    a = rng.normal(size=n)
    latent = np.column_stack([a + rng.normal(size=n), rng.normal(size=n)])
    b = latent @ np.array([0.5, -0.5]) + rng.normal(size=n)
    rotation = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    frames = [pd.DataFrame({"a": a, "z[0]": values[:, 0], "z[1]": values[:, 1], "b": b})
              for values in (latent, latent @ rotation)]
    gains = []
    for frame in frames:
        score = GLMBIC(frame, vector_nodes={"z": ["z[0]", "z[1]"]})
        gains.append((score.local_score("z", ("a",)) - score.local_score("z", ()),
                      score.local_score("b", ("z",)) - score.local_score("b", ())))
    np.testing.assert_allclose(gains[0], gains[1], rtol=1e-9)
    assert gains[0][0] > 0 and gains[0][1] > 0
    # as a child: ML residual covariance, k(p + 1) + k(k + 1)/2 parameters
    score = GLMBIC(frames[0], vector_nodes={"z": ["z[0]", "z[1]"]})
    y = frames[0][["z[0]", "z[1]"]].to_numpy()
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    design = np.column_stack([np.ones(n), (a - a.mean()) / a.std()])
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    log_lik = -0.5 * n * (2 * np.log(2 * np.pi) + np.linalg.slogdet(residual.T @ residual / n)[1]
                          + 2)
    assert score.local_score("z", ("a",)) == pytest.approx(log_lik - 7 / 2 * np.log(n),
                                                           rel=1e-9)
