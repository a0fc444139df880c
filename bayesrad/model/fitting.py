"""The fitting loops of ``HybridBN``: SVI (exact local conditionals, an averaged q, restarts)
and NUTS through NumPyro, with the helpers they need (threads, device, initial values, the
empirical-Bayes block factors, the convergence warning)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from bayesrad.errors import ModelError
from bayesrad.graph.graph import Graph
from bayesrad.model.compile import Backend, Layout, design_arrays, make_model
from bayesrad.model.design import Design, Preprocessor
from bayesrad.model.guide import GlobalPosterior

# Above this many patients, SVI subsamples minibatches of this size.
_DEFAULT_BATCH = 1024
# The fitted q is an exponential moving average of the iterates (time constant ~100 steps):
# single-particle gradients leave the last iterate jittering around the optimum, which
# simulation-based calibration sees as rank histograms piled at both ends; averaging removes
# most of that jitter at no cost (SBC, 100 replicates, default settings: smallest p 0.021).
_AVERAGE_DECAY = 0.99


class _Fitting:
    """``HybridBN``'s fitting loops (a mixin: ``self`` is the estimator)."""

    def _fit_svi(self, design: Design) -> None:
        import pyro

        from bayesrad.model.svi import ClippedAdam, Objective

        layout = self.layout_
        n = design.n
        batch = self.batch_size or (None if n <= 2048 else _DEFAULT_BATCH)
        batch = None if batch is not None and batch >= n else batch
        family = self.guide
        if family not in ("block", "normal", "lowrank"):
            raise ModelError(f"guide must be 'block', 'normal' or 'lowrank' (got {family!r})")
        if self.num_particles < 1:
            raise ModelError(f"num_particles must be at least 1 (got {self.num_particles})")
        data = design_arrays(layout, design, Backend("pyro"), dtype=torch.float32,
                             device=self.device_)
        best = None
        for restart in range(self.n_restarts):
            torch.manual_seed(self.seed + 1000 * restart)   # on the generator fit() forked
            posterior = GlobalPosterior(layout, family).to(self.device_)
            _initialise(posterior, layout, design)
            objective = Objective(layout, posterior, data, self.num_particles, batch)
            # the distributions check their arguments and supports on the first evaluation;
            # on every step those checks would cost more than the arithmetic of small graphs
            with pyro.validation_enabled(True), torch.no_grad():
                objective()
            decay = self.lr_decay ** (1.0 / max(self.num_steps, 1))
            optim = ClippedAdam(posterior.parameters(), lr=self.learning_rate, lrd=decay,
                                clip_norm=10.0)
            history, smoothed, converged = [], None, False
            average = [param.detach().clone() for param in posterior.parameters()]
            steps = range(self.num_steps)
            if self.progress:
                from bayesrad.progress import progress_iter

                steps = progress_iter(steps, desc=f"SVI restart {restart + 1}/{self.n_restarts}",
                                      unit="steps")
            window_start = None
            with pyro.validation_enabled(False):
                for step in steps:
                    optim.zero_grad()
                    loss = objective()
                    loss.backward()
                    optim.step()
                    with torch.no_grad():
                        for kept, param in zip(average, posterior.parameters()):
                            kept.mul_(_AVERAGE_DECAY).add_(param, alpha=1.0 - _AVERAGE_DECAY)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise ModelError(
                            f"the ELBO became {value} at step {step}; lower learning_rate (now "
                            f"{self.learning_rate}) or check the data for extreme values")
                    history.append(value)
                    smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
                    if step % 100 == 0:
                        if (window_start is not None and step >= self.min_steps
                                and abs(window_start - smoothed) < self.tol * (1.0 + abs(smoothed))):
                            converged = True
                            break
                        window_start = smoothed
            if hasattr(steps, "close"):
                steps.close()  # the progress report's last line, also after an early stop
            with torch.no_grad():
                for kept, param in zip(average, posterior.parameters()):
                    param.copy_(kept)
            final = float(np.mean(history[-50:]))
            if best is None or final < best[0]:
                best = (final, posterior, history, converged)
        _, self.posterior_, history, self.converged_ = best
        if not self.converged_:
            _warn_unconverged(history, self.num_steps, self.tol)
        self.elbo_history_ = np.asarray(history)
        self.n_steps_ = len(history)
        self.guide_family_ = family
        self.batch_size_ = batch

    def _fit_nuts(self, design: Design) -> None:
        import jax
        from numpyro.infer import MCMC, NUTS

        layout = self.layout_
        be = Backend("numpyro")
        data = design_arrays(layout, design, be)
        model = make_model(layout, be, design.n)
        mcmc = MCMC(NUTS(model, target_accept_prob=0.9), num_warmup=self.num_warmup,
                    num_samples=self.num_samples, num_chains=self.num_chains,
                    chain_method="sequential", progress_bar=self.progress)
        mcmc.run(jax.random.PRNGKey(self.seed), data)
        grouped = mcmc.get_samples(group_by_chain=True)
        self.samples_ = {s.name: torch.tensor(np.array(grouped[s.name]), dtype=torch.float32)
                         for s in layout.sites}
        self.mcmc_ = mcmc


class _threads:
    """Temporarily set torch's intra-op thread count and the BLAS pools numpy/scipy use
    (``None``: leave them). The BLAS limit matters on small shared machines: the factor
    models' SVDs ran 4x slower oversubscribed than on one thread."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        self.before = torch.get_num_threads()
        self.blas = threadpool_limits(self.n, user_api="blas") if self.n else None
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
        if self.blas is not None:
            self.blas.restore_original_limits()


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device='cuda' was asked for but no CUDA device is available; "
                         "use device='auto' or 'cpu'")
    return torch.device(device)


def _initialise(posterior: GlobalPosterior, layout: Layout, design: Design) -> None:
    """Start latent loadings at the block's principal axes (a zero start is a saddle point
    of the factor model) and column sds at the residual sds."""
    for c in layout.order:
        if layout.kind[c] != "latent" or f"{c}.loadings" in layout.fixed:
            continue
        x, m = design.values[c], design.observed[c]
        rows = m.any(axis=1)
        if rows.sum() < 3:
            continue
        k = layout.latent_dim[c]
        u, s, vt = np.linalg.svd(x[rows], full_matrices=False)
        n_rows = rows.sum()
        load = (vt[:k] * (s[:k, None] / math.sqrt(n_rows)))
        # the model's loadings vanish for column j < factor i and are positive on the
        # diagonal; rotate the principal axes into that form (QR of the first k columns) so
        # the start lies in the constrained mode instead of behind a sign barrier
        q, r = np.linalg.qr(load[:, :k])
        load = q.T @ load
        signs = np.sign(np.diag(load[:, :k]))
        signs[signs == 0] = 1.0
        load = load * signs[:, None]
        resid = np.clip(1.0 - (load ** 2).sum(0), 0.05, None)
        posterior.set_init(f"{c}.loadings", torch.as_tensor(load, dtype=torch.float32))
        posterior.set_init(f"{c}.col_sd", torch.as_tensor(np.sqrt(resid), dtype=torch.float32))


def _fit_block_factors(graph: Graph, pre: Preprocessor, design: Design) -> None:
    """Fit the empirical-Bayes factor model of every latent node that asks for one
    (``prior: {factors: empirical_bayes}``, ``model/factors.fit_block``) on the training design,
    store it with the preprocessor's statistics (saved with the model) and set the node's
    ``latent_dim`` to the number of factors chosen by evidence (``latent_dim`` in the graph is
    its upper bound). Factors already in the statistics (a preprocessor passed to ``fit``) are
    kept."""
    from bayesrad.model.factors import fit_block

    for name in graph.nodes:
        spec = graph.spec(name)
        prior = spec.prior or {}
        if spec.kind != "latent" or prior.get("factors") != "empirical_bayes":
            continue
        stats = pre.stats_[name]
        if "factors" not in stats:
            stats["factors"] = fit_block(
                design.values[name], design.observed[name], stats["columns"],
                max_factors=spec.latent_dim, name=name,
                supervision=_supervision(graph, name, prior.get("supervise"), design))
        spec.latent_dim = len(stats["factors"]["variance"])


def _supervision(graph: Graph, name: str, outcome, design: Design):
    """``(outcome, y, kind)`` for latent node ``name``'s ``supervise`` prior (``y`` (n,), NaN
    where unobserved), or None when it has none."""
    if outcome is None:
        return None
    if outcome not in graph.nodes:
        raise ModelError(f"latent node {name!r}: 'supervise: {outcome}' names no node of the "
                         f"graph; use the name of the outcome node it should keep the signal of")
    kind = graph.spec(outcome).kind
    if kind not in ("binary", "categorical", "ordinal", "continuous"):
        raise ModelError(f"latent node {name!r}: 'supervise' needs a binary, categorical, "
                         f"ordinal or continuous outcome; {outcome!r} is {kind} (remove the key)")
    return outcome, np.where(design.observed[outcome], design.values[outcome], np.nan), kind


def _warn_unconverged(history, num_steps: int, tol: float) -> None:
    """Warn that SVI stopped at its step budget, with the trend of the loss per patient over
    its last windows (a still-falling loss means more steps would change the fit)."""
    from bayesrad.errors import ConvergenceWarning

    loss = np.asarray(history, dtype=float)
    window = min(100, max(len(loss) // 4, 1))
    means = [float(loss[max(0, end - window):end].mean())
             for end in range(len(loss), max(len(loss) - 3 * window, 0), -window)][::-1]
    trend = " -> ".join(f"{m:.4f}" for m in means)
    change = abs(means[-1] - means[0]) / (1.0 + abs(means[-1])) if len(means) > 1 else float("nan")
    warnings.warn(
        f"SVI reached num_steps={num_steps} without converging (relative change of the loss per "
        f"patient over the last {len(means)} windows of {window} steps: {change:.2e}, tol {tol:g}; "
        f"loss {trend}). Raise num_steps (e.g. HybridBN(..., num_steps={2 * num_steps})) or the "
        f"learning_rate, or check the fit with model.elbo_history_",
        ConvergenceWarning, stacklevel=3)
