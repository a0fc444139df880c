"""``HybridBN``: a bayesrad graph compiled to Pyro, fitted by SVI (or NUTS through NumPyro),
answering posterior-predictive questions for patients with any subset of evidence.

This module is the estimator (settings, ``fit``, the posterior draws, persistence and the
scikit-learn contract); its parts live beside it: ``fitting.py`` (the SVI and NUTS loops),
``answers.py`` (predictions, interventions, counterfactuals, survival curves, queries) and
``reporting.py`` (coefficients, log-likelihoods, the arviz export)."""

from __future__ import annotations

import time
from typing import Any

import torch
from sklearn.base import BaseEstimator

from bayesrad.errors import ModelError, NotFittedError
from bayesrad.graph.graph import Graph
from bayesrad.model.answers import _Answers
from bayesrad.model.compile import Layout
from bayesrad.model.design import Design, Preprocessor, blocks_of
from bayesrad.model.fitting import _Fitting, _fit_block_factors, _resolve_device, _threads
from bayesrad.model.reporting import _Reporting


class HybridBN(_Fitting, _Answers, _Reporting, BaseEstimator):
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

    # ------------------------------------------------------------------ predictions

    # ------------------------------------------------------------------ reporting

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




















