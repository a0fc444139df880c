"""The variational family of the global parameters and the full SVI guide.

Globals live in one unconstrained vector ``u`` (positive sites through ``exp``), with a
mean-field Normal or a low-rank-plus-diagonal multivariate Normal over ``u``: the low-rank
factor keeps the main posterior correlations between coefficients that a mean-field guide
drops (it is what makes VI's posterior sds agree with NUTS). A free Cholesky factor was tried
first: Adam moves its off-diagonal entries by the step size whatever their gradient, and the
factor becomes ill-conditioned within a few steps (log q of its own samples overflows); the
low-rank form has a stable Woodbury log-density. Per-patient latents are not free parameters: they are
drawn by ``compile.local_pass`` from their exact conditional given the globals and the
patient's data (amortised), so a new patient needs no refitting.
"""

from __future__ import annotations

import math

import torch

from bayesrad.model.compile import PLATE, Backend, Layout, local_pass

# Initial sd of the unconstrained globals (as AutoNormal's init_scale).
_INIT_SCALE = 0.1


class GlobalPosterior(torch.nn.Module):
    """q(u) over the unconstrained globals of a ``Layout``.

    Parameters
    ----------
    layout : the compiled graph's layout.
    family : ``"lowrank"`` (diagonal plus rank ``rank``) or ``"normal"`` (mean-field).
    rank : rank of the low-rank factor (capped at the number of globals).
    """

    def __init__(self, layout: Layout, family: str = "lowrank", rank: int = 10):
        super().__init__()
        self.family = family
        self.names = [s.name for s in layout.sites]
        self.shapes = [tuple(s.shape) for s in layout.sites]
        self.positive = [s.support == "positive" for s in layout.sites]
        dim = layout.n_unconstrained
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.full((dim,), math.log(_INIT_SCALE)))
        if family == "lowrank":
            rank = max(1, min(rank, dim))
            # a zero factor is a stationary point of the ELBO; start it small and random
            generator = torch.Generator().manual_seed(dim)
            self.cov_factor = torch.nn.Parameter(
                _INIT_SCALE * torch.randn(dim, rank, generator=generator) / math.sqrt(rank))

    def distribution(self):
        import pyro.distributions as dist

        scale = self.log_scale.exp()
        if self.family == "lowrank":
            return dist.LowRankMultivariateNormal(self.loc, self.cov_factor, scale ** 2)
        return dist.Normal(self.loc, scale).to_event(1)

    def set_init(self, name: str, value: torch.Tensor) -> None:
        """Start the guide's mean of site ``name`` at a constrained ``value``."""
        offset = 0
        for site_name, shape, positive in zip(self.names, self.shapes, self.positive):
            size = math.prod(shape)
            if site_name == name:
                u = value.log() if positive else value
                with torch.no_grad():
                    self.loc[offset: offset + size] = u.reshape(-1).to(self.loc)
                return
            offset += size
        raise KeyError(name)

    def unpack(self, u: torch.Tensor) -> tuple[dict, dict]:
        """Constrained values ``{site: (..., *shape)}`` and log|du/dvalue| per site."""
        values, log_density = {}, {}
        offset = 0
        batch = u.shape[:-1]
        for name, shape, positive in zip(self.names, self.shapes, self.positive):
            size = math.prod(shape)
            piece = u[..., offset: offset + size].reshape(batch + shape)
            offset += size
            if positive:
                values[name] = piece.exp()
                log_density[name] = -piece.reshape(batch + (-1,)).sum(-1)
            else:
                values[name] = piece
                log_density[name] = torch.zeros(batch, dtype=u.dtype, device=u.device)
        return values, log_density

    @torch.no_grad()
    def sample(self, n_samples: int) -> dict[str, torch.Tensor]:
        """``n_samples`` draws of every global, shapes (n_samples, *shape)."""
        u = self.distribution().sample((n_samples,))
        return self.unpack(u)[0]


def make_guide(layout: Layout, posterior: GlobalPosterior, n_patients: int,
               subsample_size: int | None = None):
    """The Pyro guide: globals from ``posterior``, per-patient latents amortised."""
    import pyro
    import pyro.distributions as dist

    be = Backend("pyro")

    def guide(data: dict) -> None:
        pyro.module("bayesrad_globals", posterior)
        u = pyro.sample("_globals", posterior.distribution(), infer={"is_auxiliary": True})
        values, log_density = posterior.unpack(u)
        g = {}
        for name, shape in zip(posterior.names, posterior.shapes):
            g[name] = pyro.sample(name, dist.Delta(values[name], log_density=log_density[name],
                                                   event_dim=len(shape)))
        kwargs = {"subsample_size": subsample_size} if subsample_size else {}
        with pyro.plate(PLATE, n_patients, dim=-1, **kwargs) as idx:
            d = data if not subsample_size else {k: v[idx] for k, v in data.items()}
            local_pass(layout, g, d, be, lambda name, fn: pyro.sample(name, fn), mode="guide")

    return guide
