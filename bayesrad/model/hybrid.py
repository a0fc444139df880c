"""``HybridBN``: a bayesrad graph compiled to Pyro, fitted by SVI (or NUTS through NumPyro),
answering posterior-predictive questions for patients with any subset of evidence."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from bayesrad.errors import ModelError, NotFittedError, plain
from bayesrad.graph.graph import Graph
from bayesrad.model.compile import (Backend, Layout, design_arrays, local_pass, make_model,
                                    node_dist)
from bayesrad.model.design import Design, Preprocessor, _level_numbers, blocks_of
from bayesrad.model import particles
from bayesrad.model.guide import GlobalPosterior

# A patient whose particles keep fewer than max(2, L/4) effective ones per draw is answered
# again with _REFINE times as many (at most _MAX_PARTICLES per draw).
_REFINE, _MAX_PARTICLES = 8, 256
# Above this many patients, SVI subsamples minibatches of this size.
_DEFAULT_BATCH = 1024
# The fitted q is an exponential moving average of the iterates (time constant ~100 steps):
# single-particle gradients leave the last iterate jittering around the optimum, which
# simulation-based calibration sees as rank histograms piled at both ends; averaging removes
# most of that jitter at no cost (SBC, 100 replicates, default settings: smallest p 0.021).
_AVERAGE_DECAY = 0.99


class HybridBN(BaseEstimator):
    """A Bayesian network over mixed node kinds, compiled to Pyro / NumPyro.

    Parameters
    ----------
    graph : the ``Graph`` (node kinds, edges, prior overrides).
    method : ``"svi"`` (Pyro, CPU or CUDA) or ``"nuts"`` (NumPyro reference posterior).
    guide : the family of q over the unconstrained globals (``GlobalPosterior``):
        ``"block"`` (default; full covariance within each node's parameters), ``"normal"``
        (mean-field) or ``"lowrank"`` (diagonal plus a rank-10 factor; on the
        radiotherapy graph its factor did not shrink back from its random start and
        inflated the latents' posterior sds 2-3x over NUTS's).
    num_steps : maximum SVI steps per restart.
    learning_rate : initial ClippedAdam step size; it decays geometrically to
        ``learning_rate * lr_decay`` at ``num_steps``.
    lr_decay : overall decay factor of the learning rate.
    batch_size : minibatch size in patients (``None``: full batch up to 2048 patients, else
        1024).
    n_restarts : independent SVI runs (different seeds); the one with the best final smoothed
        ELBO is kept.
    tol : convergence when the smoothed loss per patient changes by less than ``tol`` over a
        window of 100 steps (after ``min_steps``).
    min_steps : steps before convergence is checked.
    num_warmup, num_samples, num_chains : NUTS settings.
    n_samples : default number of posterior draws of the globals for predictions.
    predict_particles : particles of a patient's unobserved nodes per draw of the globals in
        a prediction, when the patient's evidence depends on them (an observed child of a
        latent block or of a missing value); importance-weighted within each draw (see
        ``model/particles.py``).
    seed : seed of every random draw (same seed on CPU -> identical fit and predictions).
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    progress : show a tqdm progress bar while fitting.
    num_particles : ELBO particles per step, drawn in one vectorised pass (``svi.py``): more
        particles, less gradient noise for little more time per step.
    num_threads : torch intra-op threads used while fitting and predicting (restored after);
        ``None`` leaves torch's setting. Small graphs are dominated by per-op overhead, where
        one thread is fastest (22 ms vs 420 ms per step measured on a loaded 2-core machine).
    """

    def __init__(self, graph: Graph, method: str = "svi", guide: str = "block",
                 num_steps: int = 3000, learning_rate: float = 0.03, lr_decay: float = 0.01,
                 batch_size: int | None = None, n_restarts: int = 1, tol: float = 1e-4,
                 min_steps: int = 500, num_warmup: int = 500, num_samples: int = 500,
                 num_chains: int = 2, n_samples: int = 1000, predict_particles: int = 16,
                 seed: int = 0, device: str = "auto", progress: bool = False,
                 num_particles: int = 1,
                 num_threads: int | None = None):
        self.graph = graph
        self.method = method
        self.guide = guide
        self.num_steps = num_steps
        self.learning_rate = learning_rate
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.n_restarts = n_restarts
        self.tol = tol
        self.min_steps = min_steps
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.n_samples = n_samples
        self.predict_particles = predict_particles
        self.seed = seed
        self.device = device
        self.progress = progress
        self.num_particles = num_particles
        self.num_threads = num_threads

    # ------------------------------------------------------------------ fitting
    def fit(self, data, *, preprocessor: Preprocessor | None = None) -> "HybridBN":
        """Fit the posterior of the global parameters.

        Parameters
        ----------
        data : a ``Cohort`` or ``{block: DataFrame}`` indexed by patient_id (blocks may hold
            different patients: a patient absent from a block misses that modality).
        preprocessor : a fitted ``Preprocessor`` whose statistics (standardisation, levels)
            are reused instead of learnt from ``data``: the priors then sit on a fixed scale,
            as simulation-based calibration needs.

        Returns ``self`` with ``graph_``, ``preprocessor_``, ``layout_``, ``device_``,
        ``method_``, ``fit_time_s_``, and for SVI ``posterior_``, ``elbo_history_``,
        ``n_steps_``, ``converged_``; for NUTS ``samples_`` and ``mcmc_``.
        """
        if not isinstance(self.graph, Graph):
            raise ModelError(f"HybridBN needs a bayesrad Graph (got {type(self.graph).__name__})")
        from bayesrad.model.persist import check_settings

        # every setting in range before any work (num_steps=-5 used to return a "fitted" model)
        check_settings({k: v for k, v in self.get_params().items() if k != "graph"},
                       where="HybridBN")
        method = self.method
        if method not in ("svi", "nuts"):
            raise ModelError(f"method must be 'svi' or 'nuts' (got {method!r})")
        blocks = blocks_of(data)
        start = time.perf_counter()
        self.__dict__.pop("_draw_cache", None)
        self.graph_ = self.graph.copy()
        if preprocessor is not None:
            self.graph_.check_data(blocks)
            self.preprocessor_ = Preprocessor.from_dict(self.graph_, preprocessor.to_dict())
        else:
            self.preprocessor_ = Preprocessor(self.graph_).fit(blocks)
        design = self.preprocessor_.transform(blocks)
        with _threads(self.num_threads):
            _fit_block_factors(self.graph_, self.preprocessor_, design)
        impute = {n for n in self.graph_.nodes if self.graph_.children(n)
                  and self.graph_.spec(n).kind not in ("latent", "group")
                  and not design.observed[n].all()}
        self.layout_ = Layout(self.graph_, self.preprocessor_, impute)
        self.method_ = method
        self.train_design_ = design
        self.device_ = _resolve_device(self.device)
        # the caller's global generators are left as they were (scikit-learn's contract): the
        # fit draws from torch's generator forked here and seeded locally per restart
        forked = [self.device_] if self.device_.type == "cuda" else []
        with _threads(self.num_threads), torch.random.fork_rng(devices=forked):
            if method == "svi":
                self._fit_svi(design)
            else:
                self._fit_nuts(design)
        self.fit_time_s_ = time.perf_counter() - start
        return self

    def _fit_svi(self, design: Design) -> None:
        import pyro
        from pyro.optim.clipped_adam import ClippedAdam

        from bayesrad.model.svi import Objective

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

    # ------------------------------------------------------------------ posterior
    def _check_fitted(self):
        if not hasattr(self, "layout_"):
            raise NotFittedError("this HybridBN is not fitted yet; call fit(cohort) first")

    def posterior_samples(self, n_samples: int | None = None, seed: int | None = None
                          ) -> dict[str, torch.Tensor]:
        """Draws of every global site on the model (standardised) scale, (S, *shape), CPU."""
        self._check_fitted()
        n_samples = n_samples or self.n_samples
        seed = self.seed if seed is None else seed
        # the draws depend only on (n_samples, seed) once fitted: keep the last few, so that
        # repeated queries (the app, explanations) skip re-sampling the guide
        cache = self.__dict__.setdefault("_draw_cache", {})
        if (n_samples, seed) in cache:
            return cache[(n_samples, seed)]
        draws = self._draw_globals(n_samples, seed)
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[(n_samples, seed)] = draws
        return draws

    def _draw_globals(self, n_samples: int, seed: int) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]), _threads(self.num_threads):
            torch.manual_seed(seed)
            if self.method_ == "nuts":
                flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.samples_.items()}
                total = next(iter(flat.values())).shape[0] if flat else 0
                index = (torch.arange(n_samples) % total if n_samples >= total
                         else torch.randperm(total)[:n_samples])
                return {k: v[index] for k, v in flat.items()}
            samples = self.posterior_.sample(n_samples)
        return {k: v.detach().cpu().float() for k, v in samples.items()}

    def _training_design(self) -> Design:
        if not hasattr(self, "train_design_"):
            raise ModelError("this model was loaded from disk and does not keep its training "
                             "data; pass data= (the cohort to evaluate)")
        return self.train_design_

    def _design(self, data) -> Design:
        if isinstance(data, Design):
            return data
        return self.preprocessor_.transform(blocks_of(data))

    def _particles(self, design: Design, target: str, n_samples: int, do=None, seed=None,
                   ignore=(), factual: bool = False, predict_particles: int | None = None,
                   common_noise: bool = False):
        """Weighted particles of every patient's unobserved nodes, in chunks of patients.

        Yields a ``_Chunk`` per chunk of patients: the globals broadcast (S, 1, ...) and
        repeated (S * L, ...), the chunk's arrays, the raw ``particles.propose`` values
        (S, L, n[, width]) and the weights (S * L, n) of ``particles.normalised_weights``.

        The values of ``ignore`` are no evidence. Unless ``factual``, neither is the target's
        own value, and the interventions of ``do`` are applied: their descendants' values are
        dropped (an intervention changes what follows it, so values measured without it are
        no evidence about the intervened world). With ``factual`` (abduction for a
        counterfactual) every observed value is evidence and nothing is intervened on.
        """
        be = Backend("pyro")
        layout = self.layout_
        absolute, relative = self._interventions(do or {})
        hidden = set(ignore)
        unknown = sorted(hidden - set(layout.kind))
        if unknown:
            raise ModelError(f"ignore: {unknown} are not nodes of the graph "
                             f"(nodes: {self.graph_.nodes})")
        if not factual:
            hidden.add(target)
            for node in (*absolute, *relative):
                hidden |= layout.graph.descendants(node)
        arrays = design_arrays(layout, design, be, dtype=torch.float32)
        for node in hidden:
            # values are 0 wherever unobserved (the design's contract, which the block
            # likelihood's products rely on), so hiding a value clears it too
            arrays[f"m:{node}"] = torch.zeros_like(arrays[f"m:{node}"])
            arrays[f"x:{node}"] = torch.zeros_like(arrays[f"x:{node}"])
        intervened = {} if factual else absolute
        if not particles.evidence_needs_weights(layout, arrays, intervened):
            predict_particles = 1 if not common_noise else predict_particles or 1
        else:
            predict_particles = predict_particles or self.predict_particles
        draws = self.posterior_samples(n_samples, seed)
        # globals (S, 1, ...) against particles (S, L, n): whatever depends on the globals
        # alone (a latent's posterior precision) is computed once per draw, not per particle
        g = {k: v.unsqueeze(1) for k, v in draws.items()}
        flat_g = {k: v.repeat_interleave(predict_particles, 0) for k, v in draws.items()}
        step = particles.chunk_size(layout, n_samples * predict_particles)
        sample = particles.draw_common if common_noise else particles.draw
        import pyro

        # shape checks of every distribution cost more than the arithmetic here, and the
        # model's shapes were checked when it was fitted
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _threads(self.num_threads), \
                pyro.validation_enabled(False):
            torch.manual_seed((self.seed if seed is None else seed) + 1)
            shift_model = {k: self._shift_to_model_scale(k, v) for k, v in relative.items()}
            for start in range(0, design.n, step):
                stop = min(design.n, start + step)
                if common_noise:
                    # the same noise in every chunk too: common random numbers for all rows
                    torch.manual_seed((self.seed if seed is None else seed) + 1)
                chunk = {k: v[start:stop] for k, v in arrays.items()}
                shape = (n_samples, predict_particles, stop - start)
                do_model = {k: self._to_model_scale(k, v, stop - start) for k, v in absolute.items()}
                values = particles.propose(layout, g, chunk,
                                           lambda fn: sample(fn, shape), target=target,
                                           do={} if factual else do_model,
                                           shift={} if factual else shift_model)
                weights = particles.normalised_weights(values.pop("__log_weight__"), shape)
                yield _Chunk(start, stop, shape, g, flat_g, chunk, values, weights, do_model,
                             shift_model)

    def _interventions(self, do: Mapping) -> tuple[dict, dict]:
        """Split ``do`` into absolute values and shifts (a string ``"+10"`` / ``"-5"`` on a
        continuous or count node: relative to the patient's own value, original units)."""
        absolute, relative = {}, {}
        for node, value in do.items():
            if node not in self.layout_.kind:
                raise ModelError(f"do: node {node!r} is not in the graph "
                                 f"(nodes: {self.graph_.nodes})")
            if isinstance(value, str) and value.strip()[:1] in ("+", "-"):
                if self.layout_.kind[node] not in ("continuous", "count"):
                    raise ModelError(f"do: a shift ({value!r}) needs a continuous or count node; "
                                     f"{node!r} is {self.layout_.kind[node]}")
                try:
                    relative[node] = float(value)
                except ValueError as exc:
                    raise ModelError(f"do: {value!r} for {node!r} is not a number like '+10'") from exc
            else:
                absolute[node] = value
        return absolute, relative

    def _shift_to_model_scale(self, node: str, delta: float) -> float:
        if self.layout_.kind[node] == "continuous":
            return delta / self.preprocessor_.stats_[node]["sd"]
        return delta

    def _to_model_scale(self, node: str, value, n: int) -> torch.Tensor:
        """A ``do`` value in original units -> the model's scale, broadcast to n patients."""
        if node not in self.layout_.kind:
            raise ModelError(f"do: node {node!r} is not in the graph (nodes: {self.graph_.nodes})")
        kind = self.layout_.kind[node]
        st = self.preprocessor_.stats_[node]
        if kind == "continuous":
            return torch.full((n,), (float(value) - st["mean"]) / st["sd"])
        if kind in ("binary", "categorical", "ordinal"):
            levels = [str(v) for v in st["levels"]]
            key = value
            if kind == "binary" or isinstance(value, (int, float, np.number)):
                key = str(float(value)) if str(float(value)) in levels else str(value)
            if str(key) not in levels:
                raise ModelError(f"do: {plain(value)!r} is not a level of {node!r} ({plain(st['levels'])})")
            return torch.full((n,), levels.index(str(key)), dtype=torch.long)
        if kind == "count":
            return torch.full((n,), float(value))
        if kind == "latent":
            z = torch.as_tensor(np.asarray(value, dtype=float), dtype=torch.float32)
            return z.expand(n, self.layout_.latent_dim[node])
        raise ModelError(f"do: intervening on a {kind} node ({node!r}) is not supported")

    def check_do(self, do: Mapping | None, strict: bool = False,
                 margin_sd: float | None = None) -> dict[str, float]:
        """The intervention guardrails (``model/guardrails.py``) on this model's training
        statistics: ``{node: distance outside the training range in training sds}``; warns
        beyond ``margin_sd`` (default ``guardrails.DEFAULT_MARGIN_SD``), raises if ``strict``."""
        from bayesrad.model import guardrails

        self._check_fitted()
        return guardrails.check_interventions(
            do, self.layout_.kind, self.preprocessor_.stats_, strict=strict,
            margin_sd=guardrails.DEFAULT_MARGIN_SD if margin_sd is None else margin_sd)

    # ------------------------------------------------------------------ predictions
    def predict(self, data, target: str, n_samples: int | None = None, do: Mapping | None = None,
                times=None, seed: int | None = None, ignore=(), strict: bool = False) -> pd.DataFrame:
        """Posterior predictive of ``target`` for every patient in ``data``.

        Every observed value in ``data`` is evidence except the target's own and those of
        ``ignore`` (node names): evidence on descendants counts too (an observed d95 says
        something about a missing radiomics block), through importance-weighted particles
        (``predict_particles`` per posterior draw). Drop from ``data`` (or ``ignore``) whatever a
        real prediction would not have yet, such as a later outcome that is the target's
        child. Anything missing (values, columns, whole blocks) is marginalised.

        ``do``: ``{node: value}`` interventions in original units (incoming edges cut; the
        values of the node's descendants in ``data`` are then no evidence); a string
        ``"+10"`` / ``"-5"`` on a continuous or count node shifts the patient's own value.
        A value outside the training range by more than a margin warns how far it
        extrapolates (``strict=True``: raises ``ModelError``); see :meth:`check_do`.

        Returns a DataFrame indexed by patient_id:
        - binary: ``mean`` = P(target = 1), ``sd`` and quantiles ``q025 ... q975`` of the
          patient's probability over the posterior (globals and the patient's unobserved
          nodes: a missing modality widens the band);
        - continuous / count: mean, sd and quantiles of the posterior predictive, original units;
        - categorical / ordinal: ``P[<level>]`` per level with ``P[<level>]_q05`` /
          ``_q95`` bands (ordinal also ``mean`` of the numeric level);
        - survival: ``median`` survival time (days, with ``median_q05``/``median_q95``), and
          ``S@<t>`` with ``S@<t>_q05``/``S@<t>_q95`` for each time ``t`` of ``times`` (days;
          default: 10 points up to 2x the median training time).
        """
        self._check_fitted()
        if target not in self.layout_.kind:
            raise ModelError(f"target {target!r} is not a node of the graph "
                             f"(nodes: {self.graph_.nodes})")
        kind = self.layout_.kind[target]
        if kind in ("latent", "group"):
            raise ModelError(f"target {target!r} is a {kind} node; predict an observed node")
        self.check_do(do, strict=strict)
        n_samples = n_samples or self.n_samples
        _check_query(self, target, n_samples, do)

        def summarise(chunk, index):
            values = particles.flatten(chunk.values, chunk.shape, self.layout_)
            return self._summary(target, chunk.flat_g, values, chunk.weights, index, times)

        return self._answer(self._design(data), target, n_samples, summarise, do=do, seed=seed,
                            ignore=ignore)

    def predict_draws(self, data, target: str, n_samples: int | None = None,
                      do: Mapping | None = None, seed: int | None = None, ignore=(),
                      n_particles: int | None = None, horizon: float | None = None,
                      summary: str = "survival") -> np.ndarray:
        """Per-draw posterior means of ``target``: array (S, n) -- (S, n, K) for a categorical
        or ordinal target -- S = ``n_samples`` draws of the globals, n patients of ``data`` (a
        cohort, blocks or a ``Design``).

        Entry (s, i) is E[target | patient i's evidence, globals draw s] with the patient's
        unobserved nodes integrated over their importance-weighted particles; ``predict``'s
        ``mean`` is the average over s. Binary: P(target = 1); continuous: original units;
        count: the count; categorical / ordinal: P(target = level) for the K levels in the
        preprocessor's order (``preprocessor_.stats_[target]["levels"]``); survival:
        S(``horizon``) (``summary="survival"``) or the restricted mean survival time up to
        ``horizon`` (``summary="rmst"``, in the survival column's time units, days by
        bayesrad's convention), ``horizon`` in those units, default the median observed
        (follow-up) time of the training data (``stats_[target]["time_scale"]``).
        The same ``(n_samples, seed)`` gives the same draws of the globals
        for every call, so callers (``bayesrad.explain``) can compare answers under different
        evidence draw by draw. Per-row evidence differences are expressed in the design itself
        (a row with a value unobserved), so one call answers many evidence sets at once.
        Particles use common random numbers across patients (``particles.draw_common``):
        two rows that differ in one value differ in their answers through that value only.
        No second round for collapsed particles (unlike ``predict``). ``n_particles``:
        particles per draw (default ``predict_particles`` when the evidence needs weights,
        else 1); more of them average out the unobserved nodes within each draw, so the
        spread over draws is the globals' uncertainty rather than particle noise.
        """
        self._check_fitted()
        kind = self.layout_.kind.get(target)
        if kind not in ("binary", "continuous", "count", "categorical", "ordinal", "survival"):
            raise ModelError(f"predict_draws: target {target!r} must be an observed node of the "
                             f"graph (it is {kind}; nodes: {self.graph_.nodes})")
        if summary not in ("survival", "rmst"):
            raise ModelError(f"predict_draws: summary {summary!r} must be 'survival' (S at the "
                             "horizon) or 'rmst' (restricted mean survival time)")
        n_samples = n_samples or self.n_samples
        st = self.preprocessor_.stats_[target]
        if kind == "survival":
            horizon = float(st["time_scale"] if horizon is None else horizon)
            if not horizon > 0:
                raise ModelError(f"predict_draws: horizon {horizon} for {target!r} must be a "
                                 "positive time (the survival column's units)")
        out = []
        for chunk in self._particles(self._design(data), target, n_samples, do=do, seed=seed,
                                     ignore=ignore, common_noise=True,
                                     predict_particles=n_particles):
            # only the target's entries: flattening every node's particles copies them all
            wanted = {target: chunk.values[target]} if target in chunk.values else {}
            wanted["__eta__"] = {target: chunk.values["__eta__"][target]}
            values = particles.flatten(wanted, chunk.shape, self.layout_)
            eta = values["__eta__"][target]
            if kind == "binary":
                v = torch.sigmoid(eta[..., 0])
            elif kind == "continuous" and not self.layout_.graph.children(target):
                # the conditional mean given the parents' particles: no noise of a drawn value
                v = eta[..., 0] * st["sd"] + st["mean"]
            elif kind == "continuous":
                v = values[target] * st["sd"] + st["mean"]
            elif kind in ("categorical", "ordinal"):
                v = node_dist(self.layout_, target, chunk.flat_g, eta, Backend("pyro")).probs
            elif kind == "survival":
                v = _weibull_summary(eta[..., 0].double().exp() * st["time_scale"],
                                     chunk.flat_g[f"{target}.shape"][:, None].double(),
                                     horizon, summary)
            else:
                v = values[target].float()
            s, l, n = chunk.shape
            # weights sum to 1/S within each draw: rescale to a mean per draw
            w = chunk.weights if v.dim() == 2 else chunk.weights[..., None]
            per_draw = (w * v.double()).reshape((s, l, n) + tuple(v.shape[2:])).sum(1) * s
            out.append(per_draw.numpy())
        return np.concatenate(out, axis=1)

    def _answer(self, design: Design, target: str, n_samples: int, summarise, **particle_args
                ) -> pd.DataFrame:
        """``summarise(chunk, patient_index)`` over all chunks of particles, with a second
        round for the patients whose particles collapsed.

        When a patient's evidence is far from the proposal (a tail value of a descendant),
        one particle per draw takes most of the weight; those patients are answered again
        with ``_REFINE`` times as many particles (a few patients, so little extra time).
        """
        frames, ess, used = self._rounds(design, target, n_samples, summarise, None,
                                         **particle_args)
        out = pd.concat(frames)
        ess = pd.Series(ess, index=out.index)
        if used > 1:
            low = np.flatnonzero(ess.to_numpy() < max(2.0, used / 4.0))
            if len(low):
                more = min(_MAX_PARTICLES, used * _REFINE)
                frames, again, used = self._rounds(design.take(low), target, n_samples,
                                                   summarise, more, **particle_args)
                redo = pd.concat(frames)
                out.loc[redo.index] = redo.to_numpy()
                ess.loc[redo.index] = again
            if (ess < 2.0).any():
                worst = ess.sort_values().index[:3].tolist()
                warnings.warn(f"{target!r}: patients {worst} keep fewer than 2 effective "
                              f"particles of {used} per posterior draw; their answer rests on "
                              "few particles (raise predict_particles)", RuntimeWarning,
                              stacklevel=3)
        return out

    def _rounds(self, design, target, n_samples, summarise, predict_particles, **particle_args):
        frames, ess, used = [], [], 1
        bar = None
        if self.progress and len(design.patient_ids) > 1:
            from bayesrad.progress import progress_bar

            bar = progress_bar(len(design.patient_ids), desc=f"predicting {target}", unit="patients")
        for chunk in self._particles(design, target, n_samples,
                                     predict_particles=predict_particles,
                                     **particle_args):
            frames.append(summarise(chunk, design.patient_ids[chunk.start:chunk.stop]))
            ess.append(particles.effective_particles(chunk.weights, n_samples))
            used = chunk.shape[1]
            if bar is not None:
                bar.update(chunk.stop - chunk.start)
        if bar is not None:
            bar.close()
        return frames, np.concatenate(ess), used

    def _summary(self, target, g, values, weights, index, times) -> pd.DataFrame:
        kind = self.layout_.kind[target]
        eta = values["__eta__"][target]
        st = self.preprocessor_.stats_[target]
        if kind == "binary":
            return particles.weighted_summary(torch.sigmoid(eta[..., 0]), weights, index)
        if kind == "continuous":
            return particles.weighted_summary(values[target] * st["sd"] + st["mean"], weights,
                                              index)
        if kind == "count":
            return particles.weighted_summary(values[target].float(), weights, index)
        if kind in ("categorical", "ordinal"):
            probs = node_dist(self.layout_, target, g, eta, Backend("pyro")).probs.double()
            return self._level_table(probs, weights, st, index, ordinal=kind == "ordinal")
        return self._survival_summary(target, g, eta, weights, st, index, times)

    def _survival_summary(self, target, g, eta, weights, st, index, times) -> pd.DataFrame:
        shape = g[f"{target}.shape"][:, None].double()
        scale_days = eta[..., 0].double().exp() * st["time_scale"]
        return _survival_table(scale_days * math.log(2.0) ** (1.0 / shape),
                               lambda t: torch.exp(-(t / scale_days) ** shape), weights, index,
                               times, st["time_scale"], bands=True)

    def survival_function(self, data, target: str, times, n_samples: int | None = None,
                          seed: int | None = None, ignore=()) -> np.ndarray:
        """Posterior-mean S(t) per patient, shape (n_patients, len(times)); times in days."""
        self._check_fitted()
        if self.layout_.kind.get(target) != "survival":
            raise ModelError(f"{target!r} is not a survival node")
        n_samples = n_samples or self.n_samples
        st = self.preprocessor_.stats_[target]
        t = torch.as_tensor(np.asarray(times, float), dtype=torch.float64)

        def summarise(chunk, index):
            values = particles.flatten(chunk.values, chunk.shape, self.layout_)
            scale_days = values["__eta__"][target][..., 0].double().exp() * st["time_scale"]
            shape = chunk.flat_g[f"{target}.shape"][:, None, None].double()
            surv = torch.exp(-(t / scale_days[..., None]) ** shape)
            return pd.DataFrame((chunk.weights[..., None] * surv).sum(0).numpy(), index=index)

        return self._answer(self._design(data), target, n_samples, summarise, seed=seed,
                            ignore=ignore).to_numpy()

    def survival_curves(self, data, target: str, times, n_samples: int | None = None,
                        seed: int | None = None, ignore=()) -> pd.DataFrame:
        """Posterior-mean S(t) as a tidy table: one row per (patient, time) with columns
        ``patient_id``, ``time_days`` (days, as the model's survival times) and ``survival``
        (probability of surviving past that time); ``attrs["time_unit"] = "days"``.
        The same numbers as :meth:`survival_function`, which returns the bare
        (n_patients, n_times) array for numerical code."""
        times = np.asarray(times, dtype=float)
        wide = self.survival_function(data, target, times, n_samples=n_samples, seed=seed,
                                      ignore=ignore)
        ids = self._design(data).patient_ids
        out = pd.DataFrame({"patient_id": np.repeat(np.asarray(ids, dtype=object), len(times)),
                            "time_days": np.tile(times, len(ids)), "survival": wide.ravel()})
        out.attrs.update(time_unit="days", target=target)
        return out

    def counterfactual(self, data, target: str, do: Mapping, n_samples: int | None = None,
                       times=None, seed: int | None = None, ignore=(), strict: bool = False
                       ) -> pd.DataFrame:
        """What ``target`` would have been for each patient of ``data`` under ``do``.

        Abduction, action, prediction (see ``model/counterfactual.py``): each patient's
        factual evidence, the observed target included, fixes the noise of every node between
        the intervention and the target; the intervention is applied; the target is
        recomputed with the same noise. ``do`` as in ``predict`` (``"+10"`` shifts the
        patient's own value; an unobserved value is shifted from its inferred one).

        Returns the columns of ``predict`` for the counterfactual target (binary: ``mean`` =
        P(target would be 1)), plus ``factual``: the observed target value (NaN if none).
        """
        from bayesrad.model.counterfactual import counterfactual_pass

        self._check_fitted()
        if target not in self.layout_.kind or self.layout_.kind[target] in ("latent", "group"):
            raise ModelError(f"counterfactual: target {target!r} must be an observed node of "
                             f"the graph (nodes: {self.graph_.nodes})")
        if not do:
            raise ModelError("counterfactual needs at least one intervention in do=")
        self.check_do(do, strict=strict)
        n_samples = n_samples or self.n_samples
        design = self._design(data)
        kind = self.layout_.kind[target]
        st = self.preprocessor_.stats_[target]
        be = Backend("pyro")

        def summarise(chunk, index):
            cf = counterfactual_pass(self.layout_, chunk.g, chunk.arrays, chunk.values, target,
                                     chunk.do, chunk.shift, be)
            w = chunk.weights
            if kind in ("binary", "ordinal"):
                probs = cf["probs"]
                probs = probs.expand(chunk.shape + probs.shape[3:]).reshape(
                    (w.shape[0], len(index)) + tuple(probs.shape[3:])).double()
                if kind == "binary":
                    return particles.weighted_summary(probs, w, index)
                return self._level_table(probs, w, st, index, ordinal=True)
            value = particles.flatten({target: cf["value"], "__eta__": {}}, chunk.shape,
                                      self.layout_)[target]
            if kind == "categorical":
                hot = torch.nn.functional.one_hot(value.long(), len(st["levels"])).double()
                return self._level_table(hot, w, st, index, ordinal=False)
            if kind == "continuous":
                return particles.weighted_summary(value * st["sd"] + st["mean"], w, index)
            if kind == "count":
                return particles.weighted_summary(value.double(), w, index)
            return self._survival_samples_summary(value.double() * st["time_scale"], w, st,
                                                  index, times)

        out = self._answer(design, target, n_samples, summarise, do=do, seed=seed,
                           ignore=ignore, factual=True)
        out.insert(0, "factual", self._factual(design, target))
        return out

    def _factual(self, design: Design, target: str) -> np.ndarray:
        """The observed target in original units (levels for discrete nodes), NaN if none."""
        st = self.preprocessor_.stats_[target]
        kind = self.layout_.kind[target]
        x, m = design.values[target], design.observed[target]
        if kind == "continuous":
            value = x * st["sd"] + st["mean"]
        elif kind == "survival":
            value = x * st["time_scale"]
        elif kind in ("categorical", "ordinal"):
            levels = np.asarray(st["levels"], dtype=object)
            return np.where(m, levels[np.where(m, x, 0).astype(int)], None)
        else:
            value = x
        return np.where(m, value, np.nan)

    def _level_table(self, probs, weights, st, index, ordinal: bool) -> pd.DataFrame:
        """``P[level]`` with 5-95% bands from (P, n, K) per-particle probabilities."""
        frames = []
        for j, level in enumerate(st["levels"]):
            p = probs[..., j]
            bands = particles.weighted_quantiles(p, weights, [0.05, 0.95])
            frames.append(pd.DataFrame({
                f"P[{level}]": (weights * p).sum(0).numpy(),
                f"P[{level}]_q05": bands[0].numpy(),
                f"P[{level}]_q95": bands[1].numpy()}, index=index))
        out = pd.concat(frames, axis=1)
        if ordinal:
            numbers = torch.as_tensor(_level_numbers(st["levels"]), dtype=probs.dtype)
            out.insert(0, "mean", (weights * (probs * numbers).sum(-1)).sum(0).numpy())
        return out

    def _survival_samples_summary(self, time_days, weights, st, index, times) -> pd.DataFrame:
        """Median and S(t) of sampled survival times (P, n) in days."""
        return _survival_table(time_days, lambda t: (time_days > t).double(), weights, index,
                               times, st["time_scale"], bands=False)

    def query(self, target: str, evidence: Mapping | pd.DataFrame | None = None,
              do: Mapping | None = None, n_samples: int | None = None,
              seed: int | None = None, times=None) -> pd.DataFrame:
        """P(target | evidence, do(...)) for one hypothetical patient (or a table of them).

        ``evidence``: ``{node: value}`` in original units (a latent node's block columns may
        be given by column name), or a DataFrame of such rows indexed by patient_id. Nodes not
        given are marginalised. ``do``: ``{node: value}`` interventions (incoming edges cut).
        ``times``: survival targets' S(t) times in days, as in :meth:`predict`.
        """
        self._check_fitted()
        if evidence is None:
            evidence = {}
        frame = (evidence if isinstance(evidence, pd.DataFrame)
                 else pd.DataFrame([dict(evidence)], index=pd.Index(["query"], name="patient_id")))
        known = set(self.graph_.nodes) | {c for st in self.preprocessor_.stats_.values()
                                         for c in st["columns"]}
        unknown = [c for c in frame.columns if c not in known]
        if unknown:
            raise ModelError(f"evidence names {unknown} that are neither nodes nor block columns "
                             f"of this model (nodes: {self.graph_.nodes})")
        blocks = {}
        for name, st in self.preprocessor_.stats_.items():
            cols = [c for c in st["columns"] if c in frame.columns]
            if cols:
                block = blocks.setdefault(st["block"], pd.DataFrame(index=frame.index))
                for c in cols:
                    block[c] = frame[c]
        design = self.preprocessor_.transform(blocks, patient_ids=frame.index)
        return self.predict(design, target, n_samples=n_samples, do=do, seed=seed, times=times)

    # ------------------------------------------------------------------ reporting
    def coefficients(self, n_samples: int | None = None) -> pd.DataFrame:
        """Posterior of every edge coefficient on the original scale.

        One row per (parent_key, child_key), keys as in the simulator's truth: a categorical
        parent's level ``"p[level]"``, a latent's dimension ``"z[j]"`` (``k > 1``), a
        categorical child's level ``"c[level]"``. Effects are per original unit of the parent
        on the child's linear predictor (identity for continuous, logit, cumulative logit, log
        rate, log time). A group (centre) parent gives one row per level, ``"centre[B]"``:
        that level's random intercept on the child's linear predictor. Columns: mean, sd,
        q05, q95, and the same on the model scale (``std_mean``, ``std_sd``).
        """
        self._check_fitted()
        g = self.posterior_samples(n_samples)
        be = Backend("pyro")
        rows = []
        for c in self.layout_.order:
            for p in self.layout_.parents[c]:
                w = self.layout_.coef(g, c, p, be)          # (S, enc, out)
                pk, ck = self._keys(p), self._keys(c, child=True)
                factor_p = self._unit(p)
                factor_c = self._child_unit(c)
                for i, pkey in enumerate(pk):
                    for j, ckey in enumerate(ck):
                        std = w[:, i, j]
                        orig = std * factor_c / factor_p
                        rows.append({"parent": pkey, "child": ckey, "mean": float(orig.mean()),
                                     "sd": float(orig.std()),
                                     "q05": float(torch.quantile(orig, 0.05)),
                                     "q95": float(torch.quantile(orig, 0.95)),
                                     "std_mean": float(std.mean()), "std_sd": float(std.std())})
            # a group (centre) parent: its random intercept per level, "centre[B]" rows
            for grp in self.layout_.groups.get(c, ()):
                table = g[f"{c}.group_raw.{grp}"] * g[f"{c}.group_sd.{grp}"][..., None, :]
                levels = self.preprocessor_.stats_[grp]["levels"]
                for i, level in enumerate(levels):
                    for j, ckey in enumerate(self._keys(c, child=True)):
                        std = table[:, i, j]
                        orig = std * self._child_unit(c)
                        rows.append({"parent": f"{grp}[{level}]", "child": ckey,
                                     "mean": float(orig.mean()), "sd": float(orig.std()),
                                     "q05": float(torch.quantile(orig, 0.05)),
                                     "q95": float(torch.quantile(orig, 0.95)),
                                     "std_mean": float(std.mean()), "std_sd": float(std.std())})
        return pd.DataFrame(rows).set_index(["parent", "child"])

    def _keys(self, node, child=False):
        kind = self.layout_.kind[node]
        if kind == "categorical":
            return [f"{node}[{lv}]" for lv in self.preprocessor_.stats_[node]["levels"][1:]]
        if kind == "latent":
            k = self.layout_.latent_dim[node]
            return [node] if k == 1 else [f"{node}[{j}]" for j in range(k)]
        return [node]

    def _unit(self, node) -> float:
        """Original units per unit of the node's parent encoding."""
        st = self.preprocessor_.stats_[node]
        kind = self.layout_.kind[node]
        if kind == "continuous":
            return st["sd"]
        if kind in ("ordinal", "count"):
            return st["enc_sd"]
        return 1.0

    def _child_unit(self, node) -> float:
        return self.preprocessor_.stats_[node]["sd"] if self.layout_.kind[node] == "continuous" else 1.0

    def log_likelihood(self, data=None, n_samples: int | None = None, seed: int | None = None
                       ) -> dict[str, np.ndarray]:
        """Pointwise log-likelihood of each observed single-column node, (S, n) per node,
        given the draws of the globals and the ancestral draws of unobserved parents; entries
        of missing values are NaN."""
        self._check_fitted()
        design = self._training_design() if data is None else self._design(data)
        be = Backend("pyro")
        layout = self.layout_
        arrays = design_arrays(layout, design, be, dtype=torch.float32)
        g = self.posterior_samples(n_samples, seed)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            values = local_pass(layout, g, arrays, be, lambda name, fn: fn.sample(), mode="predict")
        out = {}
        for c, eta in values["__eta__"].items():
            kind = layout.kind[c]
            if kind in ("latent", "group"):
                continue
            x, m = arrays[f"x:{c}"], arrays[f"m:{c}"]
            ll = layout.families[c].log_lik(layout, c, g, eta, x, m, arrays, be)
            out[c] = torch.where(m, ll, torch.nan).numpy()
        return out

    def to_arviz(self, data=None, n_samples: int | None = None):
        """The fit as an arviz ``DataTree`` (arviz_base): ``posterior`` (globals on the model
        scale; chains x draws), ``posterior_predictive`` and ``log_likelihood`` (per observed
        node, patients as ``<node>_patient``, and ``all_nodes``: the sum over a patient's
        observed nodes, dim ``patient_id``, the variable for a leave-one-patient-out ``loo``)
        and ``observed_data``. Works with ``arviz_stats.summary``, ``rhat``, ``ess`` and
        ``loo(tree, var_name="all_nodes")`` on graphs of any size.

        The globals' dims are shared by axis and length (``i3``: a first axis of length 3,
        ``j2``: a second axis of length 2, ...): arviz stacks every variable over the union
        of the dims, and one dim per parameter axis passed numpy's 64-dim limit on graphs of
        14+ nodes."""
        import arviz_base

        self._check_fitted()
        if self.method_ == "nuts":
            posterior = {k: v.numpy() for k, v in self.samples_.items()}
            n_chains, n_draws = next(iter(posterior.values())).shape[:2]
        else:
            n_chains, n_draws = 1, n_samples or self.n_samples
            posterior = {k: v.numpy()[None] for k, v in self.posterior_samples(n_draws).items()}
        design = self._training_design() if data is None else self._design(data)
        ll = self.log_likelihood(design, n_samples=n_chains * n_draws)
        pids = np.asarray(design.patient_ids)
        log_lik, observed, predictive = {}, {}, {}
        for c, arr in ll.items():
            m = design.observed[c]
            if not m.any():
                continue
            log_lik[c] = arr[:, m].reshape(n_chains, n_draws, -1)
            observed[c] = design.values[c][m]
        dims = {c: [f"{c}_patient"] for c in log_lik}
        coords = {f"{c}_patient": pids[design.observed[c]] for c in log_lik}
        if log_lik:
            joint = sum(np.nan_to_num(arr) for arr in ll.values() if not np.all(np.isnan(arr)))
            log_lik["all_nodes"] = joint.reshape(n_chains, n_draws, -1)
            dims["all_nodes"] = ["patient_id"]
            coords["patient_id"] = pids
        for name, value in posterior.items():
            axes = value.shape[2:]
            dims[name] = [f"{'ijklmn'[a]}{size}" for a, size in enumerate(axes)]
            coords.update({d: np.arange(size) for d, size in zip(dims[name], axes)})
        for c in observed:
            predictive[c] = self._replicate(c, design, n_chains, n_draws)
        return arviz_base.from_dict(
            {"posterior": posterior, "log_likelihood": log_lik, "observed_data": observed,
             "posterior_predictive": predictive},
            dims=dims, coords=coords)

    def _replicate(self, c, design, n_chains, n_draws):
        be = Backend("pyro")
        layout = self.layout_
        arrays = design_arrays(layout, design, be, dtype=torch.float32)
        g = self.posterior_samples(n_chains * n_draws)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 7)
            values = local_pass(layout, g, arrays, be, lambda name, fn: fn.sample(), mode="predict")
            eta = values["__eta__"][c]
            m = design.observed[c]
            rep = layout.families[c].simulate(layout, c, g, eta, be)
        return rep.numpy()[:, m].reshape(n_chains, n_draws, -1)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save to a directory: graph.yaml, params.safetensors, meta.json (see ``persist``)."""
        from bayesrad.model.persist import save_model

        self._check_fitted()
        save_model(self, path)

    @classmethod
    def load(cls, path) -> "HybridBN":
        """Load a model saved by ``save``; a tampered or incompatible file raises
        ``ModelFileError``. Nothing is unpickled."""
        from bayesrad.model.persist import load_model

        return load_model(cls, path)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor settings (scikit-learn convention; ``deep`` is accepted for
        ``sklearn.base.clone`` and has nothing nested to expand: the graph is a setting)."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params) -> "HybridBN":
        """Change constructor settings (scikit-learn convention); returns ``self``."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ModelError(f"HybridBN has no setting {name!r} (settings: {sorted(valid)})")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        state = "fitted" if hasattr(self, "layout_") else "not fitted"
        return f"HybridBN({self.graph!r}, method={self.method!r}, {state})"


def _survival_table(median_days, survival_at, weights, index, times, time_scale: float,
                    bands: bool) -> pd.DataFrame:
    """Weighted median survival (days) with its 90% band and S(t) at ``times`` (days;
    default 0.2-2 x the training time scale), one row per patient. ``median_days`` and
    ``survival_at(t)`` are (P, n) per weighted particle; ``bands`` adds S(t)'s 90% band."""
    q50, q05, q95 = particles.weighted_quantiles(median_days, weights, [0.5, 0.05, 0.95])
    out = {"median": q50.numpy(), "median_q05": q05.numpy(), "median_q95": q95.numpy()}
    if times is None:
        times = np.linspace(0.2, 2.0, 10) * time_scale
    for t in np.atleast_1d(times):
        surv = survival_at(float(t))
        out[f"S@{t:g}"] = (weights * surv).sum(0).numpy()
        if bands:
            low, high = particles.weighted_quantiles(surv, weights, [0.05, 0.95])
            out[f"S@{t:g}_q05"], out[f"S@{t:g}_q95"] = low.numpy(), high.numpy()
    return pd.DataFrame(out, index=index)


def _weibull_summary(scale, shape, horizon: float, summary: str) -> torch.Tensor:
    """S(horizon) = exp(-(h / scale)^shape), or the restricted mean survival time up to h,
    int_0^h S(t) dt = scale * Gamma(1 + 1/shape) * P(1/shape, (h / scale)^shape) (P the
    regularised lower incomplete gamma), of Weibull times; ``scale`` in the horizon's units."""
    z = (horizon / scale) ** shape
    if summary == "survival":
        return torch.exp(-z)
    a = 1.0 / shape
    return scale * torch.exp(torch.lgamma(1.0 + a)) * torch.special.gammainc(a.expand_as(z), z)


@dataclass
class _Chunk:
    """One chunk of patients' particles (see ``HybridBN._particles``)."""

    start: int
    stop: int
    shape: tuple[int, int, int]          # (S draws, L particles per draw, n patients)
    g: dict                              # globals, (S, 1, ...)
    flat_g: dict                         # globals repeated per particle, (S * L, ...)
    arrays: dict                         # the chunk's design arrays (evidence masks applied)
    values: dict                         # propose values, (S, L, n[, width]) or broadcastable
    weights: torch.Tensor                # (S * L, n), each patient's column sums to 1
    do: dict                             # absolute interventions, model scale
    shift: dict                          # relative interventions, model scale


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


def _check_query(model, target: str, n_samples, do) -> None:
    """Refuse a query that would fail deep inside (or answer nonsense): n_samples out of
    range, an intervention on an unknown node or on the target itself, a non-finite value."""
    from bayesrad.model.persist import check_settings

    check_settings({"n_samples": n_samples}, where="predict")
    for node, value in (do or {}).items():
        if node not in model.layout_.kind:
            raise ModelError(f"do: {node!r} is not a node of the graph (nodes: {model.graph_.nodes[:20]})")
        if node == target:
            raise ModelError(f"do: {node!r} is the target itself; intervene on another node "
                             "(or read the answer off the value you would set)")
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
                and not np.isfinite(value):
            raise ModelError(f"do: {node!r}={value!r} is not a finite value; give a number in the "
                             "node's units")
        kind = model.layout_.kind[node]
        if isinstance(value, str) and value[:1] not in "+-" and kind in ("continuous", "count"):
            raise ModelError(f"do: {node!r}={value!r}: {node!r} is {kind}; give a number in its units "
                             "(e.g. 70) or a shift (+10)")
        if isinstance(value, str) and value[:1] in "+-":
            try:
                shift = float(value)
            except ValueError:
                raise ModelError(f"do: {node!r}={value!r}: a shift is a signed number such as +10") from None
            if not np.isfinite(shift):
                raise ModelError(f"do: {node!r}={value!r} is not a finite shift")


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
