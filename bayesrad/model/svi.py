"""The ELBO of a compiled graph as one torch function, vectorised over particles.

Pyro's ``Trace_ELBO`` records every sample site in a trace and runs its effect handlers on
each step (on the radiotherapy graph without genes: 61 ms per step against 38 ms here, same
model and guide, one thread), and its vectorised particles add a plate dimension that the
family code (written for leading sample dimensions, as ``predict`` uses them) does not
expect. So the loss is assembled here from the same pieces Pyro would use: the global sites'
priors (``Layout.sites``), the model description ``compile._model_nodes`` run against a
``_Density`` back end (each ``sample`` adds its Pyro distribution's log-density at the
guide's value or the observation instead of being recorded), the globals' guide
``GlobalPosterior`` and the amortised local guide ``guide.local_guide``; at the same random
draws it equals Pyro's ``Trace_ELBO`` / ``TraceEnum_ELBO`` (tests/model/test_svi.py). K
particles are drawn in one pass (globals with a leading (K,) dimension). Compiling the loss
did not pay on CPU: ``torch.jit.trace`` made a step 5x slower (308 vs 56 ms, as Pyro's
``JitTrace_ELBO``: 261 vs 63 ms), and ``torch.compile`` took 400 s to compile for 142 ms steps.

Missing discrete parents are summed out exactly, as Pyro's parallel enumeration does: each
such site takes all its values along a new leftmost dimension, and the per-patient log joint
is log-sum-exp'ed over those dimensions.
"""

from __future__ import annotations

import math

import torch

from bayesrad.model.compile import Backend, Layout, _model_nodes
from bayesrad.model.guide import GlobalPosterior, local_guide

# Batch dimensions of every per-patient term: (particles, patients).
_BATCH_RANK = 2


class _Density(Backend):
    """The Pyro back end with ``sample``/``factor`` adding log-densities instead of recording
    sites: latent sites take their values from ``values`` (the guide's draws), observed ones
    their ``obs``, enumerated ones all their values along a new leftmost dimension."""

    def __init__(self, values: dict):
        super().__init__("pyro")
        # Backend binds pyro's primitives on the instance; use this class's instead
        del self.sample, self.factor
        self.values = values
        self.log_density = 0.0
        self.n_enumerated = 0

    def sample(self, name, fn, obs=None, infer=None):
        if obs is not None:
            value = obs
        elif infer and infer.get("enumerate"):
            n_values = fn.logits.shape[-1]
            shape = (n_values,) + (1,) * (_BATCH_RANK + self.n_enumerated)
            value = torch.arange(n_values, device=fn.logits.device).reshape(shape)
            self.n_enumerated += 1
        else:
            value = self.values[name]
        self.log_density = self.log_density + fn.log_prob(value)
        return value

    def factor(self, name, log_factor):
        self.log_density = self.log_density + log_factor


class _FlatPrior:
    """The global sites' priors (``Layout.sites``) evaluated on the flat vector of constrained
    values in one log-density call per prior family instead of one per site (a hundred
    small distributions per step cost more than the model's arithmetic)."""

    def __init__(self, layout: Layout, device=None):
        import pyro.distributions as dist

        groups: dict[str, tuple[list, list]] = {}
        offset = 0
        for site in layout.sites:
            family, args = site.prior
            index, params = groups.setdefault(family, ([], [[] for _ in args]))
            index.extend(range(offset, offset + site.size))
            for column, value in zip(params, args):
                column.extend([float(value)] * site.size)
            offset += site.size
        self.terms = [(getattr(dist, family), torch.as_tensor(index, device=device),
                       [torch.as_tensor(column, device=device) for column in params])
                      for family, (index, params) in groups.items()]

    def log_prob(self, flat: torch.Tensor) -> torch.Tensor:
        """Sum of the priors' log-densities at constrained values (..., D) -> (...,)."""
        total = 0.0
        for family, index, params in self.terms:
            total = total + family(*params).log_prob(flat[..., index]).sum(-1)
        return total


def elbo_particles(layout: Layout, posterior: GlobalPosterior, prior: _FlatPrior, data: dict,
                   n_particles: int, scale: float) -> torch.Tensor:
    """ELBO estimates, shape (n_particles,), with ``data`` a (mini)batch of ``design_arrays``
    and ``scale`` = patients in the cohort / patients in the batch.

    Each particle draws the globals from ``posterior`` (their prior is ``prior``), the
    per-patient latents from ``local_guide``, and adds log p(data, latents, globals) -
    log q(latents, globals); the per-patient part is scaled up to the whole cohort.
    """
    be = Backend("pyro")
    u, log_q = posterior.rsample(n_particles)
    flat, log_det = posterior.constrain(u)
    g = posterior.split(flat)
    global_part = prior.log_prob(flat) + log_det - log_q
    drawn, log_q = {}, []

    def draw(name, fn):
        value = fn.rsample()
        drawn[name] = value
        log_q.append(fn.log_prob(value))
        return value

    local_guide(layout, g, data, be, draw)
    density = _Density(drawn)
    _model_nodes(layout, density, g, data)
    local = density.log_density
    if density.n_enumerated:
        local = torch.logsumexp(local.reshape((-1,) + tuple(local.shape[-_BATCH_RANK:])), 0)
    local = local - sum(log_q) if log_q else local
    local = local.expand(n_particles, data["one"].shape[0])
    return global_part + scale * local.sum(-1)


class Objective:
    """The negative ELBO per patient of ``layout`` under ``posterior``: each call draws a
    minibatch (when ``batch_size`` is set) and returns the loss of one step.

    Parameters
    ----------
    layout, posterior : the compiled graph and the globals' guide.
    data : ``design_arrays`` of the whole cohort (on the fitting device).
    n_particles : particles per step (drawn in one vectorised pass).
    batch_size : patients per step (``None``: all).
    """

    def __init__(self, layout: Layout, posterior: GlobalPosterior, data: dict,
                 n_particles: int = 1, batch_size: int | None = None):
        self.layout, self.posterior, self.data = layout, posterior, data
        self.n = data["one"].shape[0]
        self.batch_size = batch_size
        self.n_particles = n_particles
        self.prior = _FlatPrior(layout, device=data["one"].device)

    def __call__(self) -> torch.Tensor:
        batch = self.data
        if self.batch_size:
            index = torch.randperm(self.n)[:self.batch_size].to(self.data["one"].device)
            batch = {k: v[index] for k, v in self.data.items()}
        elbo = elbo_particles(self.layout, self.posterior, self.prior, batch,
                              self.n_particles, self.n / batch["one"].shape[0])
        return -elbo.mean() / self.n


class ClippedAdam:
    """Pyro's ``ClippedAdam`` (Adam with each gradient element clipped to ``clip_norm`` and the
    learning rate multiplied by ``lrd`` at every step), the same arithmetic in the same order.

    Written out because every ``torch.optim.Optimizer`` imports ``torch._dynamo`` when it is
    constructed: 1.5 s in each new process, half of a 200 x 1,000 fit (issue 14), paid by every
    CLI call and notebook kernel. tests/model/test_svi.py checks that its iterates equal Pyro's.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 clip_norm: float = 10.0, lrd: float = 1.0):
        self.params = [p for p in params]
        self.lr, self.betas, self.eps, self.clip_norm, self.lrd = lr, betas, eps, clip_norm, lrd
        self.steps = [0] * len(self.params)      # per parameter, as Pyro counts them
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.lr *= self.lrd
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad.clamp_(-self.clip_norm, self.clip_norm)
            self.steps[i] += 1
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.sqrt().add_(self.eps)
            step_size = (self.lr * math.sqrt(1 - beta2 ** self.steps[i])
                         / (1 - beta1 ** self.steps[i]))
            p.addcdiv_(exp_avg, denom, value=-step_size)


__all__ = ["ClippedAdam", "Objective", "elbo_particles"]
