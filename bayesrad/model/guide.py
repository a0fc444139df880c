"""The variational family of the global parameters and the full SVI guide.

Globals live in one unconstrained vector ``u`` (positive sites through ``exp``). The default
q over ``u`` is Gaussian with a full covariance within each node's own parameters (family
``"block"``, see ``GlobalPosterior``): it keeps the correlations between coefficients of one
node's correlated parents that a mean-field guide drops. Mean-field (``"normal"``) and
diagonal plus low rank (``"lowrank"``) remain selectable. A free dense Cholesky factor was
tried first: Adam moves its off-diagonal entries by the step size whatever their gradient,
and the factor became ill-conditioned within a few steps (log q of its own samples
overflowed). Per-patient latents are not free parameters: they are drawn by ``local_guide``
from a Gaussian near their exact conditional given the globals and the patient's data
(amortised), so a new patient needs no refitting. ``make_guide`` wraps both as a Pyro guide
function for Pyro's own ELBOs (the fitting loop uses ``svi.Objective``, equal to them).
"""

from __future__ import annotations

import math

import torch

from bayesrad.model.compile import (MISSING, PLATE, Backend, Layout, column_information, encode,
                                    expected_encoding, linear_predictor, loglik_curvature,
                                    node_dist, walk)

# Initial sd of the unconstrained globals (as AutoNormal's init_scale).
_INIT_SCALE = 0.1


class GlobalPosterior(torch.nn.Module):
    """q(u) over the unconstrained globals of a ``Layout``.

    Parameters
    ----------
    layout : the compiled graph's layout.
    family : ``"block"`` (a full covariance over each node's own parameters: intercept,
        coefficients, noise sd, cutpoints, group effects; the block columns' loadings, means
        and sds of latent nodes stay mean-field), ``"normal"`` (mean-field) or ``"lowrank"``
        (diagonal plus rank ``rank``).
    rank : rank of the low-rank factor (capped at the number of globals).

    The block family is u = loc + scale * ((I + M) eps) with M strictly lower-triangular
    within each node's block: M is unitless (how much of a coordinate's noise it shares with
    earlier ones), so Adam's fixed-size steps move correlations, not absolute scales, and
    det(I + M) = 1 keeps log q as cheap as mean-field's. It keeps what mean-field drops
    where it matters most: coefficients of correlated parents of one node (mean-field gave
    posterior sds 20% under NUTS's for a latent's coefficients next to the gene factor that
    shares its signal).
    """

    def __init__(self, layout: Layout, family: str = "block", rank: int = 10):
        super().__init__()
        self.family = family
        self.names = [s.name for s in layout.sites]
        self.shapes = [tuple(s.shape) for s in layout.sites]
        self.positive = [s.support == "positive" for s in layout.sites]
        dim = layout.n_unconstrained
        self.register_buffer("positive_mask", torch.as_tensor(
            [positive for positive, site in zip(self.positive, layout.sites)
             for _ in range(site.size)], dtype=torch.bool), persistent=False)
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.full((dim,), math.log(_INIT_SCALE)))
        if family == "lowrank":
            rank = max(1, min(rank, dim))
            # a zero factor is a stationary point of the ELBO; start it small and random
            generator = torch.Generator().manual_seed(dim)
            self.cov_factor = torch.nn.Parameter(
                _INIT_SCALE * torch.randn(dim, rank, generator=generator) / math.sqrt(rank))
        elif family == "block":
            blocks = _node_blocks(layout)
            for i, index in enumerate(blocks):
                self.register_buffer(f"_block_index_{i}", torch.as_tensor(index), persistent=False)
            # a zero M is mean-field, and not a stationary point: the gradient of M is the
            # posterior correlation the mean-field start misses
            self.block_factors = torch.nn.ParameterList(
                [torch.nn.Parameter(torch.zeros(len(index), len(index))) for index in blocks])

    def _correlate(self, eps: torch.Tensor) -> torch.Tensor:
        """(I + M) eps for standard-normal draws eps (..., D)."""
        out = eps
        for i, factor in enumerate(self.block_factors):
            index = getattr(self, f"_block_index_{i}")
            lower = torch.tril(factor, -1)
            out = out.index_add(-1, index, eps[..., index] @ lower.T)
        return out

    def rsample(self, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_samples`` reparameterised draws u (n_samples, D) and log q(u) (n_samples,)."""
        if self.family != "block":
            q = self.distribution()
            u = q.rsample((n_samples,))
            return u, q.log_prob(u)
        eps = torch.randn((n_samples,) + self.loc.shape, dtype=self.loc.dtype,
                          device=self.loc.device)
        u = self.loc + self.log_scale.exp() * self._correlate(eps)
        log_q = (-0.5 * eps ** 2 - 0.5 * math.log(2 * math.pi) - self.log_scale).sum(-1)
        return u, log_q

    def distribution(self):
        """q(u) as a Pyro distribution."""
        import pyro.distributions as dist

        scale = self.log_scale.exp()
        if self.family == "lowrank":
            return dist.LowRankMultivariateNormal(self.loc, self.cov_factor, scale ** 2)
        if self.family == "block":
            eye = torch.eye(self.loc.shape[0], dtype=self.loc.dtype, device=self.loc.device)
            scale_tril = scale[:, None] * self._correlate(eye).T
            return dist.MultivariateNormal(self.loc, scale_tril=scale_tril)
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

    def constrain(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Constrained values of the flat vector ``u`` (..., D) and log|dvalue/du| (...,)."""
        positive = self.positive_mask.to(u.device)
        return torch.where(positive, u.exp(), u), (u * positive).sum(-1)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{site: (..., *shape)}`` views of a flat vector (..., D)."""
        batch, out, offset = flat.shape[:-1], {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = flat[..., offset: offset + size].reshape(batch + shape)
            offset += size
        return out

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
        return self.split(self.constrain(self.rsample(n_samples)[0])[0])


_MAX_CORRELATED = 300


def _node_blocks(layout: Layout) -> list[list[int]]:
    """Indices into u of each node's own parameters (blocks of two or more), in order."""
    blocks, offset = {}, 0
    for site in layout.sites:
        node = max((c for c in layout.order if site.name.startswith(c + ".")), key=len)
        if site.name[len(node) + 1:] not in ("loadings", "col_mean", "col_sd"):
            blocks.setdefault(node, []).extend(range(offset, offset + site.size))
        offset += site.size
    # a node with hundreds of parameters (a latent block's coefficients on another latent
    # block) keeps mean-field: its (I + M) factor would cost O(d^2) parameters and time per
    # step for correlations that matter most between a few coefficients
    return [index for index in blocks.values() if 1 < len(index) <= _MAX_CORRELATED]


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
            local_guide(layout, g, d, be, lambda name, fn: pyro.sample(name, fn))

    return guide


def _precision_normal():
    """The class ``PrecisionNormal`` (built on first use: pyro is imported lazily)."""
    import pyro.distributions as dist
    from torch.distributions import constraints

    class PrecisionNormal(dist.TorchDistribution):
        """N(loc, precision^-1) through the Cholesky factor L of the precision: a draw is
        loc + L^-T eps (one triangular solve) and the log-density needs no solve at all;
        torch's ``MultivariateNormal(precision_matrix=...)`` inverts the precision first
        and solves again for every log-density."""

        arg_constraints = {}
        support = constraints.real_vector
        has_rsample = True

        def __init__(self, loc, precision_matrix, precision_tril=None):
            batch = torch.broadcast_shapes(loc.shape[:-1], precision_matrix.shape[:-2])
            k = loc.shape[-1]
            self.loc = loc.expand(batch + (k,))
            self.precision_matrix = precision_matrix.expand(batch + (k, k))
            if precision_tril is None:
                precision_tril = torch.linalg.cholesky(self.precision_matrix)
            self._tril = precision_tril.expand(batch + (k, k))
            super().__init__(batch, (k,), validate_args=False)

        @property
        def mean(self):
            return self.loc

        def rsample(self, sample_shape=torch.Size()):
            eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                              device=self.loc.device)
            step = torch.linalg.solve_triangular(self._tril.mT, eps[..., None], upper=True)
            return self.loc + step[..., 0]

        def log_prob(self, value):
            w = (self._tril.mT @ (value - self.loc)[..., None])[..., 0]
            half_log_det = torch.diagonal(self._tril, dim1=-2, dim2=-1).log().sum(-1)
            k = self.loc.shape[-1]
            return -0.5 * (w ** 2).sum(-1) + half_log_det - 0.5 * k * math.log(2 * math.pi)

    return PrecisionNormal


# Newton steps of the Laplace view of non-Gaussian children (from the exact Gaussian part).
NEWTON_STEPS = 2


def local_guide(layout: Layout, g: dict, d: dict, be: Backend, draw, newton_steps: int = NEWTON_STEPS
                ) -> dict:
    """q of the per-patient latents given globals ``g``: Gaussian, amortised, near the exact
    conditional posterior. Returns ``{node: encoding}`` of every node with children.

    Each latent block z (and each missing value of a continuous node with children) is drawn,
    in topological order, from a Gaussian that combines its graph prior given the parents
    already drawn, its block columns (exact), and what its observed children say about it:
    exactly for Gaussian and latent children, by Newton steps to a Laplace approximation for
    the GLM children. The children matter: a q that ignores them makes the ELBO looser the
    more the children know about z, and maximising it then pulls the model towards children
    that say little (it drove one block column's noise sd to a third of the truth and shrank
    the effects of that latent dimension by ~15% on the radiotherapy scenario). A child's
    other parents not drawn yet enter at their point values (``_point_encodings``). Missing
    discrete parents are enumerated by the model; here they enter with their expected
    encoding.
    """
    PrecisionNormal = _precision_normal()
    blocks = {c: column_information(layout, c, g, d[f"x:{c}"], d[f"m:{c}"], be, d["one"])
              for c in layout.order if layout.kind[c] == "latent"}
    point = _point_encodings(layout, g, d, be, blocks)

    def visit(w, c: str):
        kind = layout.kind[c]
        if kind != "latent" and c not in layout.impute:
            return point.get(c)           # observed in training: its value's encoding
        x, m = w.data(c)
        eta = w.eta(c)
        if kind == "latent" and f"{c}.loadings" in layout.fixed:
            # empirical-Bayes factors (model/factors.py) are cut from their children: q(z) is
            # the exact posterior given the block and the parents, a valid (if not the
            # tightest) ELBO whose precision is a constant of the fit, factorised once per
            # data set instead of once per step (a 49-factor radiomics block spent most of a
            # step in this Cholesky and its gradient)
            prec, tril = _fixed_factor(layout, c, blocks[c][0], m, be, w.like)
            mean = torch.cholesky_solve((eta + blocks[c][1])[..., None], tril)[..., 0]
            return draw(c, PrecisionNormal(mean, prec, tril))
        if kind == "latent":
            prec, info = blocks[c]
            prec = be.eye(layout.latent_dim[c], w.like) + prec
            mean, prec, tril = _add_children(layout, c, g, w, point, blocks, prec, eta + info,
                                             None, newton_steps)
            return draw(c, PrecisionNormal(mean, prec, tril))
        if kind == "continuous":
            # the family's precision about its location: exact for a Gaussian node, the
            # Fisher information of a heavier-tailed one (a Gaussian q of its missing value)
            noise_prec = layout.families[c].noise_precision(layout, c, g)
            prec = (noise_prec + 0.0 * eta[..., 0])[..., None, None]
            missing = be.to_float(~m, w.like)
            mean, prec, _ = _add_children(layout, c, g, w, point, blocks, prec,
                                          eta * noise_prec[..., None], missing, newton_steps)
            # the site is masked to the missing patients, as the model's is
            q = be.dist.Normal(mean[..., 0], prec[..., 0, 0] ** -0.5)
            value = be.xp.where(m, x, draw(c + MISSING, q.mask(~m)))
            return encode(layout, c, value, be, w.like)
        return expected_encoding(layout, c, node_dist(layout, c, g, eta, be), x, m, be, w.like)

    return walk(layout, g, d, be, visit, encoded=True).enc


def _point_encodings(layout: Layout, g: dict, d: dict, be: Backend, blocks: dict) -> dict:
    """A point value of the encoding of every node with children: observed values, the
    conditional mean of a missing continuous value, the expected encoding of a missing
    discrete one, the mean of a latent given its parents and block (``blocks``: its
    ``column_information``; children ignored)."""

    def visit(w, c: str):
        kind = layout.kind[c]
        if not layout.graph.children(c):
            return None
        x, m = w.data(c)
        if kind != "latent" and c not in layout.impute:
            return encode(layout, c, x, be, w.like)     # always observed in training
        eta = w.eta(c)
        if kind == "latent" and f"{c}.loadings" in layout.fixed:
            tril = _fixed_factor(layout, c, blocks[c][0], m, be, w.like)[1]
            return torch.cholesky_solve((eta + blocks[c][1])[..., None], tril)[..., 0]
        if kind == "latent":
            prec, info = blocks[c]
            prec = be.eye(layout.latent_dim[c], w.like) + prec
            return _solve(prec, eta + info)[0]
        if kind == "continuous":
            return encode(layout, c, be.xp.where(m, x, eta[..., 0]), be, w.like)
        return expected_encoding(layout, c, node_dist(layout, c, g, eta, be), x, m, be, w.like)

    return walk(layout, g, d, be, visit, encoded=True).enc


def _add_children(layout, c, g, w, point, blocks, prec, info, weight, newton_steps):
    """Gaussian q of node ``c``'s encoding (..., n, k): prior/block information ``prec``
    (..., n, k, k) and ``info`` (..., n, k) plus its children's, per patient scaled by
    ``weight`` (n,) (``None``: 1). Returns (mean, precision, Cholesky factor of the
    precision). ``w``: the walk's state (the encodings drawn so far; ``point`` for the rest)."""
    enc, codes, d, be, like = w.enc, w.codes, w.d, w.be, w.like
    exact, laplace = [], []
    for child in layout.graph.children(c):
        mixed = {p: enc[p] if p in enc else point[p] for p in layout.parents[child]}
        mixed[c] = 0.0 * point[c]
        base = linear_predictor(layout, child, g, mixed, codes, be, like)
        coef = layout.coef(g, child, c, be)                            # (..., k, out)
        quadratic = layout.kind[child] == "latent" or layout.families[child].gaussian
        (exact if quadratic else laplace).append((child, coef, base))

    def information(children, z_hat):
        total_prec, total_info = 0.0, 0.0
        for child, coef, base in children:
            eta_hat = base + z_hat @ coef
            grad, neg_h = loglik_curvature(layout, child, g, eta_hat, d, be, like,
                                           blocks.get(child))
            coef_e = coef[..., None, :, :]                             # (..., 1, k, out)
            part_prec = coef_e @ neg_h @ be.mT(coef_e)
            part_info = (coef_e @ ((neg_h @ (z_hat @ coef)[..., None])[..., 0]
                                   + grad)[..., None])[..., 0]
            if weight is not None:
                part_prec, part_info = part_prec * weight[:, None, None], part_info * weight[:, None]
            total_prec, total_info = total_prec + part_prec, total_info + part_info
        return total_prec, total_info

    # the Gaussian children's terms do not depend on the expansion point
    zero = 0.0 * info
    q_prec, q_info = information(exact, zero)
    prec, info = prec + q_prec, info + q_info
    mean, tril = _solve(prec, info)
    if not laplace or newton_steps < 1:
        return mean, prec, tril
    for _ in range(newton_steps):
        l_prec, l_info = information(laplace, mean)
        step_prec = prec + l_prec
        mean, tril = _solve(step_prec, info + l_info)
    return mean, step_prec, tril


def _fixed_factor(layout: Layout, c: str, block_prec, mask, be: Backend, like):
    """(I + P, its Cholesky factor) of an empirical-Bayes latent node, (n, k, k) each: P is
    the block's information (constant: the loadings are fixed), cached per mask tensor."""
    key = ("fixed_factor", c)
    cached = layout._constants.get(key)
    if cached is not None and cached[0] is mask:
        return cached[1], cached[2]
    with torch.no_grad():
        prec = (be.eye(layout.latent_dim[c], like) + block_prec).detach()
        tril = torch.linalg.cholesky(prec)
    layout._constants[key] = (mask, prec, tril)
    return prec, tril


def _solve(prec, info):
    """prec^-1 info through the Cholesky factor of the (symmetric positive definite) prec;
    returns (solution (..., k), factor (..., k, k))."""
    tril = torch.linalg.cholesky(prec)
    return torch.cholesky_solve(info[..., None], tril)[..., 0], tril
