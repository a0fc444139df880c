"""Counterfactuals by abduction, action and prediction (Pearl's three steps) on particles.

Abduction: ``particles.propose`` with all of a patient's factual evidence
(outcome included) gives weighted particles of their unobserved nodes; for every node on a
path from an intervened node to the target, the exogenous noise consistent with the
particle's factual value is drawn from its posterior:

- continuous: eps = x - mean (exact); latent: eps = z - eta (exact);
- binary / ordinal / count: a uniform u on the factual value's interval of the CDF (the
  monotone coupling: a patient who responds at a lower dose responds at a higher one);
- categorical: Gumbel-max noise given the factual class (Oberst & Sontag 2019);
- survival (Weibull AFT): E = (t / scale)^shape for an event, E = (c / scale)^shape + Exp(1)
  when censored at c (memorylessness of the exponential).

Action and prediction: intervened nodes take their new values, and every node downstream is
recomputed from its new parents with the same noise. The target is Rao-Blackwellised where
the noise can be integrated in closed form (binary, ordinal, censored survival), so each
particle carries a probability rather than a 0/1 draw.

Shapes as in ``particles``: globals (S, 1, ...), particles (S, L, n[, width]).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from bayesrad.errors import ModelError
from bayesrad.model.compile import Backend, Layout, node_dist, walk

# Largest count the inverse CDF of a count node looks at (beyond it the CDF is 1 here).
_MAX_COUNT = 500


def counterfactual_pass(layout: Layout, g: dict, d: dict, values: Mapping, target: str,
                        do: Mapping, shift: Mapping, be: Backend) -> dict:
    """The counterfactual of ``target`` under ``do`` / ``shift`` (model scale), per particle.

    ``values``: factual particle values and ``"__eta__"`` from ``particles.propose`` run on
    the same ``d`` with all factual evidence. Returns ``{"eta": cf linear predictor,
    "value": cf draw (continuous, count, categorical codes, survival time on the model
    scale; else None), "probs": Rao-Blackwellised probabilities (binary: P(1), (S, L, n);
    ordinal: (S, L, n, K); else None)}``.
    """
    downstream: set[str] = set()
    for node in (*do, *shift):
        downstream |= layout.graph.descendants(node)
    if target not in downstream:
        raise ModelError(f"counterfactual: no intervened node ({sorted({*do, *shift})}) has a "
                         f"path to {target!r}, so its counterfactual is its factual value")
    answer = {}

    def visit(w, c: str):
        # the twin world: the factual value of every node not downstream of an intervention
        # (its noise is unchanged and so is its value), recomputed with the factual noise below
        factual = values.get(c, w.data(c)[0])
        if c in shift or c not in downstream:
            return factual                # a shifted node: the walk adds the shift
        eta_cf = w.eta(c)
        if c == target:
            answer.update(_target(layout, c, g, d, factual, values["__eta__"][c], eta_cf, be))
            return None
        return _recompute(layout, c, g, factual, values["__eta__"][c], eta_cf, be)

    # the target's ancestors come before it in topological order: it is the walk's last node
    walk(layout, g, d, be, visit, do=do, shift=shift,
         nodes=layout.graph.ancestors(target) | {target})
    if not answer:
        raise ModelError(f"counterfactual: target {target!r} was not reached")
    return answer


def _uniform_like(t: torch.Tensor) -> torch.Tensor:
    return torch.rand(t.shape, dtype=t.dtype).clamp(1e-7, 1 - 1e-7)


def _recompute(layout, c, g, factual, eta_f, eta_cf, be):
    """The counterfactual value of a non-target node from its factual value (noise drawn
    from its posterior) and its counterfactual linear predictor."""
    kind = layout.kind[c]
    if kind == "continuous":
        return eta_cf[..., 0] + (factual - eta_f[..., 0])
    if kind == "latent":
        return factual + (eta_cf - eta_f)
    if kind == "binary":
        p_f, p_cf = torch.sigmoid(eta_f[..., 0]), torch.sigmoid(eta_cf[..., 0])
        p_f, p_cf, factual = torch.broadcast_tensors(p_f, p_cf, factual)
        u = _uniform_like(p_f)
        u = torch.where(factual > 0.5, 1.0 - p_f + u * p_f, u * (1.0 - p_f))
        return (u >= 1.0 - p_cf).to(p_f.dtype)
    if kind == "ordinal":
        lower, upper, cdf_cf = _ordinal_interval(layout, c, g, factual, eta_f, eta_cf)
        u = lower + _uniform_like(lower) * (upper - lower)
        return (u[..., None] >= cdf_cf).sum(-1)
    if kind == "count":
        lower, upper, cdf_cf = _count_interval(layout, c, g, factual, eta_f, eta_cf, be)
        u = lower + _uniform_like(lower) * (upper - lower)
        return (u[..., None] >= cdf_cf).sum(-1).to(lower.dtype)
    if kind == "categorical":
        return _gumbel_counterfactual(factual, eta_f, eta_cf).argmax(-1)
    raise ModelError(f"counterfactual: node {c!r} of kind {kind!r} cannot lie between an "
                     "intervention and the target")


def _target(layout, c, g, d, factual, eta_f, eta_cf, be) -> dict:
    kind = layout.kind[c]
    out = {"eta": eta_cf, "value": None, "probs": None}
    if kind == "binary":
        p_f, p_cf = torch.sigmoid(eta_f[..., 0]), torch.sigmoid(eta_cf[..., 0])
        # P(y' = 1 | u on the factual interval): the overlap of [1 - p', 1) with it
        on = torch.minimum(p_f, p_cf) / p_f.clamp_min(1e-12)
        off = (p_cf - p_f).clamp_min(0.0) / (1.0 - p_f).clamp_min(1e-12)
        out["probs"] = torch.where(factual > 0.5, on, off)
    elif kind == "ordinal":
        lower, upper, cdf_cf = _ordinal_interval(layout, c, g, factual, eta_f, eta_cf)
        out["probs"] = _interval_overlap(lower, upper, cdf_cf)
    elif kind == "continuous":
        out["value"] = eta_cf[..., 0] + (factual - eta_f[..., 0])
    elif kind == "count":
        lower, upper, cdf_cf = _count_interval(layout, c, g, factual, eta_f, eta_cf, be)
        u = lower + _uniform_like(lower) * (upper - lower)
        out["value"] = (u[..., None] >= cdf_cf).sum(-1).to(lower.dtype)
    elif kind == "categorical":
        out["value"] = _gumbel_counterfactual(factual, eta_f, eta_cf).argmax(-1)
    elif kind == "survival":
        x, m, event = d[f"x:{c}"], d[f"m:{c}"], d[f"e:{c}"]
        shape = g[f"{c}.shape"][..., None]
        z = (torch.where(m, x, 1.0) / eta_f[..., 0].exp()) ** shape
        exp_draw = -torch.log(_uniform_like(z))
        noise = torch.where(m & (event > 0.5), z, torch.where(m, z + exp_draw, exp_draw))
        out["value"] = eta_cf[..., 0].exp() * noise ** (1.0 / shape)
    return out


def _ordinal_interval(layout, c, g, factual, eta_f, eta_cf):
    """CDF interval [F(y-1), F(y)) of the factual level y, and the counterfactual CDF at
    every cutpoint (..., K-1)."""
    cuts = layout.cutpoints(g, c, Backend("pyro"))[..., None, :]
    cdf_f = torch.sigmoid(cuts - eta_f)                              # (..., n, K-1)
    cdf_cf = torch.sigmoid(cuts - eta_cf)
    pad0 = torch.zeros_like(cdf_f[..., :1])
    full = torch.cat([pad0, cdf_f, torch.ones_like(pad0)], -1)       # (..., n, K+1)
    full, level = torch.broadcast_tensors(full, factual.long()[..., None])
    level = level[..., :1]
    lower = torch.gather(full, -1, level)[..., 0]
    upper = torch.gather(full, -1, level + 1)[..., 0]
    return lower, upper, torch.broadcast_to(cdf_cf, lower.shape + cdf_cf.shape[-1:])


def _interval_overlap(lower, upper, cdf_cf):
    """P(level j) for u uniform on [lower, upper): overlap with [F'(j-1), F'(j))."""
    pad0 = torch.zeros_like(cdf_cf[..., :1])
    edges = torch.cat([pad0, cdf_cf, torch.ones_like(pad0)], -1)
    lo, hi = edges[..., :-1], edges[..., 1:]
    width = (upper - lower).clamp_min(1e-12)[..., None]
    overlap = (torch.minimum(hi, upper[..., None]) - torch.maximum(lo, lower[..., None]))
    return overlap.clamp_min(0.0) / width


def _count_interval(layout, c, g, factual, eta_f, eta_cf, be):
    """CDF interval [F(y-1), F(y)) of the factual count y, and the counterfactual CDF at
    0..k_max (..., k_max + 1), k_max well above the counts seen."""
    k_max = int(min(_MAX_COUNT, max(20.0, float(torch.as_tensor(factual).max()) * 3 + 20)))
    fam_f = node_dist(layout, c, g, eta_f, be)
    fam_cf = node_dist(layout, c, g, eta_cf, be)
    grid = torch.arange(k_max + 1, dtype=eta_f.dtype).reshape((-1,) + (1,) * len(fam_f.batch_shape))
    cdf_f = torch.cumsum(fam_f.log_prob(grid).exp(), 0).movedim(0, -1)
    cdf_cf = torch.cumsum(fam_cf.log_prob(grid).exp(), 0).movedim(0, -1)
    below = torch.cat([torch.zeros_like(cdf_f[..., :1]), cdf_f[..., :-1]], -1)   # F(k - 1)
    below, level = torch.broadcast_tensors(below, factual.long().clamp_max(k_max)[..., None])
    level = level[..., :1]
    lower = torch.gather(below, -1, level)[..., 0]
    upper = torch.gather(torch.broadcast_to(cdf_f, below.shape), -1, level)[..., 0]
    return lower, upper, torch.broadcast_to(cdf_cf, lower.shape + cdf_cf.shape[-1:])


def _gumbel_counterfactual(factual, eta_f, eta_cf):
    """Counterfactual logits + posterior Gumbel noise given the factual class (..., n, K)."""
    logits_f = torch.cat([torch.zeros_like(eta_f[..., :1]), eta_f], -1)
    logits_cf = torch.cat([torch.zeros_like(eta_cf[..., :1]), eta_cf], -1)
    logits_f, logits_cf = torch.broadcast_tensors(logits_f, logits_cf)
    level = torch.broadcast_to(factual.long()[..., None], logits_f.shape[:-1] + (1,))
    gumbel = -torch.log(-torch.log(_uniform_like(logits_f)))
    top = (torch.logsumexp(logits_f, -1, keepdim=True)
           - torch.log(-torch.log(_uniform_like(logits_f[..., :1]))))
    # the others are Gumbel(logit) truncated below the maximum
    others = -torch.log(torch.exp(-top) + torch.exp(-(logits_f + gumbel)))
    hot = torch.zeros_like(logits_f).scatter(-1, level, 1.0) > 0.5
    posterior = torch.where(hot, top.expand_as(logits_f), others)
    return logits_cf + (posterior - logits_f)
