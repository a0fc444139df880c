"""The scikit-learn estimator contract, checked on every estimator of the package.

Adding an estimator is one line in ``CASES``: a name, a factory of a small, fast instance,
a factory of its training input, and (optionally) a call that needs the fitted state.

Which of scikit-learn's own checks run, and why not the others: the checks that need no data
(``check_no_attributes_set_in_init``, ``check_get_params_invariance``, ``check_set_params``,
``check_parameters_default_constructible``, ``check_estimator_repr``) run on every estimator.
``parametrize_with_checks``' data checks feed random ``(X, y)`` arrays; none of these
estimators takes a bare array with a target: HybridBN takes a Cohort, ComBat a DataFrame with a
batch column, GeneModules raw counts (patients x genes), the structure learners a typed node
table, and KineticHabitats' second argument is the frame times, not ``y``. The same
properties (fit returns self, fitted state ends in ``_``, settings unchanged by fit, global
RNGs untouched, unfitted use refused) are checked below on inputs each estimator accepts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFitted
from sklearn.utils import estimator_checks as checks
from sklearn.utils.validation import check_is_fitted

from bayesrad.errors import NotFittedError
from bayesrad.evaluate.baselines import (BayesNet, CurrentPracticeBaseline, EarlyFusion, LateFusion,
                                         LogisticBaseline, RandomForestBaseline)
from bayesrad.features.genes import GeneModules
from bayesrad.features.harmonize import ComBatHarmonizer
from bayesrad.features.kinetics import KineticHabitats
from bayesrad.graph.bootstrap import BootstrapLearner
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.graph.structure import HillClimbLearner, PCLearner
from bayesrad.model import HybridBN


def _cohort():
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(30)]
    a = rng.normal(size=30)
    return {"clinical": pd.DataFrame({"a": a, "b": (a + rng.normal(size=30) > 0).astype(float)},
                                      index=ids)}


def _hybrid():
    graph = Graph([NodeSpec("a", "continuous"), NodeSpec("b", "binary")], [("a", "b")])
    return HybridBN(graph, num_steps=5, min_steps=5, n_samples=20, num_threads=1)


def _centres():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(30, 3)), columns=["f1", "f2", "f3"])
    df["centre"] = np.repeat(["A", "B", "C"], 10)
    df["age"] = rng.normal(60, 8, 30)
    df[["f1", "f2"]] += np.repeat([0.0, 1.0, -1.0], 10)[:, None]
    return df


def _counts():
    rng = np.random.default_rng(2)
    factor = rng.normal(size=(30, 1))
    mean = np.exp(3 + 0.8 * factor @ rng.choice([0, 1], (1, 40)))
    return pd.DataFrame(rng.poisson(mean), index=[f"P{i}" for i in range(30)],
                        columns=[f"g{j}" for j in range(40)])


def _curves():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 1, 8)
    shapes = np.stack([np.exp(-3 * t), t])
    return shapes[rng.integers(0, 2, 300)] + 0.05 * rng.normal(size=(300, 8)) + 1.0


def _table():
    rng = np.random.default_rng(4)
    x = rng.normal(size=200)
    return pd.DataFrame({"x": x, "y": x + 0.5 * rng.normal(size=200),
                         "z": rng.normal(size=200)})


def _binary_blocks():
    rng = np.random.default_rng(5)
    ids = pd.Index([f"P{i:03d}" for i in range(80)], name="patient_id")
    x = rng.normal(size=(80, 3))
    y = (rng.random(80) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(float)
    return {"clinical": pd.DataFrame(x, columns=["a", "b", "c"], index=ids),
            "outcome": pd.DataFrame({"y": y}, index=ids)}


@dataclass
class Case:
    name: str
    make: Callable[[], Any]
    data: Callable[[], Any]
    use: Callable[[Any, Any], Any] | None = None     # a call that needs the fitted state
    fit: Callable[[Any, Any], Any] = lambda est, data: est.fit(data)


def _baseline(name, make):
    """An evaluation baseline: ``fit(data, target)``, ``predict(data)``."""
    return Case(name, make, _binary_blocks, lambda est, data: est.predict(data),
                lambda est, data: est.fit(data, "y"))


CASES = [
    Case("HybridBN", _hybrid, _cohort, lambda est, data: est.predict(data, "b")),
    Case("ComBatHarmonizer", lambda: ComBatHarmonizer(covariates=["age"]), _centres,
         lambda est, data: est.transform(data)),
    Case("GeneModules", lambda: GeneModules(n_top_genes=20, n_modules=2, min_module_size=2),
         _counts, lambda est, data: est.transform(data)),
    Case("KineticHabitats", lambda: KineticHabitats(n_habitats=2, n_components=2), _curves,
         lambda est, data: est.predict(data)),
    Case("HillClimbLearner", lambda: HillClimbLearner(restarts=1), _table),
    Case("PCLearner", lambda: PCLearner(max_cond_vars=1), _table),
    Case("BootstrapLearner", lambda: BootstrapLearner(HillClimbLearner(restarts=1), n_bootstrap=3),
         _table),
    _baseline("LogisticBaseline", lambda: LogisticBaseline(n_cs=3, inner_cv=3)),
    _baseline("RandomForestBaseline", lambda: RandomForestBaseline(n_estimators=20)),
    _baseline("CurrentPracticeBaseline", lambda: CurrentPracticeBaseline(k_features=2, n_estimators=20)),
    _baseline("EarlyFusion", lambda: EarlyFusion(n_cs=3, inner_cv=3)),
    _baseline("LateFusion", lambda: LateFusion(n_cs=3, inner_cv=3)),
    _baseline("BayesNet", lambda: BayesNet(settings={"num_steps": 200, "min_steps": 100,
                                                     "num_threads": 1})),
]
IDS = [case.name for case in CASES]


def _rng_state():
    return random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state()


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def fitted(request):
    """(case, unfitted estimator, training data, its fit's return value, RNG states)."""
    case = request.param
    est, data = case.make(), case.data()
    # seed the globals to a known state, so a fit that reseeds them is seen
    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)
    before = _rng_state()
    fresh = clone(est)
    returned = case.fit(fresh, data)
    return case, est, data, fresh, returned, before, _rng_state()


@pytest.mark.parametrize("check", [checks.check_no_attributes_set_in_init,
                                   checks.check_get_params_invariance,
                                   checks.check_set_params,
                                   checks.check_parameters_default_constructible,
                                   checks.check_estimator_repr])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sklearn_checks_without_data(case, check):
    check(case.name, case.make())


def test_clone_and_params_round_trip(fitted):
    case, est, *_ = fitted
    params = est.get_params(deep=False)
    twin = clone(est)
    assert twin is not est and twin.get_params(deep=False).keys() == params.keys()
    # set_params of the estimator's own values gives back the same settings
    again = case.make().set_params(**params)
    assert again.get_params(deep=False) == params
    name = sorted(params)[-1]
    with pytest.raises(ValueError):
        case.make().set_params(**{name + "_not_a_setting": 1})


def test_init_stores_only_its_settings(fitted):
    case, est, *_ = fitted
    stored = {k for k in vars(est) if not k.startswith("__")}
    assert stored == set(est.get_params(deep=False)), case.name


def test_fit_returns_self_and_fitted_state_ends_in_underscore(fitted):
    case, est, _, fresh, returned, *_ = fitted
    assert returned is fresh, f"{case.name}.fit must return self"
    new = set(vars(fresh)) - set(vars(est))
    public = {k for k in new if not k.startswith("_")}
    assert public and all(k.endswith("_") for k in public), (case.name, sorted(public))
    # fit leaves the settings as they were given
    assert repr(fresh.get_params(deep=False)) == repr(est.get_params(deep=False))
    check_is_fitted(fresh)


def test_fit_leaves_the_global_generators_alone(fitted):
    case, *_, before, after = fitted
    names = ("python random", "numpy", "torch")
    for name, b, a in zip(names, before, after):
        same = torch.equal(b, a) if isinstance(b, torch.Tensor) else b == a
        assert same, f"{case.name}.fit changed the global {name} generator"


def test_unfitted_use_is_refused(fitted):
    case, est, data, *_ = fitted
    with pytest.raises(SklearnNotFitted):
        check_is_fitted(case.make())
    if case.use is not None:
        with pytest.raises((NotFittedError, SklearnNotFitted)):
            case.use(case.make(), data)
