"""The one walk through the graph (``compile.walk``) that every pass is a visitor of: nodes in
topological order, an intervened node's visitor never called (its incoming edges cut), a shift
added to the visitor's value, ``nodes`` restricting the walk, and each child's linear
predictor reading the encodings of the values set before it."""

from __future__ import annotations

import warnings

import torch

from bayesrad.model import HybridBN
from bayesrad.model.compile import Backend, design_arrays, encode, linear_predictor, walk
from model_fixtures import toy_cohort, toy_graph


def _fitted():
    blocks, _ = toy_cohort(40, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HybridBN(toy_graph(), num_steps=5, seed=0, num_threads=1).fit(blocks)
    layout = model.layout_
    design = model.preprocessor_.transform(blocks)
    d = design_arrays(layout, design, Backend("pyro"), dtype=torch.float32)
    g = {k: v[0] for k, v in model.posterior_samples(1, seed=0).items()}
    return layout, g, d


def test_walk_visits_in_order_cuts_interventions_and_adds_shifts():
    layout, g, d = _fitted()
    be = Backend("pyro")
    seen, etas = [], {}

    def visit(w, c):
        seen.append(c)
        etas[c] = w.eta(c)
        if layout.kind[c] == "latent":
            return torch.zeros(etas[c].shape)
        return None if layout.kind[c] == "survival" else w.data(c)[0]

    do = {"dose_mean_gy": torch.full((40,), 1.5)}
    shift = {"age_years": 0.25}
    w = walk(layout, g, d, be, visit, do=do, shift=shift)
    order = [c for c in layout.order if layout.kind[c] != "group"]
    assert seen == [c for c in order if c not in do]
    assert torch.equal(w.values["dose_mean_gy"], do["dose_mean_gy"])
    assert torch.allclose(w.values["age_years"], d["x:age_years"] + 0.25)
    assert "os_days" not in w.values            # the visitor returned None: no child reads it
    # local_control's predictor reads the intervened dose, not the observed one
    observed = dict(w.enc, dose_mean_gy=encode(layout, "dose_mean_gy", d["x:dose_mean_gy"], be,
                                               d["one"]))
    assert torch.allclose(etas["local_control"],
                          linear_predictor(layout, "local_control", g, w.enc, w.codes, be, d["one"]))
    assert not torch.allclose(etas["local_control"],
                              linear_predictor(layout, "local_control", g, observed, w.codes, be,
                                               d["one"]))


def test_walk_restricted_to_nodes():
    layout, g, d = _fitted()
    seen = []
    walk(layout, g, d, Backend("pyro"), lambda w, c: seen.append(c),
         nodes={"age_years", "dose_mean_gy"})
    assert seen == ["age_years", "dose_mean_gy"]
