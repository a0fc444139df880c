"""The answers of a fitted ``HybridBN``: predictions with partial evidence, interventions
(``do`` and shifts), counterfactuals, survival curves and queries, from the weighted particles
of ``particles.py`` summarised per patient."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from bayesrad.errors import ModelError, plain
from bayesrad.model import particles
from bayesrad.model.compile import Backend, design_arrays, node_dist
from bayesrad.model.design import Design, _level_numbers
from bayesrad.model.fitting import _threads

# A patient whose particles keep fewer than max(2, L/4) effective ones per draw is answered
# again with _REFINE times as many (at most _MAX_PARTICLES per draw).
_REFINE, _MAX_PARTICLES = 8, 256


class _Answers:
    """``HybridBN``'s answers (a mixin: ``self`` is the fitted estimator)."""

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
