"""``HybridBN.predict(do=...)`` and ``counterfactual`` pinned to Pyro's own machinery on the
compiled model (``compile.make_model``), at the SAME posterior draws of the globals, as
``test_svi.py`` pins the ELBO:

- interventional predictions against ``pyro.poutine.do`` + ``pyro.infer.Predictive`` (with
  ``poutine.uncondition`` so that the target is drawn, and the patient's evidence fixed through
  Predictive's conditioning);
- counterfactuals against a hand-written twin-world computation on a linear-Gaussian graph:
  the factual and the intervened world are two traces of the compiled model under
  ``poutine.do`` that share each node's noise, ``x_cf = mu_cf + (x - mu_f)`` (abduction of the
  noise of a Normal node with a common sd), which is also the closed form of this graph.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive

from bayesrad.errors import ConvergenceWarning
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.compile import Backend, design_arrays, make_model

S = 500    # posterior draws of the globals in the Monte Carlo comparisons


def _mixed(n=60, seed=0):
    """a (continuous) -> img (latent block) -> b (binary) -> y (continuous), with a -> b,
    a -> y, img -> y: every node family that the local pass handles by hand."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:02d}" for i in range(n)]
    a = rng.normal(50, 10, n)
    z = 0.08 * (a - 50) + rng.normal(size=n)
    b = (rng.random(n) < 1 / (1 + np.exp(-(z + 0.05 * (a - 50))))).astype(float)
    y = 2.0 + 1.5 * b + 0.8 * z + 0.05 * a + rng.normal(0, 0.5, n)
    clinical = pd.DataFrame({"a": a, "b": b, "y": y}, index=ids)
    block = pd.DataFrame(z[:, None] * rng.uniform(0.5, 1, 4) + rng.normal(0, .5, (n, 4)),
                         index=ids, columns=[f"f{j}" for j in range(4)])
    graph = Graph([NodeSpec("a", "continuous"), NodeSpec("img", "latent", block="imaging",
                                                         latent_dim=1),
                   NodeSpec("b", "binary"), NodeSpec("y", "continuous")],
                  [("a", "img"), ("img", "b"), ("a", "b"), ("b", "y"), ("img", "y"), ("a", "y")])
    return graph, {"clinical": clinical, "imaging": block}


@pytest.fixture(scope="module")
def mixed():
    graph, blocks = _mixed()
    with warnings.catch_warnings():      # a short fit: the pinning holds at any posterior
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HybridBN(graph, num_steps=150, min_steps=150, num_threads=1, seed=3).fit(blocks)
    # three new patients: a known, no imaging, b and y unknown
    new = {"clinical": pd.DataFrame({"a": [35.0, 50.0, 68.0], "b": np.nan, "y": np.nan},
                                    index=["N1", "N2", "N3"])}
    return model, new


def _predictive(model, data, target, do, seed):
    """``target``'s draws (S, n) on the model scale by Predictive on the compiled model under
    ``poutine.do(do)``, at the globals ``model.predict`` used (posterior_samples(S, seed))."""
    layout, be = model.layout_, Backend("pyro")
    design = model.preprocessor_.transform(data)
    arrays = design_arrays(layout, design, be, dtype=torch.float32)
    draws = model.posterior_samples(S, seed)
    evidence = {c: arrays[f"x:{c}"].expand(S, design.n) for c in layout.order
                if layout.kind[c] not in ("latent", "group") and c not in do
                and bool(arrays[f"m:{c}"].all())}
    do_model = {k: model._to_model_scale(k, v, design.n) for k, v in do.items()}
    # uncondition: every observed site is drawn (the target among them), then Predictive
    # conditions the evidence back on its observed values
    program = poutine.uncondition(poutine.do(make_model(layout, be, design.n), data=do_model))
    pyro.set_rng_seed(seed + 7)
    with torch.no_grad(), pyro.validation_enabled(False):
        out = Predictive(program, posterior_samples={**draws, **evidence},
                         return_sites=[target], parallel=False)(arrays)
    return out[target].reshape(S, design.n).double(), design


def test_predict_under_do_matches_pyro_do_and_predictive(mixed):
    model, new = mixed
    st = model.preprocessor_.stats_["y"]
    for value in (0, 1):
        ours = model.predict(new, "y", n_samples=S, do={"b": value}, seed=11)
        theirs, _ = _predictive(model, new, "y", {"b": value}, seed=11)
        theirs = theirs * st["sd"] + st["mean"]
        mean, sd = theirs.mean(0).numpy(), theirs.std(0).numpy()
        # Monte Carlo tolerance: 4.5 standard errors of the difference of two independent
        # means over S draws (the globals are shared, so this is loose); sd within 15% (the
        # standard error of the difference of two sample sds is sd / sqrt(S) = 4.5%)
        assert (np.abs(ours["mean"].to_numpy() - mean) < 4.5 * sd * np.sqrt(2 / S)).all()
        np.testing.assert_allclose(ours["sd"].to_numpy(), sd, rtol=0.15)
    # the intervention moves the prediction (so agreement is not about an ignored do)
    effect = (model.predict(new, "y", n_samples=S, do={"b": 1}, seed=11)["mean"]
              - model.predict(new, "y", n_samples=S, do={"b": 0}, seed=11)["mean"])
    assert (effect > 0.5).all()


def test_binary_prediction_through_a_latent_block_matches_predictive(mixed):
    model, new = mixed
    data = {"clinical": new["clinical"].drop(columns="a")}   # a intervened on, not observed
    ours = model.predict(data, "b", n_samples=S, do={"a": 70.0}, seed=5)
    theirs, _ = _predictive(model, data, "b", {"a": 70.0}, seed=5)
    p = theirs.mean(0).numpy()
    # binomial Monte Carlo error of Predictive's 0/1 draws (ours averages probabilities)
    assert (np.abs(ours["mean"].to_numpy() - p) < 4.5 * np.sqrt(p * (1 - p) / S) + 1e-3).all()
    low = model.predict(data, "b", n_samples=S, do={"a": 30.0}, seed=5)["mean"]
    assert not np.allclose(low, ours["mean"], atol=0.02)


# ---------------------------------------------------------------- counterfactuals
def _chain(n=80, seed=1):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:02d}" for i in range(n)]
    a = rng.normal(60, 8, n)
    m = 10 + 0.5 * a + rng.normal(0, 3, n)
    y = 5 - 0.4 * m + 0.1 * a + rng.normal(0, 2, n)
    graph = Graph([NodeSpec("a", "continuous"), NodeSpec("m", "continuous"),
                   NodeSpec("y", "continuous")], [("a", "m"), ("m", "y"), ("a", "y")])
    return graph, {"clinical": pd.DataFrame({"a": a, "m": m, "y": y}, index=ids)}


@pytest.fixture(scope="module")
def chain():
    graph, blocks = _chain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HybridBN(graph, num_steps=150, min_steps=150, num_threads=1, seed=2).fit(blocks)
    return model, {"clinical": blocks["clinical"].iloc[:4]}


def _twin(model, data, target, do, n_draws, seed):
    """Counterfactual ``target`` (S, n), original units, by two worlds of the compiled model
    sharing the noise: a node downstream of the intervention takes
    ``x_cf = mu_cf(parents_cf) + (x_f - mu_f(parents_f))`` (Normal nodes, common sd)."""
    layout, be = model.layout_, Backend("pyro")
    design = model.preprocessor_.transform(data)
    arrays = design_arrays(layout, design, be, dtype=torch.float32)
    draws = model.posterior_samples(n_draws, seed)
    do_model = {k: model._to_model_scale(k, v, design.n) for k, v in do.items()}
    program = make_model(layout, be, design.n)
    out = []
    for s in range(n_draws):
        g = {k: v[s] for k, v in draws.items()}
        factual = poutine.trace(poutine.condition(program, g)).get_trace(arrays)
        world = dict(do_model)
        for c in layout.order:              # topological: parents_cf are known before c
            if c in world:
                continue
            cf = poutine.trace(poutine.do(poutine.condition(program, g), data=world)
                               ).get_trace(arrays)
            shift = cf.nodes[c]["fn"].mean - factual.nodes[c]["fn"].mean
            world[c] = arrays[f"x:{c}"] + shift
        out.append(world[target])
    st = model.preprocessor_.stats_[target]
    return torch.stack(out).double() * st["sd"] + st["mean"]


@pytest.mark.parametrize("do", [{"m": 30.0}, {"a": 45.0}])
def test_counterfactual_matches_a_twin_world_model(chain, do):
    model, data = chain
    n_draws = 200
    ours = model.counterfactual(data, "y", do=do, n_samples=n_draws, seed=4)
    theirs = _twin(model, data, "y", do, n_draws, seed=4)
    # every node observed: the counterfactual is deterministic given the globals, so the two
    # agree to float32 rounding, draw by draw (mean and sd over the same draws)
    np.testing.assert_allclose(ours["mean"].to_numpy(), theirs.mean(0).numpy(), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(ours["sd"].to_numpy(), theirs.std(0).numpy(), rtol=1e-2,
                               atol=1e-3)
    np.testing.assert_allclose(ours["factual"].to_numpy(), data["clinical"]["y"].to_numpy(),
                               rtol=1e-6)


def test_counterfactual_closed_form_of_the_linear_gaussian_chain(chain):
    """y_cf - y = b_my (m' - m) per draw: doing the observed m returns y exactly, and the
    change is linear in m' - m with the posterior mean of the standardised slope."""
    model, data = chain
    m_obs = data["clinical"]["m"].to_numpy()
    same = model.counterfactual({"clinical": data["clinical"].iloc[:1]}, "y",
                                do={"m": float(m_obs[0])}, n_samples=200, seed=4)
    assert same["mean"].iloc[0] == pytest.approx(data["clinical"]["y"].iloc[0], abs=1e-3)
    assert same["sd"].iloc[0] < 1e-3
    one = data["clinical"].iloc[:1]
    d1 = model.counterfactual({"clinical": one}, "y", do={"m": float(m_obs[0]) + 5}, n_samples=200,
                              seed=4)["mean"].iloc[0] - one["y"].iloc[0]
    d2 = model.counterfactual({"clinical": one}, "y", do={"m": float(m_obs[0]) + 10},
                              n_samples=200, seed=4)["mean"].iloc[0] - one["y"].iloc[0]
    assert d2 == pytest.approx(2 * d1, rel=1e-3)
    slope = model.coefficients(n_samples=200).loc[("m", "y")]
    assert d1 / 5 == pytest.approx(float(slope["mean"]), abs=0.02)
