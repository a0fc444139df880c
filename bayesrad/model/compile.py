"""The graph compiled to a Pyro model and to a NumPyro model.

Each observed node's likelihood family (its own sites, distribution, curvature) is in
``families.py``; this module adds what the graph adds: parent encodings, linear predictors with
their coefficient priors (normal, sign, ridge, horseshoe, MLP, group intercepts), latent blocks
and the model function. Both are written once against a small backend shim (``Backend``):
distributions come from ``pyro.distributions`` or ``numpyro.distributions`` (same names, same
``.mask`` and ``.to_event``), primitives are ``sample`` / ``plate`` / ``factor``, and tensor operations are
torch or jax.numpy. ``Layout`` fixes, from a graph and its fitted ``Preprocessor``, every global
site (name, shape, support, prior); ``make_model`` returns a plain model function
``model(data)`` for either back end.

Scales: continuous nodes and latent-block columns are standardised with training statistics;
survival times are divided by their median; counts stay counts with a log-mean offset.
Parents enter a child's linear predictor as: continuous (standardised value), binary (0/1
minus its training share), categorical (one-hot against the first level, centred the same
way), ordinal (standardised numeric level), count (standardised count), latent (its k
values); a group parent adds a hierarchical random intercept (non-centred).

Every pass through the graph is one walk (``walk``: topological order, interventions and
shifts, group codes, linear predictors, parent encodings) with its own visitor per node; the
model function is one of them. The same family code also runs outside any inference engine,
vectorised over S posterior draws of the globals: in ``local_pass`` (posterior-predictive
replicates for ``to_arviz`` and ``log_likelihood``, and the simulator of SBC), in
``particles`` and ``counterfactual`` (the weighted particles behind ``predict``, ``query`` and
``counterfactual``) and, through ``column_information`` and ``loglik_curvature``, in the
amortised guide of the per-patient latents (``guide.py``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from bayesrad.errors import ModelError
from bayesrad.graph.graph import Graph
from bayesrad.model.design import Design, Preprocessor, _level_numbers
from bayesrad.model.families import Family, GlobalSite, family_of

PLATE = "patients"
MISSING = "__missing"   # suffix of the site that imputes a missing parent value

# Default coefficient prior sd on the standardised scale (weakly informative: a one-sd change
# of a parent moves a Gaussian child by about one sd, a logit by a few units at most); each
# family's own sites (intercept, noise, cutpoints) are in ``model/families.py``.
_COEF_SCALE = 1.0
# Prior sd (HalfNormal scale) of one block's contribution to a child's linear predictor under
# ridge shrinkage: a few logit units at most for a discrete child, one sd for a Gaussian one.
_TAU_SCALE = {"continuous": 1.0, "binary": 2.5, "categorical": 2.5, "ordinal": 2.5,
              "count": 1.0, "survival": 1.0, "latent": 1.0}


# ----------------------------------------------------------------------------- back ends
class Backend:
    """Distributions, primitives and tensor operations of one PPL (pyro or numpyro)."""

    def __init__(self, name: str):
        self.name = name
        if name == "pyro":
            import pyro
            import pyro.distributions as dist
            import torch

            self.dist, self.sample, self.plate, self.factor = dist, pyro.sample, pyro.plate, pyro.factor
            self.xp = torch
        elif name == "numpyro":
            import jax.numpy as jnp
            import numpyro
            import numpyro.distributions as dist

            self.dist, self.sample, self.plate, self.factor = (dist, numpyro.sample,
                                                               numpyro.plate, numpyro.factor)
            self.xp = jnp
        else:
            raise ModelError(f"unknown back end {name!r}; use 'pyro' or 'numpyro'")

    # small tensor helpers whose spelling differs between torch and jax.numpy
    def cat(self, tensors, axis=-1):
        return self.xp.cat(tensors, dim=axis) if self.name == "pyro" else self.xp.concatenate(tensors, axis=axis)

    def cat_broadcast(self, tensors):
        """Concatenate along the last axis after broadcasting the leading axes (an observed
        parent is (n, d), a drawn one (S, L, n, d))."""
        lead = np.broadcast_shapes(*[tuple(t.shape[:-1]) for t in tensors])
        if self.name == "pyro":
            return self.xp.cat([t.expand(lead + (t.shape[-1],)) for t in tensors], dim=-1)
        return self.xp.concatenate([self.xp.broadcast_to(t, lead + (t.shape[-1],))
                                    for t in tensors], axis=-1)

    def zeros_like_last(self, x, size):
        """Zeros shaped like ``x`` with the last dimension set to ``size``."""
        return self.xp.zeros(tuple(x.shape[:-1]) + (size,), dtype=x.dtype)

    def one_hot(self, codes, n_levels, dtype):
        levels = self.xp.arange(n_levels)
        hot = codes[..., None] == levels
        return hot.to(dtype) if self.name == "pyro" else hot.astype(dtype)

    def softplus(self, x):
        if self.name == "pyro":
            return self.xp.nn.functional.softplus(x)
        import jax

        return jax.nn.softplus(x)

    def cumsum(self, x):
        return self.xp.cumsum(x, -1) if self.name == "pyro" else self.xp.cumsum(x, axis=-1)

    def to_float(self, x, like):
        return x.to(like.dtype) if self.name == "pyro" else x.astype(like.dtype)

    def mT(self, x):
        """Swap the last two axes (matrix transpose of a batch)."""
        return self.xp.swapaxes(x, -1, -2) if self.name == "numpyro" else x.transpose(-1, -2)

    def data_matmul(self, x, w):
        """``x @ w`` for data x (n, p) without sample dimensions and w (..., p, j): one
        (n, p) @ (p, ...*j) product, not a batched one that first copies x per sample."""
        if self.name != "pyro" or w.dim() == 2:
            return x @ w
        lead, (p, j) = tuple(w.shape[:-2]), tuple(w.shape[-2:])
        flat = w.reshape((-1, p, j)).permute(1, 0, 2).reshape(p, -1)
        out = (x @ flat).reshape(x.shape[0], -1, j).permute(1, 0, 2)
        return out.reshape(lead + (x.shape[0], j))

    def eye(self, k, like):
        """The k x k identity in ``like``'s dtype (and device)."""
        if self.name == "pyro":
            return self.xp.eye(k, dtype=like.dtype, device=like.device)
        return self.xp.eye(k, dtype=like.dtype)

    def diag_embed(self, x):
        """(..., k) -> (..., k, k) diagonal matrices."""
        return x[..., :, None] * self.eye(x.shape[-1], x)

    def gather_rows(self, table, codes):
        """``table[..., codes, :]`` for a table of shape (..., G, d) and codes (n,)."""
        return table[..., codes, :]


# ----------------------------------------------------------------------------- layout
class Layout:
    """Everything static about a compiled graph: node order, widths, global sites.

    Parameters
    ----------
    graph : the model graph.
    pre : a fitted ``Preprocessor`` (levels and statistics).
    impute : nodes whose missing values are imputed as latent sites (they have children and
        missing values in the training data).
    """

    def __init__(self, graph: Graph, pre: Preprocessor, impute: set[str] | frozenset = frozenset()):
        self.graph = graph
        self.stats = pre.stats_
        self.order = graph.topological_order()
        self.impute = set(impute)
        self.kind = {n: graph.spec(n).kind for n in self.order}
        self.n_levels = {n: len(self.stats[n]["levels"]) for n in self.order
                         if "levels" in self.stats[n]}
        self.latent_dim = {n: graph.spec(n).latent_dim for n in self.order
                           if self.kind[n] == "latent"}
        self.n_columns = {n: len(self.stats[n]["columns"]) for n in self.order
                          if self.kind[n] == "latent"}
        self.parents = {n: [p for p in graph.parents(n) if self.kind[p] != "group"]
                        for n in self.order}
        self.groups = {n: [p for p in graph.parents(n) if self.kind[p] == "group"]
                       for n in self.order}
        #: node -> its likelihood family (``model/families.py``), for every observed node
        self.families: dict[str, Family] = {
            n: family_of(n, self.kind[n], graph.spec(n).prior) for n in self.order
            if self.kind[n] not in ("latent", "group")}
        # latent nodes with empirical-Bayes factors (``model/factors.py``): their loadings,
        # column means and sds are constants of the fit, not global sites
        self.fixed: dict[str, np.ndarray] = {}
        for n in self.order:
            if self.kind[n] == "latent" and "factors" in self.stats[n]:
                fac = self.stats[n]["factors"]
                loadings = np.asarray(fac["loadings"], dtype=float)
                if loadings.shape != (self.latent_dim[n], self.n_columns[n]):
                    raise ModelError(f"latent node {n!r}: its factor loadings are "
                                     f"{loadings.shape}, the graph says latent_dim "
                                     f"{self.latent_dim[n]} over {self.n_columns[n]} columns")
                self.fixed[f"{n}.loadings"] = loadings
                self.fixed[f"{n}.col_mean"] = np.zeros(self.n_columns[n])
                # one noise sd (PPCA) or one per column (columns screened out keep their own)
                self.fixed[f"{n}.col_sd"] = np.broadcast_to(
                    np.asarray(fac["noise_sd"], dtype=float), (self.n_columns[n],)).copy()
        self._constants: dict = {}
        self._derived: dict[str, np.ndarray] = {}
        self.sites: list[GlobalSite] = []
        for name in self.order:
            self._add_sites(name)
        self.site_index = {s.name: s for s in self.sites}

    # widths -----------------------------------------------------------------
    def out_dim(self, name: str) -> int:
        """Width of a node's linear predictor."""
        kind = self.kind[name]
        if kind == "categorical":
            return self.n_levels[name] - 1
        if kind == "latent":
            return self.latent_dim[name]
        return 1

    def enc_dim(self, name: str) -> int:
        """Width of a node's encoding as a parent: the same as its predictor's (a categorical
        node is one-hot against its reference level either way, a latent node is k-wide)."""
        return self.out_dim(name)

    # sites --------------------------------------------------------------------
    def _add_sites(self, c: str) -> None:
        kind = self.kind[c]
        spec = self.graph.spec(c)
        node_prior = spec.prior or {}
        out = self.out_dim(c)
        if kind == "group":
            return
        if c in self.families:
            self.sites += self.families[c].sites(c, node_prior, out, self.n_levels.get(c))
        if kind == "latent" and f"{c}.loadings" not in self.fixed:
            k, p = self.latent_dim[c], self.n_columns[c]
            self.sites += [
                GlobalSite(f"{c}.loadings", (k, p), "real", ("Normal", (0.0, 1.0))),
                GlobalSite(f"{c}.col_mean", (p,), "real", ("Normal", (0.0, 1.0))),
                GlobalSite(f"{c}.col_sd", (p,), "positive",
                           ("HalfNormal", (float(node_prior.get("noise_scale", 1.0)),))),
            ]
        horseshoe = node_prior.get("shrinkage") == "horseshoe"
        if horseshoe and self.parents[c]:
            self.sites += [
                GlobalSite(f"{c}.hs_tau", (), "positive",
                           ("HalfCauchy", (float(node_prior.get("global_scale", 0.1)),))),
                GlobalSite(f"{c}.hs_c2", (), "positive",
                           ("InverseGamma", (2.0, 2.0 * float(node_prior.get("slab_scale", 2.0)) ** 2))),
            ]
        ridge = node_prior.get("shrinkage") == "ridge"
        if ridge:
            tau_scale = float(node_prior.get("tau_scale", _TAU_SCALE.get(kind, 1.0)))
            for group in dict.fromkeys(self.ridge_group(c, p) for p in self.parents[c]
                                       if not self.graph.edge_prior(p, c)):
                self.sites.append(GlobalSite(f"{c}.tau.{group}", (), "positive",
                                             ("HalfNormal", (tau_scale,))))
        for p in self.parents[c]:
            shape = (self.enc_dim(p), out)
            edge = self.graph.edge_prior(p, c) or {}
            scale = float(edge.get("scale", node_prior.get("coef_scale", _COEF_SCALE)))
            if ridge and not edge:
                self.sites.append(GlobalSite(f"{c}.coef.{p}", shape, "real", ("Normal", (0.0, 1.0))))
            elif horseshoe:
                self.sites += [
                    GlobalSite(f"{c}.coef.{p}", shape, "real", ("Normal", (0.0, 1.0))),
                    GlobalSite(f"{c}.hs_lambda.{p}", shape, "positive", ("HalfCauchy", (1.0,))),
                ]
            elif "sign" in edge:
                self.sites.append(GlobalSite(f"{c}.coef.{p}", shape, "positive",
                                             ("HalfNormal", (scale,))))
            else:
                self.sites.append(GlobalSite(f"{c}.coef.{p}", shape, "real",
                                             ("Normal", (float(edge.get("mean", 0.0)), scale))))
        hidden = int(node_prior.get("mlp_hidden", 0) or 0)
        if hidden and self.parents[c]:
            # a small Bayesian MLP of the parents' encodings added to the linear predictor:
            # tanh units, weights ~ N(0, 1/fan_in) so the term starts near the linear model's
            # scale (standardised inputs)
            width = sum(self.enc_dim(p) for p in self.parents[c])
            self.sites += [
                GlobalSite(f"{c}.mlp_w1", (width, hidden), "real", ("Normal", (0.0, 1.0 / math.sqrt(width)))),
                GlobalSite(f"{c}.mlp_b1", (hidden,), "real", ("Normal", (0.0, 1.0))),
                GlobalSite(f"{c}.mlp_w2", (hidden, out), "real", ("Normal", (0.0, 1.0 / math.sqrt(hidden)))),
            ]
        for g in self.groups[c]:
            n_groups = self.n_levels[g]
            self.sites += [
                GlobalSite(f"{c}.group_sd.{g}", (out,), "positive",
                           ("HalfNormal", (float(node_prior.get("group_scale", 1.0)),))),
                GlobalSite(f"{c}.group_raw.{g}", (n_groups, out), "real", ("Normal", (0.0, 1.0))),
            ]

    @property
    def n_unconstrained(self) -> int:
        return sum(s.size for s in self.sites)

    def ridge_group(self, c: str, p: str) -> str:
        """The group of parent ``p`` under ``c``'s ridge shrinkage: a latent parent is its own
        group (its block's contribution gets its own scale), observed parents share one."""
        return p if self.kind[p] == "latent" else "observed"

    def ridge_scales(self, c: str, p: str) -> np.ndarray:
        """Relative prior sds of parent ``p``'s coefficients on ``c`` under ridge shrinkage,
        (enc,), scaled so that the group's contribution to the linear predictor has prior sd
        ``tau`` (its variance sums to tau^2 over the group's standardised inputs).

        An empirical-Bayes latent parent's factor j gets sqrt(|W_j|^2 / sum_l |W_l|^2): the
        prior that a ridge regression on the block's columns puts on the factor (a Gaussian
        prior on the column effects, seen through the loadings); other parents share equally.
        """
        if self.kind[p] == "latent":
            fac = self.stats[p].get("factors")
            if fac is not None:
                var = np.asarray(fac["variance"], dtype=float)
                return np.sqrt(var / var.sum())
            return np.full(self.enc_dim(p), 1.0 / math.sqrt(self.enc_dim(p)))
        width = sum(self.enc_dim(q) for q in self.parents[c]
                    if self.ridge_group(c, q) == "observed" and not self.graph.edge_prior(q, c))
        return np.full(self.enc_dim(p), 1.0 / math.sqrt(max(width, 1)))

    def constant(self, name: str, like, be: Backend):
        """A fixed array of the fit (``self.fixed`` or ridge scales) in ``like``'s backend,
        dtype and device (converted once per backend)."""
        key = (name, be.name, str(getattr(like, "dtype", "")), str(getattr(like, "device", "")))
        if key not in self._constants:
            value = self.fixed[name] if name in self.fixed else self._derived[name]
            if be.name == "pyro":
                self._constants[key] = be.xp.as_tensor(value, dtype=like.dtype, device=like.device)
            else:
                self._constants[key] = be.xp.asarray(value, dtype=like.dtype)
        return self._constants[key]

    def param(self, g: dict, name: str, be: Backend):
        """A global parameter by name: a draw in ``g``, or a constant of the fit."""
        if name in self.fixed:
            return self.constant(name, next(iter(g.values())), be)
        return g[name]

    def col_mean(self, g: dict, c: str, be: Backend):
        """Column means of a latent node's block, (..., p)."""
        return self.param(g, f"{c}.col_mean", be)

    def col_sd(self, g: dict, c: str, be: Backend):
        """Column residual sds of a latent node's block, (..., p)."""
        return self.param(g, f"{c}.col_sd", be)

    # effective parameters -------------------------------------------------------
    def coef(self, g: dict, c: str, p: str, be: Backend):
        """Effective coefficient matrix of parent ``p`` on child ``c``, shape (..., enc, out)."""
        raw = g[f"{c}.coef.{p}"]
        site = self.site_index[f"{c}.coef.{p}"]
        edge = self.graph.edge_prior(p, c) or {}
        if f"{c}.tau.{self.ridge_group(c, p)}" in self.site_index and not edge:
            tau = g[f"{c}.tau.{self.ridge_group(c, p)}"][..., None, None]
            name = f"ridge:{c}:{p}"
            if name not in self._derived:
                self._derived[name] = self.ridge_scales(c, p)[:, None]
            return raw * tau * self.constant(name, raw, be)
        if f"{c}.hs_tau" in self.site_index:
            tau, c2 = g[f"{c}.hs_tau"], g[f"{c}.hs_c2"]
            lam = g[f"{c}.hs_lambda.{p}"]
            tau_e, c2_e = tau[..., None, None], c2[..., None, None]
            lam_tilde = be.xp.sqrt(c2_e * lam ** 2 / (c2_e + tau_e ** 2 * lam ** 2))
            return raw * tau_e * lam_tilde
        if site.support == "positive" and edge.get("sign") == "negative":
            return -raw
        return raw

    def loadings(self, g: dict, c: str, be: Backend):
        """Loadings (..., k, p): lower-triangular with positive diagonal (identifiable up to
        nothing but the labelling of columns) when learned, or the empirical-Bayes factors'
        (``model/factors.py``: ordered, largest loading positive)."""
        if f"{c}.loadings" in self.fixed:
            return self.param(g, f"{c}.loadings", be)
        raw = g[f"{c}.loadings"]
        k, p = self.latent_dim[c], self.n_columns[c]
        rows = np.arange(k)[:, None]
        cols = np.arange(p)[None, :]
        keep = be.xp.asarray(cols >= rows) if be.name == "numpyro" else be.xp.as_tensor(cols >= rows)
        diag = be.xp.asarray(cols == rows) if be.name == "numpyro" else be.xp.as_tensor(cols == rows)
        return be.xp.where(diag, be.xp.abs(raw), raw) * be.to_float(keep, raw)

    def cutpoints(self, g: dict, c: str, be: Backend):
        first = g[f"{c}.cut_first"][..., None]
        if f"{c}.cut_gaps" not in g:
            return first
        return be.cat([first, first + be.cumsum(g[f"{c}.cut_gaps"])], axis=-1)


# ----------------------------------------------------------------------------- data arrays
def design_arrays(layout: Layout, design: Design, be: Backend, dtype=None, device=None) -> dict:
    """Backend arrays of a design: ``x:<node>`` values, ``m:<node>`` masks, ``e:<node>`` events.

    Discrete nodes get integer codes. Shapes (n,) or (n, p) for latent blocks.
    """
    out: dict[str, Any] = {}
    if be.name == "pyro":
        import torch

        out["one"] = torch.ones(design.n, dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        import jax.numpy as jnp

        out["one"] = jnp.ones(design.n, dtype=dtype or jnp.float32)
    for name in layout.order:
        kind = layout.kind[name]
        x, m = design.values[name], design.observed[name]
        integer = kind in ("categorical", "ordinal", "group")
        if be.name == "pyro":
            import torch

            fdtype = dtype or torch.get_default_dtype()
            out[f"x:{name}"] = torch.as_tensor(x.astype(np.int64) if integer else x,
                                               dtype=torch.long if integer else fdtype, device=device)
            out[f"m:{name}"] = torch.as_tensor(m, dtype=torch.bool, device=device)
            if name in design.event:
                out[f"e:{name}"] = torch.as_tensor(design.event[name], dtype=fdtype, device=device)
        else:
            import jax.numpy as jnp

            out[f"x:{name}"] = jnp.asarray(x.astype(np.int32) if integer else x,
                                           dtype=jnp.int32 if integer else (dtype or jnp.float32))
            out[f"m:{name}"] = jnp.asarray(m)
            if name in design.event:
                out[f"e:{name}"] = jnp.asarray(design.event[name], dtype=dtype or jnp.float32)
    return out


# ----------------------------------------------------------------------------- families
def encode(layout: Layout, name: str, value, be: Backend, like):
    """A parent's encoding, shape (..., n, enc_dim), from its value (codes for discrete)."""
    kind = layout.kind[name]
    st = layout.stats[name]
    if kind == "latent":
        return value
    if kind in ("categorical", "binary"):
        # indicators centred at their training shares: an intercept is then the predictor of
        # an average patient and hardly correlated with the coefficients in the posterior
        # (a mean-field guide underestimated the sds of uncentred indicators by up to 45%)
        centre = (be.xp.asarray(st["enc_mean"], dtype=like.dtype) if be.name == "numpyro" else
                  be.xp.as_tensor(st["enc_mean"], dtype=like.dtype, device=like.device))
        if kind == "binary":
            return be.to_float(value, like)[..., None] - centre
        return be.one_hot(value, layout.n_levels[name], like.dtype)[..., 1:] - centre
    if kind == "ordinal":
        numbers = _level_numbers(st["levels"])
        table = (be.xp.asarray(numbers) if be.name == "numpyro" else
                 be.xp.as_tensor(numbers, dtype=like.dtype, device=like.device))
        return ((table[value] - st["enc_mean"]) / st["enc_sd"])[..., None]
    if kind == "count":
        return ((value - st["enc_mean"]) / st["enc_sd"])[..., None]
    return value[..., None]


def linear_predictor(layout: Layout, c: str, g: dict, enc: dict, codes: dict, be: Backend, like):
    """Linear predictor of node ``c``, shape (..., n, out_dim).

    ``enc[p]`` are parent encodings (..., n, enc_dim); ``codes[grp]`` group codes (n,) with
    -1 for an unknown or missing group (its random intercept is then the prior mean 0).
    """
    out = layout.out_dim(c)
    # zeros of shape (n, out) make a root node's predictor per patient like any other
    eta = be.zeros_like_last(like[..., None], out)
    if f"{c}.intercept" in g:
        eta = eta + g[f"{c}.intercept"][..., None, :]
    for p in layout.parents[c]:
        e, w = enc[p], layout.coef(g, c, p, be)
        # a one-column encoding (continuous, binary, count, ordinal parent): the product is a
        # broadcast multiplication, ~20x faster than torch's batched 1 x 1 matmul on
        # (draws, particles, patients) arrays (an exact 12-node Shapley explanation spent a
        # third of its time here); the same numbers
        eta = eta + (e * w if e.shape[-1] == 1 else e @ w)
    if f"{c}.mlp_w1" in g:
        inputs = be.cat_broadcast([enc[p] for p in layout.parents[c]])
        hidden = be.xp.tanh(inputs @ g[f"{c}.mlp_w1"] + g[f"{c}.mlp_b1"][..., None, :])
        eta = eta + hidden @ g[f"{c}.mlp_w2"]
    for grp in layout.groups[c]:
        table = g[f"{c}.group_raw.{grp}"] * g[f"{c}.group_sd.{grp}"][..., None, :]
        padded = be.cat([table, be.zeros_like_last(table[..., :1, :], out)], axis=-2)
        code = codes[grp]
        code = be.xp.where(code < 0, layout.n_levels[grp], code)
        eta = eta + be.gather_rows(padded, code)
    return eta


def node_dist(layout: Layout, c: str, g: dict, eta, be: Backend):
    """The conditional distribution of an observed node given its linear predictor (its
    family's, ``model/families.py``)."""
    if c not in layout.families or not layout.families[c].has_site:
        raise ModelError(f"node {c!r} of kind {layout.kind[c]!r} has no single-site distribution")
    return layout.families[c].dist(layout, c, g, eta, be)


def column_information(layout: Layout, c: str, g: dict, x, m, be: Backend, like):
    """What a latent node's block columns say about its z, as Gaussian information.

    x_j = col_mean_j + loadings[:, j] . z + N(0, col_sd_j^2), observed where ``m``, so
    log p(columns | z) = r . z - z' P z / 2 + const. Returns (P (..., n, k, k), r (..., n, k));
    a patient without the block gets P = 0, r = 0 (the block is marginalised).
    """
    fixed = f"{c}.loadings" in layout.fixed
    if fixed:
        # empirical-Bayes factors: the information depends on the data alone, so compute it
        # once per data set (every SVI step and prediction chunk passes the same arrays)
        cached = layout._constants.get(("column_information", c))
        if cached is not None and cached[0] is x and cached[1] is m:
            return cached[2]
        out = _column_information(layout, c, g, x, m, be, like)
        layout._constants[("column_information", c)] = (x, m, out)
        return out
    return _column_information(layout, c, g, x, m, be, like)


def _column_information(layout: Layout, c: str, g: dict, x, m, be: Backend, like):
    lam = layout.loadings(g, c, be)                                   # (..., k, p)
    k = layout.latent_dim[c]
    mf = be.to_float(m, like)                                         # (n, p)
    scaled = lam / layout.col_sd(g, c, be)[..., None, :] ** 2                # (..., k, p)
    n_obs = mf.sum(-1)
    if be.name == "pyro" and bool(((n_obs == 0) | (n_obs == mf.shape[-1])).all()):
        # every patient has the whole block or none of it (the usual missing modality):
        # one k x k product instead of one per patient (the step of a 10,000-patient
        # factor model spent half its time here)
        prec = mf[..., :1, None] * (scaled @ be.mT(lam))[..., None, :, :]
    else:
        # sum_p m[n,p] scaled[k,p] lam[l,p] as one (n,p) @ (p,k*k) product: a (..., n, k, p)
        # intermediate would not fit in memory for S draws x thousands of patients x genes
        outer = (scaled[..., :, None, :] * lam[..., None, :, :])      # (..., k, k, p)
        outer = be.xp.swapaxes(outer, -1, -3) if be.name == "numpyro" else outer.transpose(-1, -3)
        outer = outer.reshape(tuple(outer.shape[:-3]) + (outer.shape[-3], k * k))
        prec = be.data_matmul(mf, outer)
        prec = prec.reshape(tuple(prec.shape[:-1]) + (k, k))
    # rounding leaves the product a hair off symmetric, which distributions reject
    prec = 0.5 * (prec + be.mT(prec))
    centred = scaled * layout.col_mean(g, c, be)[..., None, :]
    # x is 0 where unobserved (so already masked)
    info = be.data_matmul(x, be.mT(scaled)) - be.data_matmul(mf, be.mT(centred))
    return prec, info


def block_loglik(layout: Layout, c: str, g: dict, z, x, m, be: Backend, like, block=None):
    """log p(block columns | z) per patient (..., n): the factor-analysis likelihood
    sum_j log N(x_j; col_mean_j + loadings[:, j] . z, col_sd_j^2) over observed columns.

    Evaluated as -q/2 + z . r - z' P z / 2 - sum_j log col_sd_j - (observed / 2) log 2 pi, with
    (P, r) from ``column_information`` (``block`` when already computed) and
    q = sum_j (x_j - col_mean_j)^2 / col_sd_j^2: products of the (n, p) data with (p,)
    vectors and a (p, k) matrix instead of elementwise operations over every (patient,
    column) entry and their gradients, which were most of a step's time on wide blocks.
    """
    prec, info = block or column_information(layout, c, g, x, m, be, like)
    mf = be.to_float(m, like)
    col_sd = layout.col_sd(g, c, be)
    inv_var = col_sd ** -2.0                                          # (..., p)
    mean = layout.col_mean(g, c, be)
    # x is 0 where unobserved, so x and x*x are already masked: q and sum_j log col_sd_j
    # as one product of [x*x, x, m] (n, 3p) with a (3p, 2) matrix
    zero = 0.0 * inv_var
    weights = be.xp.stack([be.cat([inv_var, -2.0 * mean * inv_var, mean ** 2 * inv_var]),
                           be.cat([zero, zero, be.xp.log(col_sd)])], -1)
    sums = be.data_matmul(be.cat([x * x, x, mf]), weights)
    quad, log_norm = sums[..., 0], sums[..., 1]
    z_prec_z = (z[..., None, :] @ prec @ z[..., None])[..., 0, 0]
    n_obs = mf.sum(-1)
    return (-0.5 * quad + (z * info).sum(-1) - 0.5 * z_prec_z - log_norm
            - 0.5 * math.log(2.0 * math.pi) * n_obs)


def latent_posterior(layout: Layout, c: str, g: dict, prior_mean, x, m, be: Backend, like):
    """Exact Gaussian posterior of a latent node's z given its block columns and its prior.

    z ~ N(prior_mean, I) and the block columns as in ``column_information``. Returns
    (mean (..., n, k), precision (..., n, k, k)). A patient without the block gets the prior
    back: this is how a missing modality is marginalised.
    """
    prec, info = column_information(layout, c, g, x, m, be, like)
    prec = be.eye(layout.latent_dim[c], like) + prec
    # the precision depends on the globals and the patient's observed columns only; invert it
    # at that shape and broadcast over whatever else ``prior_mean`` carries (the particles of
    # a prediction) instead of solving one system per particle
    cov = be.xp.linalg.inv(prec)
    mean = (cov * (prior_mean + info)[..., None, :]).sum(-1)
    return mean, prec


def latent_marginal_loglik(layout: Layout, c: str, g: dict, prior_mean, x, m, mean, prec,
                           be: Backend):
    """log p(observed block columns | the latent's parents), z integrated out, shape (..., n).

    With z ~ N(eta, I) and x_j ~ N(col_mean_j + loadings_j . z, col_sd_j^2) for observed j,
    the marginal is Gaussian with covariance loadings' loadings + diag(col_sd^2); through the
    exact posterior (``mean``, precision ``prec`` from ``latent_posterior``) it is
    -1/2 sum_j [log(2 pi sd_j^2) + r_j^2 / sd_j^2] - 1/2 |eta|^2 + 1/2 mean' prec mean
    - 1/2 log det prec, with r = x - col_mean. Every term is a (n, p) @ (..., p) product, so
    no (draws x patients x columns) array is formed (gene blocks have thousands of columns).
    A patient without the block gets 0.
    """
    mf = be.to_float(m, prior_mean)
    xm = x * mf
    inv_var = 1.0 / layout.col_sd(g, c, be) ** 2                           # (..., p)
    col_mean = layout.col_mean(g, c, be)
    quad = ((xm * x) @ inv_var[..., None] - 2.0 * xm @ (col_mean * inv_var)[..., None]
            + mf @ (col_mean ** 2 * inv_var)[..., None])[..., 0]            # (..., n)
    log_norm = (mf @ be.xp.log(2.0 * math.pi / inv_var)[..., None])[..., 0]
    chol = be.xp.linalg.cholesky(prec)
    diag = (be.xp.diagonal(chol, 0, -2, -1) if be.name == "pyro"
            else be.xp.diagonal(chol, axis1=-2, axis2=-1))
    log_det = 2.0 * be.xp.log(diag).sum(-1)
    fit = ((prec * mean[..., None, :]).sum(-1) * mean).sum(-1)      # mean' prec mean
    return -0.5 * (log_norm + quad) - 0.5 * (prior_mean ** 2).sum(-1) + 0.5 * fit - 0.5 * log_det


def loglik_curvature(layout: Layout, c: str, g: dict, eta, d: dict, be: Backend, like,
                     block=None):
    """Gradient and negative Hessian of an observed node's log-likelihood in its linear
    predictor ``eta`` (..., n, out), for a Gaussian (Laplace) view of what the node says
    about its parents. Returns (grad (..., n, out), neg_hessian (..., n, out, out)), zero
    where the node is unobserved.

    Gaussian nodes are quadratic in eta, so the view is exact; a latent node's "observation"
    is its block, whose information (P, r) about its z gives, with z ~ N(eta, I) integrated
    out, log N(P^-1 r; eta, I + P^-1): also exact. The GLM families (logistic, softmax,
    cumulative logit, Poisson / negative binomial, censored Weibull) are log-concave in eta,
    so the negative Hessian is positive semi-definite wherever it is evaluated. ``block``: a
    latent node's ``column_information`` when already computed.
    """
    kind = layout.kind[c]
    x, m = d[f"x:{c}"], d[f"m:{c}"]
    xp = be.xp
    if kind == "latent":
        prec, info = block or column_information(layout, c, g, x, m, be, like)
        eye = be.eye(layout.latent_dim[c], like)
        # (I + P^-1)^-1 = I - (I + P)^-1, finite when the block is missing (P = 0)
        inv = xp.linalg.inv(eye + prec)
        neg_h = eye - inv
        grad = (inv @ info[..., None])[..., 0] - (neg_h @ eta[..., None])[..., 0]
        return grad, neg_h
    family = layout.families.get(c)
    if family is None:
        raise ModelError(f"node {c!r} of kind {kind!r} has no likelihood in its parents")
    mf = be.to_float(m, like)[..., None]
    grad, neg_h = family.curvature(layout, c, g, eta, x, m, d, be)
    if family.multi_output:
        return grad * mf, neg_h * mf[..., None]
    return grad[..., None] * mf, (neg_h * mf[..., 0])[..., None, None]


# ----------------------------------------------------------------------------- the walk
class Walk:
    """The state of one pass through the graph (``walk``), handed to its visitor.

    ``enc``: the encodings of the nodes visited so far (z for a latent block), which their
    children's linear predictors read; ``codes``: group codes (n,), -1 where unknown;
    ``values``: every value set so far (model scale; intervened and shifted values included;
    the encodings themselves in an ``encoded`` walk);
    ``etas``: the linear predictors computed by ``eta``; ``do`` / ``shift``: the pass's
    interventions (model scale).
    """

    __slots__ = ("layout", "g", "d", "be", "like", "codes", "enc", "values", "etas", "do",
                 "shift")

    def __init__(self, layout, g, d, be, do=None, shift=None):
        self.layout, self.g, self.d, self.be, self.like = layout, g, d, be, d["one"]
        self.do, self.shift = dict(do or {}), dict(shift or {})
        self.codes = {c: be.xp.where(d[f"m:{c}"], d[f"x:{c}"], -1) for c in layout.order
                      if layout.kind[c] == "group"}
        self.enc = {}
        self.values, self.etas = {}, {}

    def eta(self, c: str):
        """Node ``c``'s linear predictor (..., n, out_dim) given the encodings set so far."""
        eta = linear_predictor(self.layout, c, self.g, self.enc, self.codes, self.be, self.like)
        self.etas[c] = eta
        return eta

    def data(self, c: str):
        """Node ``c``'s design arrays: values (model scale; codes for discrete) and mask."""
        return self.d[f"x:{c}"], self.d[f"m:{c}"]


def walk(layout: Layout, g: dict, d: dict, be: Backend, visit: Callable[[Walk, str], Any], *,
         do: dict | None = None, shift: dict | None = None, nodes=None,
         encoded: bool = False) -> Walk:
    """The one walk through the graph that every pass shares.

    Nodes are visited in topological order (only those in ``nodes`` when given; group nodes
    only as codes). An intervened node (``do``) takes its value and its incoming edges are cut
    (its parents are not read); any other node's value is what ``visit(walk, c)`` returns
    (model scale: codes for discrete nodes, z (..., n, k) for a latent block; None when no
    later node reads it), plus ``shift[c]`` when shifted (a count stays >= 0). Its encoding
    (``encode``) is what the linear predictors of its children read; with ``encoded=True``
    the visitor returns the encoding itself (the guide's expected encoding of a missing
    discrete parent is not a value). What differs between passes is only the visitor: the
    model's sample statements (``make_model``), ancestral prediction and simulation
    (``local_pass``), the weighted particle proposal (``particles.propose``), the
    counterfactual twin (``counterfactual.counterfactual_pass``) and the amortised guide
    (``guide.local_guide``). Returns the walk's final state.
    """
    w = Walk(layout, g, d, be, do=do, shift=shift)
    for c in layout.order:
        if layout.kind[c] == "group" or (nodes is not None and c not in nodes):
            continue
        if c in w.do:
            value = w.do[c]
        else:
            value = visit(w, c)
            if value is None:
                continue
            if c in w.shift:
                value = value + w.shift[c]
                if layout.kind[c] == "count":
                    value = value.clamp_min(0.0)
        w.values[c] = value
        w.enc[c] = value if encoded else encode(layout, c, value, be, w.like)
    return w


# ----------------------------------------------------------------------------- the model
def make_model(layout: Layout, be: Backend, n_patients: int, subsample_size: int | None = None
               ) -> Callable[[dict], None]:
    """A plain model function ``model(data)`` of the graph for back end ``be``.

    Global sites are sampled from their priors; inside one plate over patients each node is
    sampled in topological order: latent blocks as ``z`` plus a masked factor-analysis
    likelihood, observed nodes masked where missing, survival nodes as a censored-Weibull
    factor. A missing value of a node with children is a latent site ``<node>__missing``
    (continuous: sampled; discrete: enumerated in parallel, Pyro only).
    """
    if be.name == "numpyro":
        discrete = [n for n in layout.impute if layout.kind[n] != "continuous"]
        if discrete:
            raise ModelError(
                f"nodes {sorted(discrete)} are discrete parents with missing values; the NumPyro "
                "back end cannot enumerate them here (funsor is not installed); use "
                "method='svi' or give complete values for these nodes")

    def model(data: dict) -> None:
        g = {s.name: be.sample(s.name, s.prior_dist(be)) for s in layout.sites}
        plate_kwargs = {"subsample_size": subsample_size} if subsample_size else {}
        with be.plate(PLATE, n_patients, dim=-1, **plate_kwargs) as idx:
            d = data if not subsample_size else {k: v[idx] for k, v in data.items()}
            _model_nodes(layout, be, g, d)

    return model


def _model_nodes(layout: Layout, be: Backend, g: dict, d: dict) -> None:
    """The model's sample statements for one plate of patients: the walk with a visitor that
    samples each node (``be.sample`` / ``be.factor``)."""
    walk(layout, g, d, be, _sample_node)


def _sample_node(w: Walk, c: str):
    layout, be, g = w.layout, w.be, w.g
    kind = layout.kind[c]
    x, m = w.data(c)
    eta = w.eta(c)
    if kind == "latent":
        z = be.sample(c, be.dist.Normal(eta, 1.0).to_event(1))
        be.factor(f"{c}.columns", block_loglik(layout, c, g, z, x, m, be, w.like))
        return z
    family = layout.families[c]
    if not family.has_site:
        be.factor(c, family.log_lik(layout, c, g, eta, x, m, w.d, be))
        return None
    fam = family.dist(layout, c, g, eta, be)
    # the children read the site's value, not x: the same x when conditioned, but the
    # intervened value under poutine.do and a fresh draw under poutine.uncondition, so
    # that Pyro's own handlers give interventions and predictions on this model
    # (tests/model/test_pinning.py pins HybridBN's answers to them)
    value = be.sample(c, fam.mask(m), obs=x)
    if not layout.graph.children(c):
        return None
    if c in layout.impute:
        if kind == "continuous":
            # masked to the patients missing the value (the guide's site is too): an
            # observed patient's draw would be unused, and q and p of it cancel exactly
            # only when q is the family's own conditional
            imputed = be.sample(c + MISSING, fam.mask(~m))
            value = be.xp.where(m, value, imputed)
        elif kind == "count":
            raise ModelError(f"count node {c!r} has missing values and children; a missing "
                             "count parent cannot be imputed: give complete values")
        else:
            value = _enumerate_missing(layout, c, fam, x, m, be, w.like)
    return value


def _enumerate_missing(layout, c, fam, x, m, be, like):
    """Parallel enumeration of a missing discrete parent (Pyro): observed patients are forced
    to their value so the enumerated site adds nothing for them."""
    import torch

    kind = layout.kind[c]
    if kind == "binary":
        eta = fam.logits
        logits = torch.stack([torch.nn.functional.logsigmoid(-eta),
                              torch.nn.functional.logsigmoid(eta)], -1)
    else:
        logits = fam.logits
    n_levels = logits.shape[-1]
    forced = (be.one_hot(x, n_levels, logits.dtype) - 1.0) * 1e9
    logits = torch.where(m[..., None], forced, logits)
    return be.sample(c + MISSING, be.dist.Categorical(logits=logits),
                     infer={"enumerate": "parallel"})


# ----------------------------------------------------------------------------- local pass
def local_pass(layout: Layout, g: dict, d: dict, be: Backend, draw: Callable, *,
               mode: str, target: str | None = None, do: dict | None = None) -> dict:
    """Per-patient latents given global values ``g`` (leading sample dims allowed).

    ``mode="predict"``: ancestral posterior predictive: every unobserved node is drawn from
    its conditional given the evidence above it; ``do`` values (model scale) replace nodes
    and cut their incoming edges.
    ``mode="simulate"``: every node is drawn from its conditional (data from the model, on
    the model scale; latent blocks add ``"<node>.columns"``, survival nodes uncensored times).
    Returns ``{node: value}`` (codes for discrete nodes, z for latents) and, under
    ``"__eta__"``, the linear predictors ``{node: eta}``.
    """
    if mode not in ("predict", "simulate"):
        raise ValueError(f"mode must be 'predict' or 'simulate', not {mode!r}")

    def visit(w: Walk, c: str):
        kind = layout.kind[c]
        x, m = w.data(c)
        eta = w.eta(c)
        if kind == "latent":
            mean, prec = latent_posterior(layout, c, g, eta, x, m, be, w.like)
            z = draw(c, be.dist.MultivariateNormal(mean, precision_matrix=prec))
            if mode == "simulate":
                loc = layout.col_mean(g, c, be)[..., None, :] + z @ layout.loadings(g, c, be)
                w.values[f"{c}.columns"] = be.dist.Normal(
                    loc, layout.col_sd(g, c, be)[..., None, :]).sample()
            return z
        if mode == "simulate":
            value = _simulate_node(layout, c, g, eta, be)
            if kind == "survival":
                w.values[c] = value       # an uncensored time: no child reads it
                return None
            return value
        if kind == "survival" or (not layout.graph.children(c) and c != target):
            return None
        drawn = node_dist(layout, c, g, eta, be).sample()
        return be.xp.where(m, x, drawn) if c != target else drawn

    w = walk(layout, g, d, be, visit, do=do)
    values = dict(w.values)
    values["__eta__"] = w.etas
    return values


def _simulate_node(layout, c, g, eta, be):
    return layout.families[c].simulate(layout, c, g, eta, be)


def expected_encoding(layout, c, fam, x, m, be, like):
    """A discrete node's encoding: its value where observed (``m``), else its expectation under
    ``fam`` (shape (..., n, enc_dim))."""
    kind = layout.kind[c]
    if kind == "binary":
        return encode(layout, c, be.xp.where(m, x, fam.probs), be, like)
    n_levels = layout.n_levels[c]
    probs = fam.probs
    levels = be.xp.arange(n_levels, device=like.device)
    expected = sum(probs[..., j: j + 1] * encode(layout, c, levels[j].expand(x.shape), be, like)
                   for j in range(n_levels))
    return be.xp.where(m[..., None], encode(layout, c, x, be, like), expected)
