"""The generating engine: nodes of a Bayesian network sampled in topological order.

Every scenario states its generating model node by node through ``NetworkSampler``; each call
samples the node from its parents, adds the node and its edges to the truth graph and records
its parameters, so that graph, parameters and data can never disagree.

Parameter convention (``truth.parameters``), the same one ``bayesrad.model.HybridBN`` fits:

- ``coef[(parent_key, child_key)]``: effect of one unit of the parent (original scale) on the
  child's linear predictor: identity for continuous and latent children, logit for binary,
  cumulative logit for ordinal (``P(Y <= k) = sigmoid(cutpoint_k - eta)``), log rate for count,
  log time for survival. ``parent_key`` is the parent's name, or ``f"{parent}[{level}]"`` for
  a categorical parent (one-hot against its first level), or ``f"{block}[{j}]"`` for
  dimension ``j`` of a latent parent with ``latent_dim > 1`` (the block name alone when
  ``latent_dim == 1``). ``child_key`` follows the same rule for latent children
  (``f"{block}[{j}]"``). For a categorical child the value is a list with one coefficient per
  level (softmax, the first level's entry fixed at 0).
- ``intercept[key]``: as above (a per-level list for a categorical child, 0 for latents; for
  a factor-analysis column its intercept); ``sd[key]``: residual sd of a continuous node or of
  a factor-analysis column; ``cutpoints[name]``: increasing ordinal cutpoints;
  ``sigma[name]``: Gumbel scale of a Weibull AFT survival node and ``weibull_shape[name] =
  1 / sigma`` (``log T = intercept + eta + sigma * G``, ``G`` standard Gumbel-min);
  ``censoring[name]``: administrative window and uniform drop-out bound in days.
- ``loadings[block]``: ``{column: [loading_1, ..., loading_k]}`` of a latent block
  (``column = intercept + loadings . z + N(0, sd)``; for count blocks the same holds for the
  log mean, with negative-binomial counts, ``dispersion[column]`` and a per-patient size factor).
- ``probs[name]``: level probabilities of a root categorical or group node.
- ``group_effects[(group, child_key)]``: ``{level: random intercept}`` of a group node (centre)
  on a child's linear predictor, drawn from ``N(0, group_sd[(group, child_key)]**2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy.special import expit, softmax

from bayesrad.data.schema import ColumnType


def _base(key: str) -> str:
    """Node name of a parameter key: ``"histology[squamous]"`` -> ``"histology"``."""
    return key.split("[", 1)[0]


class NetworkSampler:
    """Samples nodes one by one and keeps the truth graph and parameters in step.

    Parameters
    ----------
    n : number of patients.
    rng : numpy Generator used for every draw, in call order (same seed -> same data).
    """

    def __init__(self, n: int, rng: np.random.Generator):
        self.n = n
        self.rng = rng
        self.graph = nx.DiGraph()
        self.values: dict[str, np.ndarray] = {}
        self.blocks: dict[str, dict[str, np.ndarray]] = {}
        self.schema: dict[str, dict[str, ColumnType]] = {}
        self.latents: dict[str, np.ndarray] = {}
        self.outcome_probability: dict[str, np.ndarray] = {}
        self.params: dict[str, dict] = {
            key: {}
            for key in (
                "coef", "intercept", "sd", "cutpoints", "sigma", "weibull_shape", "loadings",
                "levels", "probs", "group_effects", "group_sd", "censoring", "dispersion",
            )
        }

    # ------------------------------------------------------------------ helpers
    def _add_node(self, name: str, kind: str, block: str, **attrs) -> None:
        if "[" in name or name in self.graph:
            raise ValueError(f"node {name!r} already defined or badly named")
        self.graph.add_node(name, kind=kind, block=block, **attrs)

    def parent_values(self, key: str) -> np.ndarray:
        """Values of a parent key (column, one-hot level or latent dimension), shape (n,)."""
        if key in self.values:
            return self.values[key]
        node, _, level = key.partition("[")
        level = level.rstrip("]")
        if node in self.values and self.graph.nodes[node]["kind"] == "categorical":
            levels = self.graph.nodes[node]["levels"]
            if level not in levels[1:]:
                raise ValueError(f"{key!r}: level must be one of {levels[1:]} (first is reference)")
            return (self.values[node] == level).astype(float)
        raise KeyError(f"unknown parent {key!r}: define it before its children")

    def _eta(self, child_key: str, coefs: dict[str, float] | None, groups: dict[str, float] | None) -> np.ndarray:
        eta = np.zeros(self.n)
        child = _base(child_key)
        for key, c in (coefs or {}).items():
            eta = eta + float(c) * self.parent_values(key)
            self.params["coef"][(key, child_key)] = float(c)
            self.graph.add_edge(_base(key), child)
        for group, tau in (groups or {}).items():
            levels = self.graph.nodes[group]["levels"]
            if isinstance(tau, dict):
                # Effects fixed by the scenario (e.g. one scanner factor shared by several nodes).
                effects = np.array([tau[level] for level in levels], float)
            else:
                effects = self.rng.normal(0.0, tau, len(levels))
                self.params["group_sd"][(group, child_key)] = float(tau)
            self.params["group_effects"][(group, child_key)] = dict(zip(levels, effects.tolist()))
            position = {level: i for i, level in enumerate(levels)}
            codes = np.array([position[v] for v in self.values[group]], dtype=int)
            eta = eta + effects[codes]
            self.graph.add_edge(group, child)
        return eta

    def _column(self, block: str, name: str, values: np.ndarray, ctype: ColumnType) -> None:
        self.blocks.setdefault(block, {})[name] = values
        self.schema.setdefault(block, {})[name] = ctype
        self.values[name] = values

    # ------------------------------------------------------------------ node families
    def group(self, name: str, levels: Sequence[str], probs: Sequence[float], block: str = "clinical") -> np.ndarray:
        """A group node (e.g. centre): a categorical root whose children get random intercepts."""
        levels = tuple(levels)
        probs = np.asarray(probs, float) / np.sum(probs)
        self._add_node(name, "group", block, levels=levels)
        values = np.asarray(levels, dtype=object)[self.rng.choice(len(levels), self.n, p=probs)]
        self.params["probs"][name] = dict(zip(levels, probs.tolist()))
        self.params["levels"][name] = list(levels)
        self._column(block, name, values, ColumnType("categorical", levels=levels))
        return values

    def continuous(self, name, block, intercept, sd, coefs=None, groups=None, unit=None) -> np.ndarray:
        """Linear-Gaussian node: ``intercept + coefs . parents + N(0, sd^2)`` in ``unit``."""
        self._add_node(name, "continuous", block, unit=unit)
        eta = self._eta(name, coefs, groups)
        values = intercept + eta + self.rng.normal(0.0, sd, self.n)
        self.params["intercept"][name] = float(intercept)
        self.params["sd"][name] = float(sd)
        self._column(block, name, values, ColumnType("continuous", unit=unit))
        return values

    def binary(self, name, block, intercept, coefs=None, groups=None) -> np.ndarray:
        """Logistic node: ``P(1) = sigmoid(intercept + coefs . parents)``."""
        self._add_node(name, "binary", block)
        prob = expit(intercept + self._eta(name, coefs, groups))
        values = (self.rng.random(self.n) < prob).astype(float)
        self.params["intercept"][name] = float(intercept)
        if block == "outcome":
            self.outcome_probability[name] = prob
        self._column(block, name, values, ColumnType("binary"))
        return values

    def ordinal(self, name, block, levels, cutpoints, coefs=None, groups=None) -> np.ndarray:
        """Cumulative-logit node: ``P(Y <= level_k) = sigmoid(cutpoint_k - eta)``, numeric levels."""
        levels = tuple(levels)
        cutpoints = np.asarray(cutpoints, float)
        assert len(cutpoints) == len(levels) - 1 and np.all(np.diff(cutpoints) > 0)
        self._add_node(name, "ordinal", block, levels=levels)
        eta = self._eta(name, coefs, groups)
        cumulative = expit(cutpoints[None, :] - eta[:, None])
        u = self.rng.random(self.n)
        index = (u[:, None] > cumulative).sum(axis=1)
        values = np.asarray(levels, float)[index]
        self.params["cutpoints"][name] = cutpoints.tolist()
        self.params["levels"][name] = list(levels)
        self._column(block, name, values, ColumnType("ordinal", levels=levels))
        return values

    def categorical(self, name, block, levels, intercepts, coefs=None) -> np.ndarray:
        """Softmax node over text ``levels``; intercepts and coefs are per-level lists (first 0)."""
        levels = tuple(levels)
        self._add_node(name, "categorical", block, levels=levels)
        logits = np.tile(np.asarray(intercepts, float), (self.n, 1))
        for key, per_level in (coefs or {}).items():
            per_level = np.asarray(per_level, float)
            logits = logits + self.parent_values(key)[:, None] * per_level[None, :]
            self.params["coef"][(key, name)] = per_level.tolist()
            self.graph.add_edge(_base(key), name)
        probs = softmax(logits, axis=1)
        u = self.rng.random(self.n)
        index = np.minimum((u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1), len(levels) - 1)
        values = np.asarray(levels, dtype=object)[index]
        self.params["intercept"][name] = np.asarray(intercepts, float).tolist()
        self.params["levels"][name] = list(levels)
        if block == "outcome":
            for j, level in enumerate(levels):
                self.outcome_probability[f"{name}[{level}]"] = probs[:, j]
        self._column(block, name, values, ColumnType("categorical", levels=levels))
        return values

    def count(self, name, block, intercept, coefs=None, groups=None, unit=None) -> np.ndarray:
        """Poisson node with log link: ``rate = exp(intercept + coefs . parents)``."""
        self._add_node(name, "count", block, unit=unit)
        rate = np.exp(intercept + self._eta(name, coefs, groups))
        values = self.rng.poisson(rate).astype(float)
        self.params["intercept"][name] = float(intercept)
        self._column(block, name, values, ColumnType("count", unit=unit))
        return values

    def survival(self, name, block, intercept, sigma, coefs=None, groups=None,
                 admin_days=(1095.0, 2190.0), dropout_days=5000.0) -> tuple[np.ndarray, np.ndarray]:
        """Weibull accelerated-failure-time node in days, with independent right censoring.

        ``log T = intercept + coefs . parents + sigma * G`` with ``G = log(Exp(1))`` (standard
        Gumbel-min), i.e. Weibull with shape ``1 / sigma``. Censoring time
        ``C = min(U(admin_days), U(0, dropout_days))`` (staggered accrual, uniform drop-out);
        observed time ``min(T, C)`` and event ``T <= C``. Returns (time, event).
        """
        event_name = f"{name}_event"
        self._add_node(name, "survival", block, unit="days", event=event_name)
        log_time = intercept + self._eta(name, coefs, groups) + sigma * np.log(self.rng.exponential(1.0, self.n))
        true_time = np.exp(log_time)
        censor = np.minimum(self.rng.uniform(*admin_days, self.n), self.rng.uniform(0.0, dropout_days, self.n))
        time = np.round(np.maximum(np.minimum(true_time, censor), 1.0), 1)
        event = (true_time <= censor).astype(float)
        self.params["intercept"][name] = float(intercept)
        self.params["sigma"][name] = float(sigma)
        self.params["weibull_shape"][name] = 1.0 / float(sigma)
        self.params["censoring"][name] = {"admin_days": list(admin_days), "dropout_days": float(dropout_days)}
        self.latents[f"{name}_true_time"] = true_time
        self._column(block, name, time, ColumnType("survival", unit="days", event=event_name))
        self._column(block, event_name, event, ColumnType("event"))
        return time, event

    def latent(self, name, block, dim, coefs=None, groups=None) -> np.ndarray:
        """A ``dim``-dimensional latent for block ``name``: ``z_j = coefs_j . parents + N(0, 1)``.

        ``coefs`` is a list (one dict per dimension) of parent-key -> coefficient; ``groups``
        likewise (a group's value: the sd of its random intercepts, or a dict level -> fixed
        effect). Returns z, shape (n, dim); dimension keys are ``f"{name}[{j}]"`` (or ``name``
        when ``dim == 1``).
        """
        self._add_node(name, "latent", block, latent_dim=dim, columns=[])
        z = np.empty((self.n, dim))
        for j in range(dim):
            key = name if dim == 1 else f"{name}[{j}]"
            eta = self._eta(key, (coefs or [{}] * dim)[j], (groups or [{}] * dim)[j])
            z[:, j] = eta + self.rng.normal(0.0, 1.0, self.n)
            self.params["intercept"][key] = 0.0
            self.values[key] = z[:, j]
            self.latents[key] = z[:, j]
        return z

    def factor_block(self, latent: str, columns: Sequence[str], intercepts, loadings, sds, units=None) -> np.ndarray:
        """Continuous columns of a latent's block: ``intercept + loadings . z + N(0, sd^2)``.

        ``loadings`` has shape (len(columns), latent_dim). Returns the values, shape (n, p).
        """
        node = self.graph.nodes[latent]
        z = self._latent_matrix(latent)
        loadings = np.asarray(loadings, float).reshape(len(columns), node["latent_dim"])
        values = np.asarray(intercepts)[None, :] + z @ loadings.T + self.rng.normal(0.0, 1.0, (self.n, len(columns))) * np.asarray(sds)[None, :]
        node["columns"] = list(node["columns"]) + list(columns)
        self.params["loadings"].setdefault(node["block"], {})
        for i, col in enumerate(columns):
            self.params["loadings"][node["block"]][col] = loadings[i].tolist()
            self.params["intercept"][col] = float(np.asarray(intercepts)[i])
            self.params["sd"][col] = float(np.asarray(sds)[i])
            unit = None if units is None else units[i]
            self._column(node["block"], col, values[:, i], ColumnType("continuous", unit=unit))
        return values

    def count_factor_block(self, latent: str, columns: Sequence[str], intercepts, loadings, sds,
                           dispersion, size_factor) -> np.ndarray:
        """Negative-binomial count columns (genes) of a latent's block.

        ``log mu = log(size_factor) + intercept + loadings . z + N(0, sd^2)``; counts are
        Gamma-Poisson with mean ``mu`` and variance ``mu + dispersion * mu^2``. Returns the
        counts, shape (n, p).
        """
        node = self.graph.nodes[latent]
        z = self._latent_matrix(latent)
        p = len(columns)
        loadings = np.asarray(loadings, float).reshape(p, node["latent_dim"])
        log_mu = (np.log(size_factor)[:, None] + np.asarray(intercepts)[None, :] + z @ loadings.T
                  + self.rng.normal(0.0, 1.0, (self.n, p)) * np.asarray(sds)[None, :])
        dispersion = np.asarray(dispersion, float)
        gamma = self.rng.gamma(1.0 / dispersion[None, :], dispersion[None, :], (self.n, p))
        counts = self.rng.poisson(np.exp(log_mu) * gamma).astype(float)
        node["columns"] = list(node["columns"]) + list(columns)
        block = node["block"]
        self.params["loadings"].setdefault(block, {})
        for i, col in enumerate(columns):
            self.params["loadings"][block][col] = loadings[i].tolist()
            self.params["intercept"][col] = float(np.asarray(intercepts)[i])
            self.params["sd"][col] = float(np.asarray(sds)[i])
            self.params["dispersion"][col] = float(dispersion[i])
            self.blocks.setdefault(block, {})[col] = counts[:, i]
            self.schema.setdefault(block, {})[col] = ColumnType("count")
        self.latents[f"{latent}_size_factor"] = np.asarray(size_factor, float)
        return counts

    def _latent_matrix(self, latent: str) -> np.ndarray:
        dim = self.graph.nodes[latent]["latent_dim"]
        keys = [latent] if dim == 1 else [f"{latent}[{j}]" for j in range(dim)]
        return np.column_stack([self.values[k] for k in keys])
