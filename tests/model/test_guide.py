"""The amortised guide of the per-patient latents against the model's own log density: exact
where the conditional is Gaussian, the Laplace approximation (mode and curvature) elsewhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine

from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.compile import MISSING, Backend, design_arrays, make_model
from bayesrad.model.guide import local_guide

CHILD_KINDS = {
    "y_cont": NodeSpec("y_cont", "continuous"),
    "y_bin": NodeSpec("y_bin", "binary"),
    "y_ord": NodeSpec("y_ord", "ordinal", levels=[0, 1, 2]),
    "y_cat": NodeSpec("y_cat", "categorical", levels=["a", "b", "c"]),
    "y_pois": NodeSpec("y_pois", "count"),
    "y_nb": NodeSpec("y_nb", "count", prior={"family": "negbinom"}),
    "y_os": NodeSpec("y_os", "survival", event="y_os_event"),
}


def _setup(children, n=6, seed=0, missing_x=False):
    """A latent z (k=2, parent x, 5 block columns) whose children are ``children``; x is a
    continuous root that also has a child y_cont2 (so a missing x is imputed by the guide)."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i}" for i in range(n)]
    x = rng.normal(size=n)
    if missing_x:
        x[::2] = np.nan
    data = {"x": x, "y_cont2": rng.normal(size=n), "y_cont": rng.normal(size=n),
            "y_bin": rng.integers(0, 2, n).astype(float), "y_ord": rng.integers(0, 3, n),
            "y_cat": rng.choice(["a", "b", "c"], n), "y_pois": rng.poisson(3.0, n).astype(float),
            "y_nb": rng.poisson(5.0, n).astype(float), "y_os": rng.exponential(1.0, n) + 0.1,
            "y_os_event": rng.integers(0, 2, n).astype(float)}
    clinical = pd.DataFrame(data, index=ids)
    block = pd.DataFrame(rng.normal(size=(n, 5)), index=ids, columns=[f"c{j}" for j in range(5)])
    block.iloc[1] = np.nan      # a patient without the block
    nodes = [NodeSpec("x", "continuous"), NodeSpec("y_cont2", "continuous"),
             NodeSpec("z", "latent", block="block", latent_dim=2)]
    nodes += [CHILD_KINDS[c] for c in children]
    graph = Graph(nodes, [("x", "z"), ("x", "y_cont2")] + [("z", c) for c in children]
                  + [("x", c) for c in children if c != "y_cont"])
    model = HybridBN(graph, num_steps=1, num_threads=1).fit(
        {"clinical": clinical, "block": block})
    layout = model.layout_
    be = Backend("pyro")
    d = design_arrays(layout, model.train_design_, be, dtype=torch.float64)
    torch.manual_seed(seed)
    g = {s.name: s.prior_dist(be).sample().double() for s in layout.sites}
    # prior draws of the loadings can be tiny; make the block informative but not decisive
    g["z.col_sd"] = torch.full_like(g["z.col_sd"], 1.5)
    return layout, be, d, g


def _log_joint(layout, be, d, g, values):
    """log p(data, latents = values | globals) from the compiled model itself."""
    model = make_model(layout, be, d["one"].shape[0])
    conditioned = poutine.condition(model, data={**g, **values})
    trace = poutine.trace(conditioned).get_trace(d)
    return trace.log_prob_sum()


def _guide_q(layout, be, d, g, newton_steps):
    sites = {}

    def draw(name, fn):
        sites[name] = fn
        return fn.mean

    with torch.no_grad():
        local_guide(layout, g, d, be, draw, newton_steps=newton_steps)
    return sites


def _mode_and_hessian(layout, be, d, g, start: dict, free: dict | None = None):
    """Newton's method on the model's log density in the latent sites ``start`` (jointly):
    the mode per site and the negative Hessian over all of them, flattened in that order.
    ``free[name]``: a boolean mask of the entries that vary (default: all); the others stay
    at their ``start`` values and are left out of the Hessian (a masked site's entries do
    not enter the density)."""
    names = list(start)
    free = {k: (free or {}).get(k, torch.ones_like(start[k], dtype=torch.bool)) for k in names}
    sizes = [int(free[k].sum()) for k in names]

    def fill(flat):
        values = {}
        for k, piece in zip(names, torch.split(flat, sizes)):
            v = start[k].clone()
            v[free[k]] = piece
            values[k] = v
        return values

    def f(flat):
        return _log_joint(layout, be, d, g, fill(flat))

    flat = torch.cat([start[k][free[k]] for k in names])
    for _ in range(12):   # quadratic convergence from the guide's mean
        grad = torch.autograd.functional.jacobian(f, flat)
        flat = flat - torch.linalg.solve(torch.autograd.functional.hessian(f, flat), grad)
    return fill(flat), -torch.autograd.functional.hessian(f, flat)


def _block_diagonal(prec):
    """(n, k, k) per-patient precisions as one (n*k, n*k) block-diagonal matrix."""
    return torch.block_diag(*prec)


def test_gaussian_children_give_the_exact_conditional():
    layout, be, d, g = _setup(["y_cont"])
    q = _guide_q(layout, be, d, g, newton_steps=0)["z"]
    # the log density is quadratic in z: one Newton step from anywhere lands on the mean
    mode, neg_hess = _mode_and_hessian(layout, be, d, g, {"z": torch.zeros_like(q.mean)})
    torch.testing.assert_close(q.mean, mode["z"], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(_block_diagonal(q.precision_matrix), neg_hess, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("child", ["y_bin", "y_ord", "y_cat", "y_pois", "y_nb", "y_os"])
def test_glm_children_give_the_laplace_approximation(child):
    layout, be, d, g = _setup(["y_cont", child], seed=1)
    q = _guide_q(layout, be, d, g, newton_steps=30)["z"]
    mode, neg_hess = _mode_and_hessian(layout, be, d, g, {"z": q.mean.clone()})
    mode = mode["z"]
    torch.testing.assert_close(q.mean, mode, rtol=1e-6, atol=1e-6)
    # the guide's precision is the curvature at its last expansion point (the mode here)
    torch.testing.assert_close(_block_diagonal(q.precision_matrix), neg_hess, rtol=1e-5, atol=1e-6)
    # the default two steps from the Gaussian part already land close to the mode
    near = _guide_q(layout, be, d, g, newton_steps=2)["z"]
    assert (near.mean - mode).abs().max() < 0.05 * mode.abs().max() + 1e-3


def test_missing_continuous_parent_is_drawn_from_its_exact_conditional():
    # x -> z and x -> y_cont2, all linear-Gaussian: q(x) q(z | x) is the exact posterior
    layout, be, d, g = _setup([], seed=2, missing_x=True)
    assert layout.impute == {"x"}
    sites = _guide_q(layout, be, d, g, newton_steps=0)
    q, missing = sites["x" + MISSING], ~d["m:x"]
    n = int(missing.sum())
    # the imputation site is masked to the patients missing x, in the model and in the guide
    assert (q.log_prob(q.mean)[~missing] == 0).all()
    mode, neg_hess = _mode_and_hessian(layout, be, d, g, {"x" + MISSING: q.mean.clone(),
                                                          "z": sites["z"].mean.clone()},
                                       free={"x" + MISSING: missing})
    # x's marginal posterior precision: the Schur complement of z's block
    h_xx, h_xz, h_zz = neg_hess[:n, :n], neg_hess[:n, n:], neg_hess[n:, n:]
    marginal = h_xx - h_xz @ torch.linalg.solve(h_zz, h_xz.T)
    torch.testing.assert_close(q.mean[missing], mode["x" + MISSING][missing], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(q.base_dist.scale[missing] ** -2, torch.diagonal(marginal),
                               rtol=1e-8, atol=1e-8)
    # and z given the drawn x (here its mean) is z's exact conditional
    torch.testing.assert_close(sites["z"].mean, mode["z"], rtol=1e-8, atol=1e-8)


def test_guide_runs_under_svi_with_every_child_kind():
    layout, be, d, g = _setup(list(CHILD_KINDS), n=40, seed=3)
    pyro.set_rng_seed(0)
    sites = _guide_q(layout, be, d, g, newton_steps=2)
    assert torch.isfinite(sites["z"].mean).all()
    assert torch.isfinite(torch.linalg.cholesky(sites["z"].precision_matrix)).all()


@pytest.mark.parametrize("pattern", ["whole_rows", "scattered"])
def test_block_likelihood_equals_the_columnwise_normal_density(pattern):
    """The factor likelihood from (P, r) sums equals sum_j log N(x_j; mu_j + L_j . z, sd_j^2)
    over observed columns, with leading sample dimensions, for both ways of forming P."""
    from bayesrad.model.compile import block_loglik

    layout, be, d, g = _setup(["y_cont"], n=8, seed=4)
    rng = np.random.default_rng(4)
    x, m = d["x:z"].clone(), d["m:z"].clone()
    if pattern == "scattered":
        m = m & torch.as_tensor(rng.random(tuple(m.shape)) < 0.7)
        x = torch.where(m, x, 0.0)
    torch.manual_seed(4)
    draws = {k: torch.stack([v, v * 1.1 + 0.05]) for k, v in g.items()}   # two samples
    z = torch.randn(2, 8, 2, dtype=torch.float64)
    loc = draws["z.col_mean"][:, None, :] + z @ layout.loadings(draws, "z", be)
    direct = torch.distributions.Normal(loc, draws["z.col_sd"][:, None, :]).log_prob(x)
    expected = torch.where(m, direct, 0.0).sum(-1)
    got = block_loglik(layout, "z", draws, z, x, m, be, d["one"])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
