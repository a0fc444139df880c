"""Weighted particles of the per-patient posterior, and their summaries.

``HybridBN`` answers a question about a patient by drawing S sets of global parameters from
their posterior and, for each set, L particles of the patient's unobserved nodes from the
proposal of ``compile.local_pass(mode="predict")``. The proposal ignores part of the evidence
(a latent block's observed children, observed descendants of a missing value), so each
particle carries a log importance weight; weights are self-normalised over the L particles
that share one set of globals. The result targets p(unobserved | all of the patient's
evidence, globals), averaged over the globals' posterior: a patient's evidence conditions
their own latents, never the globals learnt from the training cohort.

Arrays are (P, n): P = S * L particles (the L particles of one global draw are adjacent),
n patients.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from bayesrad.model.compile import Layout

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


def flatten(values: Mapping, shape: tuple[int, int, int], layout: Layout) -> dict:
    """``local_pass`` values broadcast to (S, L, n[, width]) and reshaped to
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
