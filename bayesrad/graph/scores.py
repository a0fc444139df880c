"""BIC structure scores in numpy with the values of pgmpy's ``bic-g``, ``bic-d`` and ``bic-cg``.

A structure search evaluates thousands of local scores ``score(child | parents)``. pgmpy's
implementations cost ~10 ms (``bic-g``: a statsmodels GLM from a formula) and ~27 ms
(``bic-cg``: a pandas ``groupby`` with one ``scipy.stats.multivariate_normal`` per group and
per density) each, which makes hill climbing over 40 mixed nodes and its 100 bootstraps take
hours. The classes here compute the *same numbers* from arrays prepared once: group codes by
mixed-radix arithmetic, group means and covariances by ``bincount``, and every group's density
in one batched ``eigh``. They do not import pgmpy (whose import pulls in torch and takes
seconds in every bootstrap worker); the tests check them against pgmpy's classes.

``ConditionalGaussianBIC`` reproduces pgmpy 1.1's ``BICCondGauss`` exactly, including the
details that are pgmpy's choices rather than textbook ones (Andrews, Ramsey & Cooper 2018):

- covariances are sample covariances (``n - 1``); a group with one row, or fewer rows than
  dimensions, gets the identity matrix; a covariance with an eigenvalue within 1e-8 of zero
  gets 1e-6 added to *every* entry;
- densities are scipy's (pseudo-determinant and pseudo-inverse with scipy's eigenvalue cut-off,
  density 0 off the support of a singular covariance);
- every density in a denominator is floored at 1e-8 before the ratio is taken. The floor is
  in density units, so it depends on the scale of the continuous columns: the learners
  standardise continuous columns before scoring (``standardise_continuous``), where the floor
  only touches rows more than ~6 sd out;
- free parameters: ``q (n_cont + 2)`` for a continuous child and ``q (r - 1)`` (times
  ``n_cont + 2`` with continuous parents) for a discrete child with ``r`` levels, where ``q``
  is the product of the discrete parents' numbers of observed levels.

Local scores are cached per ``(child, parent set)``: the parent order never changes a value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_LOG_2PI = float(np.log(2.0 * np.pi))
# pgmpy's floor on denominator densities (``np.maximum(1e-8, pdf)``).
_DENSITY_FLOOR = 1e-8
# scipy's relative eigenvalue cut-off for float64 in ``multivariate_normal(allow_singular=True)``.
_EIGEN_CUTOFF = 1e6 * np.finfo(float).eps


def standardise_continuous(data: pd.DataFrame) -> pd.DataFrame:
    """Continuous (float) columns centred and scaled to unit sample sd; others unchanged.

    A BIC score of a Gaussian or conditional-Gaussian network changes by a constant per node
    under an affine change of units, so the search is unaffected, except for pgmpy's density
    floor (see the module docstring), which this puts at a fixed number of sd.
    """
    out = data.copy()
    for col in out.columns:
        series = out[col]
        if pd.api.types.is_float_dtype(series):
            sd = float(series.std())
            out[col] = (series - float(series.mean())) / (sd if sd > 0 else 1.0)
    return out


class _ArrayScore:
    """Shared set-up: column arrays, discrete codes and a cache keyed by sorted parents.

    Typing as pgmpy's: numeric (non-boolean) columns are continuous, every other column
    (categorical, text, boolean) discrete with its observed values as levels.
    """

    def __init__(self, data: pd.DataFrame):
        self.data = data
        self.n_rows = len(self.data)
        self._log_n = float(np.log(self.n_rows))
        self._continuous = {}
        self._codes = {}
        self._n_levels = {}
        for name in self.data.columns:
            series = self.data[name]
            if (pd.api.types.is_numeric_dtype(series)
                    and not pd.api.types.is_bool_dtype(series)):
                self._continuous[name] = series.to_numpy(dtype=float)
            else:
                codes, uniques = pd.factorize(series, sort=True)
                self._codes[name] = codes.astype(np.int64)
                self._n_levels[name] = len(uniques)
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}

    def local_score(self, variable: str, parents) -> float:
        """The local score of ``variable`` given the ``parents`` (any order), cached."""
        key = (variable, tuple(sorted(parents)))
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = float(self._local_score(variable, key[1]))
        return value

    def _group_inverse(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row -> group index over the observed combinations of discrete ``names``, and the
        group sizes (one group when ``names`` is empty)."""
        if not names:
            return np.zeros(self.n_rows, dtype=np.int64), np.array([self.n_rows])
        code = np.zeros(self.n_rows, dtype=np.int64)
        for name in names:
            code = code * self._n_levels[name] + self._codes[name]
        _, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
        return inverse.ravel(), counts


class GaussianBIC(_ArrayScore):
    """pgmpy's ``bic-g`` (linear-Gaussian BIC) with ``numpy.linalg.lstsq``.

    The value is the Gaussian log-likelihood at the ML variance, ``-n/2 (log(2 pi RSS/n) +
    1)``, minus ``(p + 2)/2 log n`` for ``p`` parents (pgmpy fits the same regression through
    statsmodels; ~0.1 ms here against ~10 ms).
    """

    def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
        n = self.n_rows
        y = self._continuous[variable]
        design = np.column_stack([np.ones(n)] + [self._continuous[p] for p in parents])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        rss = float(np.sum((y - design @ coef) ** 2))
        log_likelihood = -0.5 * n * (np.log(2 * np.pi * max(rss, 1e-300) / n) + 1.0)
        return log_likelihood - (len(parents) + 2) / 2.0 * self._log_n


class DiscreteBIC(_ArrayScore):
    """pgmpy's ``bic-d`` (BIC of a discrete network) from ``bincount`` contingency counts.

    ``sum_jk N_jk log(N_jk / N_j) - 1/2 log(n) q (r - 1)`` with ``q`` the product of the
    parents' numbers of observed states and ``r`` the child's (pgmpy's state names); pgmpy
    builds the counts with a pandas ``groupby``.
    """

    def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
        r = self._n_levels[variable]
        levels = self._n_levels[variable]
        inverse, counts = self._group_inverse(list(parents))
        joint = np.bincount(inverse * levels + self._codes[variable],
                            minlength=len(counts) * levels).reshape(-1, levels).astype(float)
        margin = joint.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(joint > 0, joint * (np.log(joint) - np.log(margin)), 0.0)
        q = int(np.prod([self._n_levels[p] for p in parents]))
        return float(terms.sum()) - 0.5 * self._log_n * q * (r - 1)


def _grouped_log_density(x: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-row Gaussian log-density of ``x`` under its group's mean and pgmpy-adjusted
    covariance (see the module docstring), as ``scipy.stats.multivariate_normal.pdf(...,
    allow_singular=True)`` followed by ``log`` would give it.

    Parameters
    ----------
    x : (n, d) values; inverse : (n,) group index of each row; counts : (G,) group sizes.

    Returns
    -------
    (n,) log-densities (``-inf`` where scipy's density is 0: off a singular support).
    """
    n_groups, dim = len(counts), x.shape[1]
    sums = np.stack([np.bincount(inverse, weights=x[:, j], minlength=n_groups)
                     for j in range(dim)], axis=1)
    means = sums / counts[:, None]
    dev = x - means[inverse]
    scatter = np.empty((n_groups, dim, dim))
    for j in range(dim):
        for k in range(j, dim):
            scatter[:, j, k] = scatter[:, k, j] = np.bincount(
                inverse, weights=dev[:, j] * dev[:, k], minlength=n_groups)
    identity = (counts == 1) | (counts < dim)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = scatter / (counts - 1.0)[:, None, None]
    cov[identity] = np.eye(dim)
    eigenvalues, vectors = np.linalg.eigh(cov)
    # pgmpy's test ``np.isclose(np.linalg.eig(cov)[0], 0).any()`` on the eigenvalues of the
    # (symmetric) estimate; the bumped groups are decomposed again.
    bump = ~identity & (np.abs(eigenvalues) <= 1e-8).any(axis=1)
    if bump.any():
        cov[bump] += 1e-6
        eigenvalues[bump], vectors[bump] = np.linalg.eigh(cov[bump])
    eps = _EIGEN_CUTOFF * np.abs(eigenvalues).max(axis=1, keepdims=True)
    keep = eigenvalues > eps
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, eigenvalues, 1.0)), 0.0)
        log_pdet = np.where(keep, np.log(np.where(keep, eigenvalues, 1.0)), 0.0).sum(axis=1)
    rank = keep.sum(axis=1)
    whitening = vectors * inv_sqrt[:, None, :]
    maha = np.square(np.einsum("nd,nde->ne", dev, whitening[inverse])).sum(axis=1)
    log_density = -0.5 * (rank[inverse] * _LOG_2PI + log_pdet[inverse] + maha)
    singular = rank < dim
    if singular.any():
        # scipy sets the density to 0 off the support: residual along the null eigenvectors
        # at least 1e3 * eps.
        null = np.where(keep, 0.0, 1.0)
        residual = np.sqrt(np.square(np.einsum("nd,nde->ne", dev, vectors[inverse])
                                     * null[inverse]).sum(axis=1))
        off = singular[inverse] & (residual >= 1e3 * eps[inverse, 0])
        log_density[off] = -np.inf
    return log_density


class ConditionalGaussianBIC(_ArrayScore):
    """pgmpy's ``bic-cg`` (conditional-Gaussian BIC for mixed data), vectorised.

    Continuous columns are numeric, discrete ones categorical (pgmpy's typing). The value
    equals ``pgmpy.structure_score.BICCondGauss(data).local_score(child, parents)`` (to
    floating-point rounding; see the module docstring) at ~1/100 of its cost.
    """

    def _n_parameters(self, variable: str, parents: tuple[str, ...]) -> int:
        n_continuous = sum(p in self._continuous for p in parents)
        q = 1
        for p in parents:
            if p in self._n_levels and self._n_levels[p] > 1:
                q *= self._n_levels[p]
        if variable in self._continuous:
            return q * (n_continuous + 2)
        k = q * (self._n_levels[variable] - 1)
        return k if n_continuous == 0 else k * (n_continuous + 2)

    def _log_likelihood(self, variable: str, parents: tuple[str, ...]) -> float:
        continuous = [p for p in parents if p in self._continuous]
        discrete = [p for p in parents if p not in self._continuous]
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            if variable in self._continuous:
                inverse, counts = self._group_inverse(discrete)
                x = np.column_stack([self._continuous[variable]]
                                    + [self._continuous[c] for c in continuous])
                joint = np.exp(_grouped_log_density(x, inverse, counts))
                if not continuous:
                    return float(np.sum(np.log(joint)))
                marginal = np.exp(_grouped_log_density(x[:, 1:], inverse, counts))
                return float(np.sum(np.log(joint / np.maximum(_DENSITY_FLOOR, marginal))))
            inner, inner_counts = self._group_inverse([variable] + discrete)
            outer, outer_counts = self._group_inverse(discrete)
            p_inner = inner_counts[inner] / self.n_rows
            p_outer = outer_counts[outer] / self.n_rows if discrete else 1.0
            if continuous:
                x = np.column_stack([self._continuous[c] for c in continuous])
                density_inner = np.exp(_grouped_log_density(x, inner, inner_counts))
                density_outer = np.maximum(
                    _DENSITY_FLOOR, np.exp(_grouped_log_density(x, outer, outer_counts)))
            else:
                density_inner = density_outer = 1.0
            return float(np.sum(np.log((density_inner * p_inner)
                                       / (density_outer * p_outer))))

    def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
        return (self._log_likelihood(variable, parents)
                - self._n_parameters(variable, parents) / 2.0 * self._log_n)


def _newton(objective, start: np.ndarray, max_iter: int = 100, tol: float = 1e-10):
    """Maximise a concave ``objective(w) -> (value, gradient, hessian)`` by Newton steps
    with step halving; returns ``(w, value)``."""
    w = start
    value, grad, hess = objective(w)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(hess, -grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, -grad, rcond=None)[0]
        for _ in range(30):
            candidate = w + step
            new_value, new_grad, new_hess = objective(candidate)
            if np.isfinite(new_value) and new_value >= value - 1e-12 * abs(value):
                break
            step = step / 2.0
        else:
            break
        improvement = new_value - value
        w, value, grad, hess = candidate, new_value, new_grad, new_hess
        if improvement < tol * max(1.0, abs(value)):
            break
    return w, value


# Ridge on the slopes of the discrete and count models (standardised predictors): negligible
# where the maximum likelihood exists, and it keeps separated classes finite.
_RIDGE = 1e-3


def _logistic(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class GLMBIC(_ArrayScore):
    """BIC of the node families that ``HybridBN`` fits, at maximum likelihood.

    A child's conditional distribution is a generalised linear model of its parents, as in
    ``bayesrad.model`` (and in the simulator): continuous -> Gaussian linear regression;
    binary / categorical -> (multinomial) logistic regression against the first level;
    ordinal (an *ordered* categorical) -> proportional-odds (cumulative logit) model; count
    (an integer column) -> Poisson regression with a log link. Parents enter additively:
    a numeric parent as its standardised value, an ordinal parent as its standardised level
    index, an unordered categorical parent as one-hot columns against its first level.

    Why not the conditional-Gaussian BIC: ``bic-cg`` gives a continuous child one Gaussian
    regression per *combination* of its discrete parents and a discrete child a full Gaussian
    of its continuous parents per level. With three discrete parents of 4, 3 and 4 levels a
    continuous child pays for 48 regressions, so additive clinical effects (stage, ECOG and
    centre on the dose) are never found, while a discrete child collects continuous parents
    cheaply. Free parameters here: ``p + 2`` (Gaussian), ``(r - 1)(p + 1)`` (r-level
    logistic), ``r - 1 + p`` (ordinal), ``p + 1`` (Poisson), with ``p`` design columns.

    A *vector node* (``vector_nodes={node: [columns]}``, e.g. the k component scores of a
    radiomics block, which ``HybridBN`` models as one k-dimensional latent node) is one node:
    as a child a multivariate Gaussian regression with a free residual covariance
    (``k (p + 1) + k (k + 1) / 2`` parameters), as a parent all its k columns. The score is
    then invariant to rotations of the components.
    """

    def __init__(self, data: pd.DataFrame, vector_nodes=None):
        super().__init__(data)
        self.vector_nodes = vector_nodes
        self._family = {}
        self._design = {}
        members = set()
        for node, columns in (vector_nodes or {}).items():
            columns = list(columns)
            members.update(columns)
            not_numeric = [c for c in columns if c not in self._continuous]
            if not_numeric:
                raise ValueError(f"vector node {node!r}: columns {not_numeric} are not numeric")
            self._family[node] = "multivariate"
            self._design[node] = np.column_stack([_standardised(self._continuous[c])
                                                  for c in columns])
        for name in self.data.columns:
            if name in members:
                continue
            series = self.data[name]
            if name in self._continuous:
                values = self._continuous[name]
                integer = (pd.api.types.is_integer_dtype(series) and values.min() >= 0)
                self._family[name] = "poisson" if integer else "gaussian"
                self._design[name] = _standardised(values)[:, None]
            elif isinstance(series.dtype, pd.CategoricalDtype) and series.dtype.ordered:
                self._family[name] = "ordinal"
                self._design[name] = _standardised(self._codes[name].astype(float))[:, None]
            else:
                self._family[name] = "logistic"
                levels = self._n_levels[name]
                self._design[name] = (self._codes[name][:, None]
                                      == np.arange(1, levels)[None, :]).astype(float)
        # Gaussian children (the common case) are scored from one Gram matrix of the centred
        # design columns: a p x p solve instead of a least-squares fit on n rows.
        self._slices, start = {}, 0
        for name, block in self._design.items():
            self._slices[name] = np.arange(start, start + block.shape[1])
            start += block.shape[1]
        stacked = np.column_stack(list(self._design.values()))
        self._centred = stacked - stacked.mean(axis=0)
        self._gram = self._centred.T @ self._centred

    def _columns(self, names) -> np.ndarray:
        return (np.concatenate([self._slices[p] for p in names]) if names
                else np.zeros(0, dtype=int))

    def _residual_scatter(self, variable: str, parents: tuple[str, ...]) -> np.ndarray:
        """(k, k) residual sum of squares and products of the ML linear regression of the
        (standardised) ``variable`` on its parents' design columns."""
        y, x = self._slices[variable], self._columns(parents)
        scatter = self._gram[np.ix_(y, y)]
        if len(x):
            cross = self._gram[np.ix_(x, y)]
            coef = np.linalg.lstsq(self._gram[np.ix_(x, x)], cross, rcond=None)[0]
            scatter = scatter - cross.T @ coef
        if np.linalg.eigvalsh(scatter).min() < 1e-8 * np.trace(scatter):
            # Near-exact fit: the Gram-matrix difference has lost precision; refit on rows.
            design = self._centred[:, x]
            coef = np.linalg.lstsq(design, self._centred[:, y], rcond=None)[0]
            residual = self._centred[:, y] - design @ coef
            scatter = residual.T @ residual
        return scatter

    def n_parameters(self, variable: str, parents) -> int:
        """Free parameters of the family of ``variable`` given ``parents`` (BIC's ``k``)."""
        p = len(self._columns(tuple(parents)))
        family = self._family[variable]
        if family in ("multivariate", "gaussian"):
            dim = len(self._slices[variable])
            return dim * (p + 1) + dim * (dim + 1) // 2
        if family == "poisson":
            return p + 1
        levels = self._n_levels[variable]
        return levels - 1 + p if family == "ordinal" else (levels - 1) * (p + 1)

    def log_likelihood(self, variable: str, parents) -> float:
        """Maximised log-likelihood of ``variable`` given ``parents`` (standardised scale)."""
        parents = tuple(parents)
        n = self.n_rows
        family = self._family[variable]
        if family in ("multivariate", "gaussian"):
            dim = len(self._slices[variable])
            sign, log_det = np.linalg.slogdet(self._residual_scatter(variable, parents) / n)
            return -np.inf if sign <= 0 else -0.5 * n * (dim * np.log(2 * np.pi) + log_det + dim)
        x = (np.column_stack([self._design[p] for p in parents]) if parents
             else np.zeros((n, 0)))
        if family == "poisson":
            return _poisson_ll(self._continuous[variable], x)
        if family == "ordinal":
            return _ordinal_ll(self._codes[variable], self._n_levels[variable], x)
        return _multinomial_ll(self._codes[variable], self._n_levels[variable], x)

    def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
        return (self.log_likelihood(variable, parents)
                - self.n_parameters(variable, parents) / 2.0 * self._log_n)


def _standardised(values: np.ndarray) -> np.ndarray:
    sd = values.std()
    return (values - values.mean()) / (sd if sd > 0 else 1.0)


def _poisson_ll(y: np.ndarray, x: np.ndarray) -> float:
    from scipy.special import gammaln

    design = np.column_stack([np.ones(len(y)), x])
    ridge = np.r_[0.0, np.full(x.shape[1], _RIDGE)]

    def objective(w):
        eta = np.clip(design @ w, -50, 50)
        mu = np.exp(eta)
        value = float(np.sum(y * eta - mu)) - 0.5 * float(ridge @ w ** 2)
        grad = design.T @ (y - mu) - ridge * w
        hess = -(design.T * mu) @ design - np.diag(ridge)
        return value, grad, hess

    start = np.r_[np.log(max(y.mean(), 1e-12)), np.zeros(x.shape[1])]
    w, _ = _newton(objective, start)
    eta = np.clip(design @ w, -50, 50)
    return float(np.sum(y * eta - np.exp(eta) - gammaln(y + 1.0)))


def _multinomial_ll(codes: np.ndarray, levels: int, x: np.ndarray) -> float:
    n, p = len(codes), x.shape[1] + 1
    design = np.column_stack([np.ones(n), x])
    onehot = (codes[:, None] == np.arange(levels)[None, :]).astype(float)
    m = levels - 1
    ridge = np.tile(np.r_[0.0, np.full(p - 1, _RIDGE)], m)

    def log_probabilities(w):
        logits = np.column_stack([np.zeros(n), design @ w.reshape(m, p).T])
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def objective(w):
        logp = log_probabilities(w)
        prob = np.exp(logp)
        value = float(np.sum(onehot * logp)) - 0.5 * float(ridge @ w ** 2)
        grad = ((onehot - prob)[:, 1:].T @ design).ravel() - ridge * w
        hess = np.empty((m * p, m * p))
        for a in range(m):
            for b in range(a, m):
                weight = prob[:, a + 1] * ((a == b) - prob[:, b + 1])
                block = -(design.T * weight) @ design
                hess[a * p:(a + 1) * p, b * p:(b + 1) * p] = block
                hess[b * p:(b + 1) * p, a * p:(a + 1) * p] = block.T
        return value, grad, hess - np.diag(ridge)

    frequency = np.maximum(onehot.mean(axis=0), 1e-12)
    start = np.zeros((m, p))
    start[:, 0] = np.log(frequency[1:] / frequency[0])
    w, _ = _newton(objective, start.ravel())
    return float(np.sum(onehot * log_probabilities(w)))


def _ordinal_ll(codes: np.ndarray, levels: int, x: np.ndarray) -> float:
    """Proportional odds: ``P(Y <= k) = logistic(theta_k - x beta)``, ``k < levels - 1``."""
    n, m, p = len(codes), levels - 1, x.shape[1]
    upper = (codes[:, None] == np.arange(m)[None, :]).astype(float)       # theta_k bounds above
    lower = (codes[:, None] - 1 == np.arange(m)[None, :]).astype(float)   # theta_{k-1} below
    has_upper, has_lower = upper.sum(axis=1) > 0, lower.sum(axis=1) > 0
    ridge = np.r_[np.zeros(m), np.full(p, _RIDGE)]

    def parts(w):
        theta, beta = w[:m], w[m:]
        eta = x @ beta
        a = np.where(has_upper, upper @ theta - eta, np.inf)
        b = np.where(has_lower, lower @ theta - eta, -np.inf)
        fa, fb = _logistic(a), _logistic(b)
        prob = fa - fb
        return a, b, fa, fb, prob

    def objective(w):
        a, b, fa, fb, prob = parts(w)
        if np.any(prob <= 0) or np.any(np.diff(w[:m]) <= 0):
            return -np.inf, np.zeros_like(w), -np.eye(len(w))
        da, db = fa * (1 - fa), fb * (1 - fb)        # logistic densities (0 at +-inf)
        ga, gb = da / prob, -db / prob
        haa = da * (1 - 2 * fa) / prob - ga ** 2
        hbb = -db * (1 - 2 * fb) / prob - gb ** 2
        hab = -ga * gb
        grad = np.r_[upper.T @ ga + lower.T @ gb, -x.T @ (ga + gb)] - ridge * w
        h_tt = ((upper.T * haa) @ upper + (lower.T * hbb) @ lower
                + (upper.T * hab) @ lower + (lower.T * hab) @ upper)
        h_tb = -((upper.T * (haa + hab)) @ x + (lower.T * (hab + hbb)) @ x)
        h_bb = (x.T * (haa + 2 * hab + hbb)) @ x
        hess = np.block([[h_tt, h_tb], [h_tb.T, h_bb]]) - np.diag(ridge)
        value = float(np.sum(np.log(prob))) - 0.5 * float(ridge @ w ** 2)
        return value, grad, hess

    cumulative = np.clip(np.cumsum(np.bincount(codes, minlength=levels))[:m] / n, 1e-6,
                         1 - 1e-6)
    start = np.r_[np.log(cumulative / (1 - cumulative)), np.zeros(p)]
    w, _ = _newton(objective, start)
    return float(np.sum(np.log(parts(w)[4])))


__all__ = ["GaussianBIC", "DiscreteBIC", "ConditionalGaussianBIC", "GLMBIC", "standardise_continuous"]
