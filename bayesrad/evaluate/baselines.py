"""The models people would otherwise use, behind one contract with bayesrad's own.

Every estimator here is a scikit-learn estimator (``__init__`` stores settings, ``clone``
works) with ``fit(data, target) -> self`` and ``predict(data) -> DataFrame`` indexed by
patient_id, in the layout of ``HybridBN.predict``:

- binary target: ``mean`` = P(target = its second level);
- categorical target: ``P[<level>]`` per level;
- survival target: ``risk`` (larger = earlier event), and ``S@<t>`` where the model gives S(t).

``data`` is a ``Cohort`` or ``{block: DataFrame}``. The features of every baseline are the
columns ``Graph.default(data, target)`` would use (the same outcome columns left out, the
target's own table read as its parents), so a comparison differs in the model, not in the
data each model sees. Patients missing a block have NaN there: the baselines impute (by the
mean, or ``IterativeImputer`` for early fusion) as radiomics studies do; late fusion uses each
block only on the patients who have it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from bayesrad.errors import ModelError
from bayesrad.graph.graph import Graph
from bayesrad.model.design import blocks_of


# ----------------------------------------------------------------------------- features
class _Features:
    """Which columns are features and how the target is coded, fixed on the training data."""

    def __init__(self, data, target: str):
        blocks = blocks_of(data)
        graph = Graph.default(data, target=target)
        spec = graph.spec(target)
        if spec.kind not in ("binary", "categorical", "ordinal", "survival"):
            raise ModelError(f"target {target!r} is {spec.kind}; the baselines handle binary, "
                             "categorical and survival targets")
        self.target, self.kind, self.event = target, spec.kind, spec.event
        where = graph.check_data(blocks)
        self.target_block = where[target][0]
        self.columns: list[tuple[str, str]] = []          # (block, column) of numeric inputs
        self.levels: dict[tuple[str, str], list] = {}     # discrete inputs -> their levels
        self.block_of: dict[str, str] = {}
        for node in graph.parents(target):
            node_spec = graph.spec(node)
            block = node_spec.block or where[node][0]
            if node_spec.kind == "latent":
                for col in node_spec.columns:
                    self.columns.append((block, col))
                    self.block_of[col] = block
            elif node_spec.kind in ("binary", "categorical"):
                values = blocks[block][node].dropna()
                self.levels[(block, node)] = sorted(values.astype(str).unique())
                self.block_of[node] = block
            else:
                self.columns.append((block, node))
                self.block_of[node] = block
        if self.kind == "survival":
            self.classes = None
        else:
            values = blocks[self.target_block][target].dropna()
            # plain Python values: they name classes in columns and messages
            self.classes = sorted((v.item() if hasattr(v, "item") else v for v in values.unique()),
                                  key=lambda v: (str(type(v)), v))
            if len(self.classes) < 2:
                raise ModelError(f"target {target!r} has a single value {self.classes} among the "
                                 "training patients; a classifier needs two classes")

    def matrix(self, data, patients=None) -> pd.DataFrame:
        """Features (patients x inputs), NaN where missing; discrete inputs one-hot (first
        level dropped), unseen levels all-zero."""
        blocks = blocks_of(data)
        if patients is None:
            seen: dict[str, None] = {}
            for frame in blocks.values():
                seen.update(dict.fromkeys(map(str, frame.index)))
            patients = list(seen)
        index = pd.Index([str(p) for p in patients], name="patient_id")
        parts = {}
        for block, col in self.columns:
            frame = blocks.get(block)
            values = (frame[col].rename(index=str).reindex(index)
                      if frame is not None and col in frame.columns else pd.Series(np.nan, index=index))
            parts[col] = pd.to_numeric(values, errors="coerce")
        for (block, col), levels in self.levels.items():
            frame = blocks.get(block)
            values = (frame[col].rename(index=str).reindex(index)
                      if frame is not None and col in frame.columns else pd.Series(np.nan, index=index))
            text = values.astype(object).where(values.isna(), values.astype(str))
            for level in levels[1:]:
                parts[f"{col}[{level}]"] = np.where(text.isna(), np.nan, (text == level).astype(float))
                self.block_of[f"{col}[{level}]"] = block
        return pd.DataFrame(parts, index=index)

    def outcome(self, data, patients) -> tuple[np.ndarray, np.ndarray | None]:
        """(y, event): class codes (n,) for classifiers; (time, event) for survival; NaN where
        the target is missing."""
        frame = blocks_of(data)[self.target_block].rename(index=str).reindex(
            [str(p) for p in patients])
        if self.kind == "survival":
            return (pd.to_numeric(frame[self.target], errors="coerce").to_numpy(float),
                    pd.to_numeric(frame[self.event], errors="coerce").to_numpy(float))
        lookup = {v: i for i, v in enumerate(self.classes)}
        codes = frame[self.target].map(lambda v: lookup.get(v, np.nan) if pd.notna(v) else np.nan)
        return codes.to_numpy(float), None


def _answer(features: _Features, index, probs: np.ndarray) -> pd.DataFrame:
    if features.kind == "binary" or (features.kind != "categorical" and probs.shape[1] == 2):
        return pd.DataFrame({"mean": probs[:, 1]}, index=index)
    return pd.DataFrame({f"P[{c}]": probs[:, j] for j, c in enumerate(features.classes)}, index=index)


class _Baseline(BaseEstimator):
    """Shared ``fit(data, target)`` / ``predict(data)`` for the tabular baselines."""

    def _make(self, features: _Features):
        raise NotImplementedError

    def fit(self, data, target: str):
        self.features_ = _Features(data, target)
        x = self.features_.matrix(data)
        y, event = self.features_.outcome(data, x.index)
        keep = ~np.isnan(y) & (np.ones_like(y, bool) if event is None else ~np.isnan(event))
        if keep.sum() < 5:
            raise ModelError(f"target {target!r} is known for {int(keep.sum())} patients; too few to fit")
        self.inputs_ = list(x.columns)
        self.model_ = self._make(self.features_)
        self._fit(x[keep], y[keep], None if event is None else event[keep])
        return self

    def _fit(self, x, y, event):
        self.model_.fit(x.to_numpy(float), y.astype(int))

    def _check(self) -> None:
        if not hasattr(self, "features_"):
            from bayesrad.errors import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(data, target)")

    def predict(self, data) -> pd.DataFrame:
        self._check()
        x = self.features_.matrix(data)[self.inputs_]
        return _answer(self.features_, x.index, self.model_.predict_proba(x.to_numpy(float)))


def _imputer(kind: str, seed: int):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, SimpleImputer

    if kind == "mean":
        return SimpleImputer(strategy="mean", keep_empty_features=True)
    if kind == "iterative":
        return IterativeImputer(random_state=seed, max_iter=10, keep_empty_features=True)
    raise ModelError(f"imputer must be 'mean' or 'iterative' (got {kind!r})")


def _logistic_pipeline(penalty: str, n_cs: int, inner_cv: int, seed: int, imputer: str = "mean"):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    solver = {"l1": "saga", "l2": "lbfgs"}.get(penalty)
    if solver is None:
        raise ModelError(f"penalty must be 'l1' or 'l2' (got {penalty!r})")
    return make_pipeline(
        _imputer(imputer, seed), StandardScaler(),
        # C by inner stratified CV on the training fold only (log-loss, so that the chosen C
        # gives probabilities, not only a ranking)
        # the penalty as l1_ratios (scikit-learn 1.8 deprecated penalty=, 1.10 removes it)
        LogisticRegressionCV(Cs=n_cs, cv=StratifiedKFold(inner_cv, shuffle=True, random_state=seed),
                             l1_ratios=(1.0,) if penalty == "l1" else (0.0,), solver=solver,
                             scoring="neg_log_loss", max_iter=5000, tol=1e-3,
                             use_legacy_attributes=False))


class LogisticBaseline(_Baseline):
    """L1- or L2-penalised logistic regression on every feature (mean-imputed, standardised),
    C chosen by inner stratified CV (log-loss) on the training data."""

    def __init__(self, penalty: str = "l2", n_cs: int = 10, inner_cv: int = 5, seed: int = 0):
        self.penalty = penalty
        self.n_cs = n_cs
        self.inner_cv = inner_cv
        self.seed = seed

    def _make(self, features):
        return _logistic_pipeline(self.penalty, self.n_cs, self.inner_cv, self.seed)


class RandomForestBaseline(_Baseline):
    """Random forest classifier on every feature (mean-imputed)."""

    def __init__(self, n_estimators: int = 500, seed: int = 0):
        self.n_estimators = n_estimators
        self.seed = seed

    def _make(self, features):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import make_pipeline

        return make_pipeline(_imputer("mean", self.seed),
                             RandomForestClassifier(self.n_estimators, random_state=self.seed, n_jobs=1))


class CurrentPracticeBaseline(_Baseline):
    """The usual radiomics pipeline: univariate selection of ``k_features`` (ANOVA F on the
    training data) then a random forest."""

    def __init__(self, k_features: int = 20, n_estimators: int = 500, seed: int = 0):
        self.k_features = k_features
        self.n_estimators = n_estimators
        self.seed = seed

    def _make(self, features):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.feature_selection import SelectKBest, f_classif
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(_imputer("mean", self.seed), StandardScaler(),
                             SelectKBest(f_classif, k=self.k_features),
                             RandomForestClassifier(self.n_estimators, random_state=self.seed, n_jobs=1))

    def _fit(self, x, y, event):
        self.model_.set_params(selectkbest__k=min(self.k_features, x.shape[1]))
        super()._fit(x, y, event)


class CoxBaseline(_Baseline):
    """Penalised Cox proportional hazards (lifelines, ridge), the penalizer chosen by inner
    K-fold CV of Harrell's C on the training data; features mean-imputed and standardised."""

    def __init__(self, penalizers: tuple = (0.1, 0.3, 1.0, 3.0, 10.0), inner_cv: int = 5,
                 imputer: str = "mean", seed: int = 0):
        self.penalizers = penalizers
        self.inner_cv = inner_cv
        self.imputer = imputer
        self.seed = seed

    def _make(self, features):
        if features.kind != "survival":
            raise ModelError(f"CoxBaseline needs a survival target ({features.target!r} is "
                             f"{features.kind})")
        return None

    def _fit(self, x, time, event):
        from lifelines import CoxPHFitter
        from lifelines.utils import concordance_index
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = make_pipeline(_imputer(self.imputer, self.seed), StandardScaler()).fit(x)
        z = pd.DataFrame(self.scaler_.transform(x), columns=[f"x{j}" for j in range(x.shape[1])])
        z = z.loc[:, z.std() > 0]
        self.kept_ = list(z.columns)
        frame = z.assign(_time=time, _event=event)

        def fit(part, penalizer):
            return CoxPHFitter(penalizer=penalizer).fit(part, "_time", "_event")

        scores = []
        inner = StratifiedKFold(self.inner_cv, shuffle=True, random_state=self.seed)
        for penalizer in self.penalizers:
            cs = []
            for a, b in inner.split(frame, frame["_event"]):
                try:
                    model = fit(frame.iloc[a], penalizer)
                except Exception:  # lifelines' Newton steps can diverge at weak penalties
                    continue
                part = frame.iloc[b]
                cs.append(concordance_index(part["_time"], -model.predict_partial_hazard(part),
                                            part["_event"]))
            scores.append(np.mean(cs) if cs else -np.inf)
        for penalizer in [self.penalizers[i] for i in np.argsort(scores)[::-1]]:
            try:
                self.model_ = fit(frame, penalizer)
                self.penalizer_ = penalizer
                return
            except Exception:
                continue
        raise ModelError("CoxPH did not converge at any penalizer; raise the penalizers")

    def predict(self, data, times=None) -> pd.DataFrame:
        self._check()
        x = self.features_.matrix(data)[self.inputs_]
        z = pd.DataFrame(self.scaler_.transform(x), columns=[f"x{j}" for j in range(x.shape[1])],
                         index=x.index)[self.kept_]
        out = pd.DataFrame({"risk": np.log(self.model_.predict_partial_hazard(z).to_numpy())},
                           index=x.index)
        if times is not None:
            surv = self.model_.predict_survival_function(z, times=np.atleast_1d(times))
            for t in np.atleast_1d(times):
                out[f"S@{t:g}"] = surv.loc[t].to_numpy()
        return out


class RSFBaseline(_Baseline):
    """Random survival forest (scikit-survival) on every feature (mean-imputed)."""

    def __init__(self, n_estimators: int = 200, min_samples_leaf: int = 5, seed: int = 0):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def _make(self, features):
        if features.kind != "survival":
            raise ModelError("RSFBaseline needs a survival target")
        from sklearn.pipeline import make_pipeline
        from sksurv.ensemble import RandomSurvivalForest

        return make_pipeline(_imputer("mean", self.seed), RandomSurvivalForest(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            random_state=self.seed, n_jobs=1))

    def _fit(self, x, time, event):
        from sksurv.util import Surv

        self.model_.fit(x.to_numpy(float), Surv.from_arrays(event=event.astype(bool), time=time))

    def predict(self, data, times=None) -> pd.DataFrame:
        self._check()
        x = self.features_.matrix(data)[self.inputs_]
        out = pd.DataFrame({"risk": self.model_.predict(x.to_numpy(float))}, index=x.index)
        if times is not None:
            for fn_index, fn in enumerate(self.model_.predict_survival_function(x.to_numpy(float))):
                for t in np.atleast_1d(times):
                    out.loc[out.index[fn_index], f"S@{t:g}"] = float(fn(min(t, fn.x[-1])))
        return out


class EarlyFusion(_Baseline):
    """All blocks concatenated, missing values imputed (``"mean"`` or ``"iterative"``:
    scikit-learn's ``IterativeImputer``), then L2-logistic (C by inner CV) or penalised Cox."""

    def __init__(self, imputer: str = "iterative", n_cs: int = 10, inner_cv: int = 5, seed: int = 0):
        self.imputer = imputer
        self.n_cs = n_cs
        self.inner_cv = inner_cv
        self.seed = seed

    def _make(self, features):
        if features.kind == "survival":
            self.cox_ = CoxBaseline(imputer=self.imputer, inner_cv=self.inner_cv, seed=self.seed)
            return None
        return _logistic_pipeline("l2", self.n_cs, self.inner_cv, self.seed, self.imputer)

    def _fit(self, x, y, event):
        if self.features_.kind == "survival":
            self.cox_.features_, self.cox_.inputs_ = self.features_, self.inputs_
            self.cox_._fit(x, y, event)
            self.model_ = self.cox_
            return
        super()._fit(x, y, event)

    def predict(self, data, times=None) -> pd.DataFrame:
        self._check()
        if self.features_.kind == "survival":
            return self.model_.predict(data, times=times)
        return super().predict(data)


class LateFusion(_Baseline):
    """One L2-logistic model per block, each fitted on the patients who have that block;
    a patient's answer combines the models of the blocks they have: ``"average"`` of the
    probabilities, or ``"stacking"`` (a logistic regression on the blocks' out-of-fold logits,
    a missing block entering as 0 with an indicator)."""

    def __init__(self, combine: str = "average", n_cs: int = 10, inner_cv: int = 5, seed: int = 0):
        self.combine = combine
        self.n_cs = n_cs
        self.inner_cv = inner_cv
        self.seed = seed

    def _make(self, features):
        if features.kind == "survival":
            raise ModelError("LateFusion handles binary and categorical targets")
        if self.combine not in ("average", "stacking"):
            raise ModelError(f"combine must be 'average' or 'stacking' (got {self.combine!r})")
        return None

    def _groups(self):
        groups: dict[str, list[str]] = {}
        for col in self.inputs_:
            groups.setdefault(self.features_.block_of.get(col, "other"), []).append(col)
        return groups

    def _fit(self, x, y, event):
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        self.block_models_ = {}
        oof = {}
        for block, cols in self._groups().items():
            have = x[cols].notna().any(axis=1).to_numpy()
            if have.sum() < 10 or len(np.unique(y[have])) < len(self.features_.classes):
                continue
            model = _logistic_pipeline("l2", self.n_cs, self.inner_cv, self.seed)
            self.block_models_[block] = (cols, model.fit(x.loc[have, cols].to_numpy(float), y[have].astype(int)))
            if self.combine == "stacking":
                cv = StratifiedKFold(min(5, int(np.bincount(y[have].astype(int)).min())),
                                     shuffle=True, random_state=self.seed)
                probs = cross_val_predict(clone(model), x.loc[have, cols].to_numpy(float),
                                          y[have].astype(int), cv=cv, method="predict_proba")
                column = np.zeros(len(y))
                column[have] = _logit(probs[:, 1]) if probs.shape[1] == 2 else 0.0
                oof[block] = (column, have)
        if not self.block_models_:
            raise ModelError("late fusion: no block has enough patients (10) with both classes")
        if self.combine == "stacking":
            from sklearn.linear_model import LogisticRegression

            self.stack_ = LogisticRegression(C=1.0, max_iter=2000).fit(
                self._stack_inputs(oof), y.astype(int))
        self.model_ = self.block_models_

    def _stack_inputs(self, columns):
        names = sorted(self.block_models_)
        return np.column_stack([columns[b][0] if b in columns else np.zeros(1) for b in names]
                               + [columns[b][1].astype(float) if b in columns else np.zeros(1)
                                  for b in names])

    def predict(self, data) -> pd.DataFrame:
        self._check()
        x = self.features_.matrix(data)[self.inputs_]
        n, k = len(x), len(self.features_.classes)
        total, count = np.zeros((n, k)), np.zeros(n)
        stack = {}
        for block, (cols, model) in self.block_models_.items():
            have = x[cols].notna().any(axis=1).to_numpy()
            probs = np.zeros((n, k))
            if have.any():
                probs[have] = model.predict_proba(x.loc[have, cols].to_numpy(float))
            total += probs * have[:, None]
            count += have
            column = np.zeros(n)
            column[have] = _logit(probs[have, 1]) if k == 2 else 0.0
            stack[block] = (column, have)
        if self.combine == "stacking" and k == 2:
            out = self.stack_.predict_proba(self._stack_inputs(stack))
        else:
            # a patient with none of the blocks gets the training class shares
            prior = np.full(k, 1.0 / k)
            out = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], prior)
        return _answer(self.features_, x.index, out)


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class BayesNet(BaseEstimator):
    """bayesrad itself under the same contract: ``Graph.default(data, target)`` (or
    ``graph``) and ``HybridBN(graph, **settings)``; predictions leave out, as evidence, the
    outcome columns other than the target (a later outcome is not known at prediction)."""

    def __init__(self, graph=None, settings: dict | None = None):
        self.graph = graph
        self.settings = settings

    def fit(self, data, target: str):
        from bayesrad.model import HybridBN

        graph = self.graph if self.graph is not None else Graph.default(data, target=target)
        self.target_ = target
        self.model_ = HybridBN(graph, **dict(self.settings or {})).fit(data)
        self.graph_ = self.model_.graph_
        return self

    def predict(self, data, times=None) -> pd.DataFrame:
        if not hasattr(self, "model_"):
            from bayesrad.errors import NotFittedError

            raise NotFittedError("this BayesNet is not fitted yet; call fit(data, target)")
        kind = self.graph_.spec(self.target_).kind
        later = [n for n in self.graph_.descendants(self.target_)]
        pred = self.model_.predict(data, target=self.target_, ignore=later, times=times)
        if kind == "survival":
            pred = pred.copy()
            pred.insert(0, "risk", -np.log(pred["median"].to_numpy()))
        return pred


#: The names ``compare`` and the CLI accept.
REGISTRY = {
    "bayesrad": lambda seed: BayesNet(settings={"seed": seed, "num_threads": 1}),
    "rf": lambda seed: RandomForestBaseline(seed=seed),
    "l1": lambda seed: LogisticBaseline(penalty="l1", seed=seed),
    "l2": lambda seed: LogisticBaseline(penalty="l2", seed=seed),
    "practice": lambda seed: CurrentPracticeBaseline(seed=seed),
    "cox": lambda seed: CoxBaseline(seed=seed),
    "rsf": lambda seed: RSFBaseline(seed=seed),
    "early": lambda seed: EarlyFusion(seed=seed),
    "early_mean": lambda seed: EarlyFusion(imputer="mean", seed=seed),
    "late": lambda seed: LateFusion(seed=seed),
    "late_stacking": lambda seed: LateFusion(combine="stacking", seed=seed),
}


def make_model(name: str, seed: int = 0):
    """A model of ``REGISTRY`` by name."""
    if name not in REGISTRY:
        raise ModelError(f"unknown model {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name](seed)


__all__ = ["LogisticBaseline", "RandomForestBaseline", "CurrentPracticeBaseline", "CoxBaseline",
           "RSFBaseline", "EarlyFusion", "LateFusion", "BayesNet", "REGISTRY", "make_model"]
