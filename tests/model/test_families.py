"""Likelihood families (``model/families.py``): the Student-t family, added as one class there,
against its definition and on the property it exists for (outliers do not drag the fit).

The ELBO with a Student-t node (observed, missing with an imputation site, a parent of a
binary node) is pinned to Pyro's Trace_ELBO / TraceEnum_ELBO in ``test_svi.py``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from bayesrad.errors import ConvergenceWarning, ModelError
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.compile import Backend
from bayesrad.model.families import FAMILIES, StudentT, family_of


def _contaminated(n=300, seed=0):
    """y = 1 + 0.8 x + N(0, 0.5^2), and 6% of patients (all with x > 1) shifted by -6: a
    gross error pattern (mis-segmented lesions, say) that pulls a Gaussian slope down."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 1.0 + 0.8 * x + rng.normal(0, 0.5, n)
    high = np.flatnonzero(x > 1.0)
    outliers = rng.choice(high, size=int(0.06 * n), replace=False)
    y[outliers] -= 6.0
    ids = [f"P{i:03d}" for i in range(n)]
    return {"clinical": pd.DataFrame({"x": x, "y": y}, index=ids)}


def _slope(blocks, family):
    graph = Graph([NodeSpec("x", "continuous"),
                   NodeSpec("y", "continuous", prior={"family": family})], [("x", "y")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HybridBN(graph, num_steps=1500, min_steps=1500, num_threads=1, seed=0).fit(blocks)
    row = model.coefficients(n_samples=400).loc[("x", "y")]
    return model, row


def test_student_t_keeps_the_slope_that_outliers_drag_from_a_gaussian():
    blocks = _contaminated()
    _, normal = _slope(blocks, "normal")
    t_model, student = _slope(blocks, "student_t")
    # the Gaussian slope is dragged well below the truth (0.8); the t's is not
    assert normal["mean"] < 0.55
    assert abs(student["mean"] - 0.8) < 0.08
    assert student["q05"] < 0.8 < student["q95"]
    # and the data pull the degrees of freedom far below the prior mean of 20
    df = t_model.posterior_samples(400)["y.df"]
    assert float(df.median()) < 6.0


def test_student_t_curvature_is_its_score_and_fisher_information():
    layout = type("L", (), {})()        # the family reads only g for these two
    family = StudentT()
    torch.manual_seed(0)
    g = {"y.sd": torch.tensor(0.7, dtype=torch.float64), "y.df": torch.tensor(4.5, dtype=torch.float64)}
    be = Backend("pyro")
    eta = torch.randn(50, 1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(50, dtype=torch.float64) * 2.0
    m = torch.ones(50, dtype=torch.bool)
    grad, neg_h = family.curvature(layout, "y", g, eta, x, m, {}, be)
    log_p = torch.distributions.StudentT(g["y.df"], eta[..., 0], g["y.sd"]).log_prob(x).sum()
    (auto,) = torch.autograd.grad(log_p, eta)
    torch.testing.assert_close(grad, auto[..., 0])
    # the negative Hessian returned is the expected one (Fisher scoring): the Monte Carlo
    # mean of the observed negative Hessian over x ~ t(df, eta, sd)
    draws = torch.distributions.StudentT(g["y.df"], 0.0, g["y.sd"]).sample((400_000,))
    df, var = g["y.df"], g["y.sd"] ** 2
    observed = (df + 1) * (df * var - draws ** 2) / (df * var + draws ** 2) ** 2
    assert abs(float(observed.mean()) / float(neg_h[0]) - 1.0) < 0.01


def test_an_unknown_family_is_refused_with_the_choices():
    with pytest.raises(ModelError, match=r"node 'texture'.*'cauchy'.*\['normal', 'student_t'\]"):
        family_of("texture", "continuous", {"family": "cauchy"})
    assert set(FAMILIES["count"]) == {"poisson", "negbinom"}


def test_a_missing_student_t_parent_is_marginalised_in_predictions():
    """A Student-t parent missing at prediction is drawn from its own (heavy-tailed)
    conditional, not folded as a Gaussian: with a binary child that depends on it, the
    predicted risk with the parent missing equals the average of the risks given each value
    of the parent, weighted by the parent's predictive distribution."""
    rng = np.random.default_rng(1)
    n = 200
    ids = [f"P{i:03d}" for i in range(n)]
    age = rng.normal(60, 8, n)
    texture = 0.05 * (age - 60) + rng.standard_t(3, n)
    event = (rng.random(n) < 1 / (1 + np.exp(-1.2 * texture))).astype(float)
    blocks = {"clinical": pd.DataFrame({"age": age, "texture": texture, "event": event}, index=ids)}
    graph = Graph([NodeSpec("age", "continuous"),
                   NodeSpec("texture", "continuous", prior={"family": "student_t"}),
                   NodeSpec("event", "binary")], [("age", "texture"), ("texture", "event")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HybridBN(graph, num_steps=600, min_steps=600, num_threads=1, seed=0).fit(blocks)
    new = pd.DataFrame({"age": [60.0], "texture": [np.nan], "event": [np.nan]}, index=["N1"])
    marginal = float(model.predict({"clinical": new}, "event", n_samples=400, seed=5)["mean"].iloc[0])
    # the same risk by hand: texture draws from its t conditional given age, then the mean
    # of sigmoid(coefficients) at the same global draws
    g = model.posterior_samples(400, 5)
    st = model.preprocessor_.stats_
    age_std = (60.0 - st["age"]["mean"]) / st["age"]["sd"]
    loc = g["texture.intercept"][:, 0] + g["texture.coef.age"][:, 0, 0] * age_std
    t_draws = torch.distributions.StudentT(g["texture.df"], loc, g["texture.sd"]).sample((200,))
    eta = g["event.intercept"][:, 0] + g["event.coef.texture"][:, 0, 0] * t_draws
    by_hand = float(torch.sigmoid(eta).mean())
    assert abs(marginal - by_hand) < 0.02
