"""The likelihood families of observed nodes: everything that depends on a node's family, in one place.

A node's kind (``graph.NodeSpec.kind``) fixes how it is stored and how it enters its children
(``compile.encode``); its *family* fixes how it depends on its own parents: the global sites
it owns besides its coefficients (intercept, noise sd, cutpoints, dispersion, shape), its
conditional distribution given its linear predictor ``eta``, what its likelihood says about
``eta`` as a Gaussian (gradient and negative Hessian, for the amortised guide and Laplace
steps), whether that Gaussian view is exact (then the particle driver folds the node into
its parents exactly), and how a draw is simulated. The model (``compile.make_model``), the
posterior-predictive pass, the particles behind ``predict``/``query``, the counterfactual twin
and the guide all ask the node's ``Family`` object and never test its name.

Adding a family is one class here and one line in ``FAMILIES``; a graph selects it through the
node's prior, e.g. ``NodeSpec("texture_entropy", "continuous", prior={"family": "student_t"})``
for an outlier-prone radiomics feature.

Every family works on the model scale of its kind (continuous values standardised with the
training mean and sd, counts raw with a log-mean offset, survival times divided by their
median) and is written against ``compile.Backend``'s shim (torch or jax.numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesrad.errors import ModelError

# Default intercept prior sds on the model scale (weakly informative: a logit intercept of a
# few units at most, a standardised Gaussian mean within about one sd).
_INTERCEPT_SCALE = {"continuous": 1.0, "binary": 2.5, "categorical": 2.5, "count": 2.0,
                    "survival": 2.0}


@dataclass(frozen=True)
class GlobalSite:
    """A global (patient-independent) parameter: name, shape, support ('real'/'positive') and
    its prior as ``(family, args)``, e.g. ``("Normal", (0.0, 1.0))``."""

    name: str
    shape: tuple[int, ...]
    support: str
    prior: tuple[str, tuple]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def prior_dist(self, be):
        family, args = self.prior
        d = getattr(be.dist, family)(*args)
        if self.shape:
            d = d.expand(self.shape).to_event(len(self.shape))
        return d


class Family:
    """One likelihood family. Subclasses set ``name`` and ``kind`` and implement ``dist`` and
    ``curvature``; ``layout`` is the compiled graph (``compile.Layout``), ``g`` the globals
    (draws in leading dims), ``eta`` the linear predictor (..., n, out)."""

    name: str = ""
    kind: str = ""
    #: the log-likelihood is quadratic in eta with a curvature free of eta and of the data:
    #: the guide's and the particles' Gaussian views of the node are exact
    gaussian: bool = False
    #: the node is a ``sample`` site with a distribution (else a ``factor``: censored times)
    has_site: bool = True
    #: eta is wider than one (categorical): curvature returns a vector and a matrix per patient
    multi_output: bool = False

    def sites(self, c: str, node_prior: dict, out: int, n_levels: int | None) -> list[GlobalSite]:
        """The global sites node ``c`` owns besides its coefficients: the intercept by default."""
        scale = float(node_prior.get("intercept_scale", _INTERCEPT_SCALE[self.kind]))
        return [GlobalSite(f"{c}.intercept", (out,), "real", ("Normal", (0.0, scale)))]

    def dist(self, layout, c: str, g: dict, eta, be):
        """The conditional distribution of the node given ``eta``, batch shape (..., n)."""
        raise NotImplementedError

    def log_lik(self, layout, c: str, g: dict, eta, x, m, d: dict, be):
        """log p(x | eta) per patient (..., n), 0 where unobserved (``m`` False)."""
        return be.xp.where(m, self.dist(layout, c, g, eta, be).log_prob(x), 0.0)

    def curvature(self, layout, c: str, g: dict, eta, x, m, d: dict, be):
        """Gradient and negative Hessian of log p(x | eta) in eta, each (..., n) for a one-wide
        predictor or (..., n, out) and (..., n, out, out) (``multi_output``); the caller masks
        unobserved patients."""
        raise NotImplementedError

    def noise_precision(self, layout, c: str, g: dict):
        """A location family's precision about its location (..., 1): the exact one of a
        Gaussian, the Fisher information of the others (the guide's Gaussian proposal for a
        missing value)."""
        raise ModelError(f"node {c!r}: family {self.name!r} is not a location family")

    def simulate(self, layout, c: str, g: dict, eta, be):
        """One draw of the node per patient given eta (model scale)."""
        return self.dist(layout, c, g, eta, be).sample()


class Normal(Family):
    """Gaussian on the standardised scale: x = eta + N(0, sd^2)."""

    name, kind, gaussian = "normal", "continuous", True

    def sites(self, c, node_prior, out, n_levels):
        return super().sites(c, node_prior, out, n_levels) + [
            GlobalSite(f"{c}.sd", (), "positive",
                       ("HalfNormal", (float(node_prior.get("noise_scale", 1.0)),)))]

    def dist(self, layout, c, g, eta, be):
        return be.dist.Normal(eta[..., 0], g[f"{c}.sd"][..., None])

    def noise_precision(self, layout, c, g):
        return g[f"{c}.sd"][..., None] ** -2.0

    def curvature(self, layout, c, g, eta, x, m, d, be):
        precision = self.noise_precision(layout, c, g)
        return (x - eta[..., 0]) * precision, precision + 0.0 * eta[..., 0]


class StudentT(Family):
    """Student-t on the standardised scale: x = eta + sd * t_df, for outlier-prone features
    (a radiomics texture with a few extreme patients pulls a Gaussian's mean and inflates its
    sd; the t down-weights them). ``df`` gets the Gamma(2, 0.1) prior of Juarez and Steel
    (2010), mean 20, which keeps it away from the Cauchy end unless the data insist."""

    name, kind = "student_t", "continuous"

    def sites(self, c, node_prior, out, n_levels):
        return Normal().sites(c, node_prior, out, n_levels) + [
            GlobalSite(f"{c}.df", (), "positive", ("Gamma", (2.0, 0.1)))]

    def _df(self, layout, c, g):
        return g[f"{c}.df"][..., None]

    def dist(self, layout, c, g, eta, be):
        return be.dist.StudentT(self._df(layout, c, g), eta[..., 0], g[f"{c}.sd"][..., None])

    def noise_precision(self, layout, c, g):
        # Fisher information of the location: (df + 1) / ((df + 3) sd^2)
        df = self._df(layout, c, g)
        return (df + 1.0) / ((df + 3.0) * g[f"{c}.sd"][..., None] ** 2)

    def curvature(self, layout, c, g, eta, x, m, d, be):
        # the observed negative Hessian of the t is negative for residuals beyond
        # sd * sqrt(df): the expected one (Fisher scoring) stays positive, as the guide's
        # Gaussian view needs, and equals it on average over x
        df, var = self._df(layout, c, g), g[f"{c}.sd"][..., None] ** 2
        resid = x - eta[..., 0]
        grad = (df + 1.0) * resid / (df * var + resid ** 2)
        return grad, self.noise_precision(layout, c, g) + 0.0 * eta[..., 0]


class Bernoulli(Family):
    """Logistic: P(x = 1) = sigmoid(eta)."""

    name, kind = "bernoulli", "binary"

    def dist(self, layout, c, g, eta, be):
        return be.dist.Bernoulli(logits=eta[..., 0])

    def curvature(self, layout, c, g, eta, x, m, d, be):
        p = 1.0 / (1.0 + be.xp.exp(-eta[..., 0]))
        return x - p, p * (1.0 - p)


class Softmax(Family):
    """Multinomial logit against the first level: eta holds the other levels' logits."""

    name, kind, multi_output = "softmax", "categorical", True

    def dist(self, layout, c, g, eta, be):
        return be.dist.Categorical(logits=be.cat([be.zeros_like_last(eta, 1), eta], axis=-1))

    def curvature(self, layout, c, g, eta, x, m, d, be):
        p = self.dist(layout, c, g, eta, be).probs[..., 1:]
        hot = be.one_hot(be.xp.where(m, x, 0), layout.n_levels[c], p.dtype)[..., 1:]
        return hot - p, be.diag_embed(p) - p[..., :, None] * p[..., None, :]


class CumulativeLogit(Family):
    """Ordinal (proportional odds): P(x <= j) = sigmoid(c_j - eta), cutpoints c_1 < ... ."""

    name, kind = "cumulative_logit", "ordinal"

    def sites(self, c, node_prior, out, n_levels):
        # no intercept: the cutpoints carry the location
        sites = [GlobalSite(f"{c}.cut_first", (), "real", ("Normal", (0.0, 3.0)))]
        if n_levels > 2:
            sites.append(GlobalSite(f"{c}.cut_gaps", (n_levels - 2,), "positive", ("HalfNormal", (3.0,))))
        return sites

    def dist(self, layout, c, g, eta, be):
        return be.dist.OrderedLogistic(eta[..., 0], layout.cutpoints(g, c, be)[..., None, :])

    def curvature(self, layout, c, g, eta, x, m, d, be):
        # P(y = j) = s(c_j - eta) - s(c_{j-1} - eta): d/deta log P = a + b - 1 and
        # -d2/deta2 log P = a(1 - a) + b(1 - b), with b = s(c_j - eta) (1 at the top level)
        # and a = s(c_{j-1} - eta) (0 at the bottom)
        e = eta[..., 0]
        cuts = layout.cutpoints(g, c, be)[..., None, :]
        s = 1.0 / (1.0 + be.xp.exp(-(cuts - e[..., None])))
        pad0, pad1 = be.zeros_like_last(s, 1), be.zeros_like_last(s, 1) + 1.0
        upper = be.cat([s, pad1], axis=-1)
        lower = be.cat([pad0, s], axis=-1)
        hot = be.one_hot(be.xp.where(m, x, 0), layout.n_levels[c], s.dtype)
        b, a = (upper * hot).sum(-1), (lower * hot).sum(-1)
        return a + b - 1.0, a * (1.0 - a) + b * (1.0 - b)


class Poisson(Family):
    """Poisson counts with a log link and the training log-mean as offset."""

    name, kind = "poisson", "count"

    def rate(self, layout, c, eta, be):
        return be.xp.exp(eta[..., 0] + layout.stats[c]["log_mean"])

    def dist(self, layout, c, g, eta, be):
        return be.dist.Poisson(self.rate(layout, c, eta, be))

    def curvature(self, layout, c, g, eta, x, m, d, be):
        rate = self.rate(layout, c, eta, be)
        return x - rate, rate


class NegativeBinomial(Poisson):
    """Overdispersed counts: Gamma-Poisson with a learned concentration (variance
    rate + rate^2 / concentration)."""

    name = "negbinom"

    def sites(self, c, node_prior, out, n_levels):
        return super().sites(c, node_prior, out, n_levels) + [
            GlobalSite(f"{c}.concentration", (), "positive", ("LogNormal", (1.0, 1.0)))]

    def dist(self, layout, c, g, eta, be):
        conc = g[f"{c}.concentration"][..., None]
        return be.dist.GammaPoisson(conc, conc / self.rate(layout, c, eta, be))

    def curvature(self, layout, c, g, eta, x, m, d, be):
        rate = self.rate(layout, c, eta, be)
        conc = g[f"{c}.concentration"][..., None]
        return (x - (x + conc) * rate / (conc + rate),
                (x + conc) * conc * rate / (conc + rate) ** 2)


class Weibull(Family):
    """Right-censored Weibull times (time / median): log scale = eta, a learned shape; the
    event indicator is ``d["e:<node>"]``. A factor, not a sample site: the censored
    likelihood is log f(t) for an event and log S(t) otherwise."""

    name, kind, has_site = "weibull", "survival", False

    def sites(self, c, node_prior, out, n_levels):
        return super().sites(c, node_prior, out, n_levels) + [
            GlobalSite(f"{c}.shape", (), "positive", ("LogNormal", (0.0, 1.0)))]

    def dist(self, layout, c, g, eta, be):
        raise ModelError(f"survival node {c!r} is a censored-Weibull factor, not a distribution")

    def log_lik(self, layout, c, g, eta, x, m, d, be):
        ll = weibull_loglik(eta[..., 0], g[f"{c}.shape"][..., None], be.xp.where(m, x, 1.0),
                            d[f"e:{c}"], be)
        return be.xp.where(m, ll, 0.0)

    def curvature(self, layout, c, g, eta, x, m, d, be):
        shape = g[f"{c}.shape"][..., None]
        log_t = be.xp.log(be.xp.where(m, x, 1.0))
        # (t / scale) ** shape, bounded so that a far-off expansion point stays finite
        z = be.xp.exp(be.xp.clip(shape * (log_t - eta[..., 0]), -30.0, 30.0))
        return shape * z - shape * d[f"e:{c}"], shape ** 2 * z

    def simulate(self, layout, c, g, eta, be):
        shape = g[f"{c}.shape"][..., None]
        u = be.xp.rand(eta[..., 0].shape).clamp_min(1e-12)
        return eta[..., 0].exp() * (-u.log()) ** (1.0 / shape)


def weibull_loglik(log_scale, shape, t, event, be):
    """Log-likelihood of right-censored Weibull times: log f(t) if event else log S(t)."""
    log_t = be.xp.log(t)
    z = be.xp.exp(shape * (log_t - log_scale))   # (t / scale) ** shape
    log_pdf = be.xp.log(shape) - log_scale + (shape - 1.0) * (log_t - log_scale) - z
    return be.xp.where(event > 0.5, log_pdf, -z)


#: kind -> {family name: Family}; the first is the kind's default
FAMILIES: dict[str, dict[str, Family]] = {}
for _family in (Normal(), StudentT(), Bernoulli(), Softmax(), CumulativeLogit(), Poisson(),
                NegativeBinomial(), Weibull()):
    FAMILIES.setdefault(_family.kind, {})[_family.name] = _family


def family_of(c: str, kind: str, node_prior: dict | None) -> Family:
    """The family of node ``c`` of ``kind``: ``node_prior["family"]`` or the kind's default.
    Raises ``ModelError`` naming the node and the choices for an unknown family."""
    choices = FAMILIES.get(kind)
    if choices is None:
        raise ModelError(f"node {c!r} of kind {kind!r} has no likelihood family")
    name = (node_prior or {}).get("family")
    if name is None:
        return next(iter(choices.values()))
    if name not in choices:
        raise ModelError(f"node {c!r}: family {name!r} is not one for a {kind} node; choose one "
                         f"of {sorted(choices)} (prior={{'family': ...}})")
    return choices[name]


__all__ = ["FAMILIES", "Family", "GlobalSite", "family_of", "weibull_loglik"]
