"""Weighted particles of the per-patient posterior, and their summaries.

``HybridBN`` answers a question about a patient by drawing S sets of global parameters from
their posterior and, for each set, L particles of the patient's unobserved nodes from the
proposal of ``propose``, in topological order:

- a latent block node from its exact Gaussian conditional given its parents, its own
  observed columns and its observed linear-Gaussian children;
- an unobserved continuous node likewise from its conditional given its parents and its
  observed linear-Gaussian children (so a linear-Gaussian part of the graph is exact);
- any other unobserved node (and the target) from its conditional given its parents.

What the proposal leaves out (non-Gaussian children, children whose other parents are not
known yet) is the particle's log importance weight; weights are self-normalised over the L
particles that share one set of globals. The result targets p(unobserved | all of the
patient's evidence, globals), averaged over the globals' posterior: a patient's evidence
conditions their own nodes, never the globals learnt from the training cohort.

Arrays are (P, n): P = S * L particles (the L particles of one global draw are adjacent),
n patients.
"""

from __future__ import annotations

from collections.abc import Mapping

import math

import numpy as np
import pandas as pd
import torch

from bayesrad.model.compile import (Backend, Layout, encode, latent_marginal_loglik,
                                    latent_posterior, linear_predictor, walk)

# Summaries reported for every posterior quantity (name -> probability).
QUANTILES = {"q025": 0.025, "q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95,
             "q975": 0.975}
# Largest (particles x patients x width) array built at once; patients are processed in
# chunks below it (a 2,000-patient cohort with 16,000 particles would need gigabytes).
_CHUNK_ELEMENTS = 4_000_000


def draw(fn, shape: tuple[int, int, int]):
    """One sample of distribution ``fn`` per particle: its batch shape broadcast to
    (S, L, n) first (a node whose parents are all observed has batch shape (S, 1, n))."""
    batch = tuple(fn.batch_shape)
    target = tuple(np.broadcast_shapes(batch, shape))
    if isinstance(fn, torch.distributions.MultivariateNormal):
        # loc + L eps as a broadcast product: torch's batched matmul would first copy the
        # factor (one per draw) out to every particle
        eps = torch.randn(target + tuple(fn.event_shape), dtype=fn.loc.dtype)
        return fn.loc + (fn.scale_tril * eps[..., None, :]).sum(-1)
    return (fn.expand(target) if target != batch else fn).sample()


def draw_common(fn, shape: tuple[int, int, int]):
    """Like ``draw``, with common random numbers across the patient axis: every row of a
    chunk reuses the same standard-normal / uniform noise per (draw, particle). Rows that
    differ only in some evidence then differ in their answers only through that evidence
    (``bayesrad.explain`` compares coalitions row by row). Normal and multivariate normal
    by reparameterisation, Bernoulli and categorical by inverse CDF; others as ``draw``."""
    batch = tuple(fn.batch_shape)
    target = tuple(np.broadcast_shapes(batch, shape))
    noise_shape = target[:-1] + (1,)
    if isinstance(fn, torch.distributions.MultivariateNormal):
        eps = torch.randn(noise_shape + tuple(fn.event_shape), dtype=fn.loc.dtype)
        return fn.loc + (fn.scale_tril * eps[..., None, :]).sum(-1)
    if isinstance(fn, torch.distributions.Normal):
        return fn.loc + fn.scale * torch.randn(noise_shape, dtype=fn.loc.dtype)
    if isinstance(fn, torch.distributions.Bernoulli):
        return (torch.rand(noise_shape, dtype=fn.probs.dtype) < fn.probs).to(fn.probs.dtype)
    if isinstance(fn, torch.distributions.Categorical):
        u = torch.rand(noise_shape + (1,), dtype=fn.probs.dtype)
        cdf = fn.probs.cumsum(-1)
        return (u > cdf[..., :-1]).sum(-1).expand(target)
    return draw(fn, shape)


def flatten(values: Mapping, shape: tuple[int, int, int], layout: Layout) -> dict:
    """``propose`` values broadcast to (S, L, n[, width]) and reshaped to
    (S * L, n[, width]); the linear predictors under ``"__eta__"`` likewise. Values without
    particle dimensions (an intervention's value, (n,) or (n, k)) are broadcast too."""
    n_draws, n_particles, n = shape

    def one(v, trailing: int):
        v = torch.as_tensor(v)
        v = v.reshape((1,) * (3 + trailing - v.dim()) + tuple(v.shape))
        tail = tuple(v.shape[3:])
        return v.expand(shape + tail).reshape((n_draws * n_particles, n) + tail)

    out = {k: one(v, int(layout.kind.get(k) == "latent")) for k, v in values.items()
           if k != "__eta__"}
    out["__eta__"] = {k: one(v, 1) for k, v in values["__eta__"].items()}
    return out


def normalised_weights(log_weight, shape: tuple[int, int, int]) -> torch.Tensor:
    """Weights (S * L, n) summing to 1 over particles for each patient: softmax within each
    global draw's L particles, each draw then counting 1 / S. ``log_weight`` broadcasts to
    ``shape`` = (S, L, n)."""
    n_draws, n_particles, n = shape
    log_weight = torch.as_tensor(log_weight).double().expand(shape)
    return (torch.softmax(log_weight, dim=1) / n_draws).reshape(n_draws * n_particles, n)


def effective_particles(weights: torch.Tensor, n_draws: int) -> np.ndarray:
    """Mean over global draws of the Kish effective number of particles per draw, per
    patient (L when the weights are flat, 1 when one particle takes all)."""
    w = weights.reshape(n_draws, -1, weights.shape[-1]) * n_draws
    return (1.0 / (w ** 2).sum(1)).mean(0).numpy()


def weighted_quantiles(samples: torch.Tensor, weights: torch.Tensor, probs) -> torch.Tensor:
    """Quantiles (len(probs), n) of (P, n) samples with (P, n) weights (columns sum to 1):
    the smallest sample whose cumulative weight reaches each probability."""
    by_patient = samples.T.contiguous()                         # (n, P): sort along rows
    order = torch.argsort(by_patient, dim=-1)
    cumulative = torch.cumsum(torch.gather(weights.T, -1, order), dim=-1)
    targets = torch.as_tensor(list(probs), dtype=cumulative.dtype) - 1e-12
    index = torch.searchsorted(cumulative, targets.expand(len(by_patient), -1).contiguous())
    index = torch.gather(order, -1, index.clamp_max(by_patient.shape[-1] - 1))
    return torch.gather(by_patient, -1, index).T


def weighted_summary(samples: torch.Tensor, weights: torch.Tensor, index: pd.Index,
                     prefix: str = "", quantiles: Mapping[str, float] = QUANTILES) -> pd.DataFrame:
    """mean, sd and weighted quantiles over the particle dimension of (P, n) samples."""
    samples = samples.double()
    weights = weights.double()
    mean = (weights * samples).sum(0)
    sd = ((weights * (samples - mean) ** 2).sum(0)).clamp_min(0.0).sqrt()
    out = {f"{prefix}mean": mean.numpy(), f"{prefix}sd": sd.numpy()}
    qs = weighted_quantiles(samples, weights, list(quantiles.values()))
    for j, name in enumerate(quantiles):
        out[f"{prefix}{name}"] = qs[j].numpy()
    return pd.DataFrame(out, index=index)


def chunk_size(layout: Layout, n_particles_total: int) -> int:
    """Patients per chunk so that the widest per-particle array stays under the budget."""
    width = 2 + max([k * k + k for k in layout.latent_dim.values()] + [1])
    return max(1, _CHUNK_ELEMENTS // max(1, n_particles_total * width))


def evidence_needs_weights(layout: Layout, masks: Mapping[str, torch.Tensor],
                           do: Mapping | None = None) -> bool:
    """Whether some patient's evidence depends on a drawn quantity (then the particles of one
    global draw differ in weight and more than one per draw is needed).

    A node is drawn for a patient when it is a latent, or unobserved and not intervened on;
    evidence is an observed node, or a latent's observed columns (their marginal depends on
    the latent's parents).
    """
    do = do or {}
    drawn: set[str] = set()
    for c in layout.order:
        kind = layout.kind[c]
        if kind == "group" or c in do:
            continue
        m = masks[f"m:{c}"]
        parents_drawn = any(p in drawn for p in layout.parents[c])
        if bool(m.any()) and parents_drawn:
            return True
        if kind == "latent" or not bool(m.all()):
            drawn.add(c)
    return False


# ----------------------------------------------------------------------------- the proposal
def propose(layout: Layout, g: dict, d: dict, draw, *, target: str | None = None,
            do: Mapping | None = None, shift: Mapping | None = None) -> dict:
    """One particle per (draw, particle) of every unobserved node, and its log weight.

    ``g``: globals (S, 1, ...); ``d``: design arrays (a False mask = no evidence);
    ``draw(fn)`` samples distribution ``fn`` at the particle shape. ``do`` values (model
    scale) replace nodes and cut their incoming edges; ``shift`` values (model scale) are
    added to a node's observed or drawn value (its observed value stays evidence about its
    parents). Returns ``{node: value}`` for every node with children or the target (codes
    for discrete nodes, z for latents), ``"__eta__"``: the linear predictors, and
    ``"__log_weight__"`` (broadcastable to (S, L, n)).
    """
    be = Backend("pyro")
    folded: dict[str, torch.Tensor] = {}       # patients whose child was folded into a parent
    log_weight = torch.zeros((), dtype=d["one"].dtype)

    def visit(w, c: str):
        nonlocal log_weight
        kind = layout.kind[c]
        x, m = w.data(c)
        eta = w.eta(c)
        if kind == "latent":
            mean, prec = latent_posterior(layout, c, g, eta, x, m, be, w.like)
            log_weight = log_weight + latent_marginal_loglik(layout, c, g, eta, x, m, mean, prec, be)
            everyone = torch.ones(x.shape[0], dtype=torch.bool)
            mean, prec, gain = _fold(layout, c, g, w, folded, everyone, mean, prec)
            log_weight = log_weight + gain
            return draw(torch.distributions.MultivariateNormal(mean, precision_matrix=prec))
        own = m & ~folded.get(c, torch.zeros_like(m))
        family = layout.families[c]
        if not family.has_site:
            log_weight = log_weight + family.log_lik(layout, c, g, eta, x, m, w.d, be)
            return None
        fam = family.dist(layout, c, g, eta, be)
        log_weight = log_weight + torch.where(own, fam.log_prob(x), 0.0)
        if not layout.graph.children(c) and c != target:
            return None
        if bool(m.all()):
            return x                      # nothing to draw: every patient observed it
        if family.gaussian:
            # the missing value's conditional given its linear-Gaussian observed children
            mean, prec = eta, family.noise_precision(layout, c, g)[..., None, None]
            mean, prec, gain = _fold(layout, c, g, w, folded, ~m, mean, prec)
            log_weight = log_weight + torch.where(m, 0.0, gain)
            drawn = draw(torch.distributions.Normal(mean[..., 0], prec[..., 0, 0].rsqrt()))
            return torch.where(m, x, drawn)
        return torch.where(m, x, draw(fam))

    w = walk(layout, g, d, be, visit, do=do, shift=shift)
    values = dict(w.values)
    values["__eta__"] = w.etas
    values["__log_weight__"] = log_weight
    return values


def _fold(layout, c, g, w, folded, unknown, mean, prec):
    """Condition the Gaussian (``mean`` (..., n, k), precision ``prec`` (..., n, k, k)) of
    node ``c`` on its observed linear-Gaussian children, for the patients in ``unknown``.

    A child v can be folded for a patient when v is continuous without an MLP mean, observed,
    not folded already, and all its other parents are known (processed already, intervened
    on, or observed). Then v = r + b' c + N(0, sd^2) with r the rest of its predictor, and
    the update is exact: prec' = prec + b b' / sd^2, and the children's marginal likelihood
    under the Gaussian before the update is returned as the log-weight gain (the identity of
    ``latent_marginal_loglik`` in general form). Marks the folded patients in ``folded``.
    """
    be, d, enc, like = w.be, w.d, w.enc, w.like      # w: the walk's state
    zero = torch.zeros((), dtype=mean.dtype)
    rhs = (prec * mean[..., None, :]).sum(-1)
    fit_before = (rhs * mean).sum(-1)
    new_prec, const, any_child = prec, zero, False
    for v in layout.graph.children(c):
        if (not getattr(layout.families.get(v), "gaussian", False) or f"{v}.mlp_w1" in g
                or v in w.do or c not in layout.parents[v]):
            continue
        mask = d[f"m:{v}"] & unknown & ~folded.get(v, torch.zeros_like(unknown))
        known, others = {}, {}
        for p in layout.parents[v]:
            if p == c:
                continue
            if p in enc:
                others[p] = enc[p]
            elif layout.kind[p] not in ("latent",):
                pm = d[f"m:{p}"]
                mask = mask & pm
                others[p] = encode(layout, p, d[f"x:{p}"], be, like)
            else:
                mask = mask & False
        if not bool(mask.any()):
            continue
        known.update(others)
        known[c] = torch.zeros(mean.shape, dtype=mean.dtype)      # v's predictor without c
        rest = linear_predictor(layout, v, g, known, w.codes, be, like)[..., 0]     # (..., n)
        coef = layout.coef(g, v, c, be)[..., 0]                                  # (..., k)
        inv_var = layout.families[v].noise_precision(layout, v, g)               # (..., 1)
        mf = mask.to(mean.dtype)
        resid = d[f"x:{v}"] - rest
        w_n = coef[..., None, :]                                                 # (..., 1, k)
        new_prec = new_prec + (mf * inv_var)[..., None, None] * (w_n[..., :, None] * w_n[..., None, :])
        rhs = rhs + (mf * inv_var * resid)[..., None] * w_n
        const = const - 0.5 * mf * (torch.log(2.0 * math.pi / inv_var) + inv_var * resid ** 2)
        folded[v] = folded.get(v, torch.zeros_like(mask)) | mask
        any_child = True
    if not any_child:
        return mean, prec, zero
    if new_prec.shape[-1] == 1:
        # a scalar node (k = 1): inverse and log-determinant in closed form, several times
        # faster than torch's batched linalg on (draws, particles, patients, 1, 1) arrays
        cov = 1.0 / new_prec
        log_det = torch.log(new_prec[..., 0, 0]) - torch.log(prec[..., 0, 0])
    else:
        cov = torch.linalg.inv(new_prec)
        log_det = torch.logdet(new_prec) - torch.logdet(prec)
    new_mean = (cov * rhs[..., None, :]).sum(-1)
    fit_after = (rhs * new_mean).sum(-1)
    gain = const + 0.5 * (fit_after - fit_before) - 0.5 * log_det
    return new_mean, new_prec, gain
