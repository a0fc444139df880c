"""The vectorised ELBO of ``svi.py`` against Pyro's own ``Trace_ELBO`` / ``TraceEnum_ELBO`` on
the same model and guide, at the same random draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from bayesrad.model.compile import Backend, design_arrays, make_model
from bayesrad.model.guide import GlobalPosterior, make_guide
from bayesrad.model.svi import ClippedAdam, Objective, _FlatPrior, elbo_particles


def _cohort(n=40, seed=0, missing_binary=False):
    rng = np.random.default_rng(seed)
    ids = [f"P{i:02d}" for i in range(n)]
    age = rng.normal(65, 9, n)
    age[::7] = np.nan                                   # a continuous parent imputed
    smoker = rng.integers(0, 2, n).astype(float)
    if missing_binary:
        smoker[1::5] = np.nan                           # a binary parent enumerated
    clinical = pd.DataFrame({
        "age_years": age, "smoker": smoker, "stage": rng.integers(1, 4, n),
        "histology": rng.choice(["adeno", "squamous", "large"], n),
        "nodes": rng.poisson(2.0, n).astype(float), "dose": rng.normal(60, 4, n),
        "lc": rng.integers(0, 2, n).astype(float), "os": rng.exponential(500.0, n) + 1.0,
        "os_event": rng.integers(0, 2, n).astype(float),
        # a heavy-tailed feature, missing for some patients and a parent of lc: the
        # Student-t family, its masked imputation site and its Gaussian q in the guide
        "texture": np.where(np.arange(n) % 7 == 2, np.nan, rng.standard_t(3, n))}, index=ids)
    block = pd.DataFrame(rng.normal(size=(n, 6)), index=ids, columns=[f"f{j}" for j in range(6)])
    block = block.drop(index=ids[::4])                  # patients without imaging
    nodes = [NodeSpec("age_years", "continuous"), NodeSpec("smoker", "binary"),
             NodeSpec("histology", "categorical"), NodeSpec("stage", "ordinal"),
             NodeSpec("img", "latent", block="imaging", latent_dim=2),
             NodeSpec("nodes", "count", prior={"family": "negbinom"}),
             NodeSpec("dose", "continuous"), NodeSpec("lc", "binary"),
             NodeSpec("os", "survival", event="os_event"),
             NodeSpec("texture", "continuous", prior={"family": "student_t"})]
    edges = [("age_years", "img"), ("smoker", "img"), ("histology", "img"), ("img", "stage"),
             ("img", "nodes"), ("stage", "dose"), ("img", "dose"), ("dose", "lc"), ("img", "lc"),
             ("smoker", "lc"), ("age_years", "os"), ("lc", "os"), ("img", "os"),
             ("img", "texture"), ("texture", "lc")]
    return Graph(nodes, edges), {"clinical": clinical, "imaging": block}


def _pyro_and_ours(missing_binary, family):
    graph, blocks = _cohort(missing_binary=missing_binary)
    fitted = HybridBN(graph, num_steps=1, num_threads=1).fit(blocks)
    layout = fitted.layout_
    be = Backend("pyro")
    data = design_arrays(layout, fitted.train_design_, be, dtype=torch.float64)
    posterior = GlobalPosterior(layout, family).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in posterior.parameters():     # away from the start, M included
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    n = fitted.train_design_.n
    loss = TraceEnum_ELBO(max_plate_nesting=1) if missing_binary else Trace_ELBO()
    values = []
    for seed in range(3):
        pyro.set_rng_seed(seed)
        theirs = loss.loss(make_model(layout, be, n), make_guide(layout, posterior, n), data)
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            ours = -elbo_particles(layout, posterior, _FlatPrior(layout), data, 1, 1.0)
        values.append((theirs, float(ours[0])))
    return layout, values


@pytest.mark.parametrize("missing_binary, family", [(False, "block"), (False, "normal"),
                                                    (True, "block")])
def test_elbo_equals_pyros_at_the_same_draws(missing_binary, family):
    layout, values = _pyro_and_ours(missing_binary, family)
    assert ("smoker" in layout.impute) == missing_binary and "age_years" in layout.impute
    for theirs, ours in values:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-7)
    # the draws differ between seeds, so the agreement is not about one fixed point
    assert len({round(ours, 6) for _, ours in values}) == 3


def test_minibatches_estimate_the_same_elbo():
    graph, blocks = _cohort(n=60)
    fitted = HybridBN(graph, num_steps=1, num_threads=1).fit(blocks)
    layout = fitted.layout_
    data = design_arrays(layout, fitted.train_design_, Backend("pyro"), dtype=torch.float64)
    posterior = GlobalPosterior(layout, "normal").double()
    prior = _FlatPrior(layout)
    torch.manual_seed(0)
    with torch.no_grad():
        full = elbo_particles(layout, posterior, prior, data, 1000, 1.0)
        batches = []
        for _ in range(25):
            index = torch.randperm(60)[:15]
            batch = {k: v[index] for k, v in data.items()}
            batches.append(elbo_particles(layout, posterior, prior, batch, 40, 4.0).mean())
        batches = torch.stack(batches)
        # the loss of a step is the particles' mean ELBO per patient, negated
        step = Objective(layout, posterior, data, n_particles=3, batch_size=15)()
    # both are unbiased for the same ELBO; the particles of one minibatch share its patients,
    # so the minibatches (not the particles) are the independent draws of the second mean.
    # Tolerance: 4 standard errors of the difference of the two means
    se = (full.var() / full.numel() + batches.var() / batches.numel()) ** 0.5
    assert abs(full.mean() - batches.mean()) < 4 * se
    assert torch.isfinite(step) and step.shape == ()


def test_clipped_adam_iterates_equal_pyros():
    """The optimiser written out (to spare torch.optim's 1.5 s import of torch._dynamo) takes
    Pyro's ClippedAdam steps exactly: clipping, learning-rate decay, a parameter left without
    a gradient for some steps (its own step count)."""
    from pyro.optim.clipped_adam import ClippedAdam as PyroClippedAdam

    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, generator=gen), torch.randn(3, 2, generator=gen)]
    target = [torch.randn(5, generator=gen) * 30, torch.randn(3, 2, generator=gen)]
    runs = []
    for cls in (ClippedAdam, PyroClippedAdam):
        params = [p.clone().requires_grad_(True) for p in start]
        optim = cls(params, lr=0.05, lrd=0.999, clip_norm=10.0)
        for step in range(60):
            optim.zero_grad()
            used = params if step % 3 else params[:1]     # the second one idle every 3rd step
            loss = sum(((p - t) ** 2).sum() for p, t in zip(used, target))
            loss.backward()
            optim.step()
        runs.append([p.detach() for p in params])
    for ours, pyros in zip(*runs):
        assert torch.equal(ours, pyros)
