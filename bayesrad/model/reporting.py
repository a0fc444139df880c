"""What a fitted ``HybridBN`` reports about itself: edge coefficients on the original scale,
pointwise log-likelihoods and the arviz export (posterior, posterior predictive, log
likelihood, observed data with named, shared dimensions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bayesrad.model.compile import Backend, design_arrays, local_pass


class _Reporting:
    """``HybridBN``'s reports (a mixin: ``self`` is the fitted estimator)."""

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
