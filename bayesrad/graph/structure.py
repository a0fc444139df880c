"""Structure learning over a node table, under expert knowledge, with pgmpy's searches.

Two learners in the style of ``pgmpy.causal_discovery`` (sklearn estimators: ``__init__``
stores settings, ``fit(X)`` returns ``self``, the result is ``causal_graph_``):

- ``HillClimbLearner``: pgmpy's ``HillClimbSearch`` with a BIC score matched to the data
  (``bic-cg``, the conditional-Gaussian BIC, for mixed continuous/discrete tables; ``bic-g`` for
  continuous-only and ``bic-d`` for discrete-only tables).
- ``PCLearner``: pgmpy's ``PC`` (stable variant) with the matching independence test: for
  mixed data ``pillai`` (Pillai's trace on the residuals of both variables given the
  conditioning set, Ankan & Textor 2023) with *generalised linear* residuals (linear
  regression for continuous, multinomial logistic for discrete variables). pgmpy's default
  residualiser is an in-sample random forest, which is ~100x slower here and whose in-sample
  residuals are shrunk towards zero by overfitting; ``ci_test="pillai_rf"`` keeps it.

Both wrap the pgmpy search rather than rewrite it, and add three things:

1. Determinism. Columns are sorted by name, and pgmpy's candidate moves (an iteration over a
   Python ``set``, whose order follows ``PYTHONHASHSEED``) are ranked in sorted order before the
   best one is taken, so ties between score-equivalent moves break the same way in every
   process. The same data give the same graph whatever the hash seed or column order.
2. Expert knowledge (``bayesrad.graph.knowledge.ExpertKnowledge``) expanded into explicit
   forbidden/required edges for pgmpy, then enforced on the result (``enforce_knowledge``): the
   learned graph never violates it, whichever search produced it (pgmpy's PC only warns when a
   collider contradicts the knowledge).
3. Graph kinds: a survival outcome cannot be a parent and a group node cannot be a child in a
   bayesrad ``Graph``; ``learn_structure`` forbids those edges before the search.

``learn_structure`` is the one-call entry point; with ``bootstrap=B`` it returns the averaged
graph with edge confidence (``bayesrad.graph.bootstrap``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import networkx as nx
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from bayesrad.errors import GraphError, KnowledgeError
from bayesrad.graph.graph import Graph
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.graph.node_table import NodeTable, table_from_frame

METHODS = ("hill_climb", "pc")


def prepare_table(X: pd.DataFrame) -> pd.DataFrame:
    """The data as pgmpy's scores need it: columns sorted by name, discrete columns as pandas
    categoricals (bool / text too), numeric columns as float64.

    Raises ``GraphError`` naming the column for missing values, a constant column or an
    unusable dtype.
    """
    if not isinstance(X, pd.DataFrame):
        raise GraphError(f"structure learning takes a pandas DataFrame (got {type(X).__name__}); "
                         "build one with bayesrad.graph.node_table.build_node_table")
    if X.shape[1] < 2 or X.shape[0] < 5:
        raise GraphError(f"structure learning needs at least 2 columns and 5 rows "
                         f"(got {X.shape[0]} rows x {X.shape[1]} columns)")
    names = [str(c) for c in X.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise GraphError(f"columns {dup} appear more than once; rename them")
    data = X.copy()
    data.columns = names
    data = data[sorted(names)]
    for col in data.columns:
        series = data[col]
        if series.isna().any():
            patient = series.index[series.isna()][0]
            raise GraphError(f"column {col!r} has missing values (first: row {patient!r}); "
                             "structure search needs complete cases: drop or impute them")
        if isinstance(series.dtype, pd.CategoricalDtype):
            data[col] = series.cat.remove_unused_categories()
        elif pd.api.types.is_bool_dtype(series) or series.dtype == object:
            data[col] = pd.Categorical(series.astype(str))
        elif pd.api.types.is_numeric_dtype(series):
            data[col] = series.astype(float)
        else:
            raise GraphError(f"column {col!r} has dtype {series.dtype}, which structure "
                             "learning cannot use; make it numeric or categorical")
        if data[col].nunique() < 2:
            raise GraphError(f"column {col!r} is constant; drop it (it cannot have edges)")
    return data


def _default_score(data: pd.DataFrame) -> str:
    discrete = [isinstance(data[c].dtype, pd.CategoricalDtype) for c in data.columns]
    if all(discrete):
        return "bic-d"
    if not any(discrete):
        return "bic-g"
    return "bic-cg"


def enforce_knowledge(edges: Iterable[tuple[str, str]], knowledge: ExpertKnowledge | None,
                      nodes: Iterable[str]) -> nx.DiGraph:
    """A DAG over ``nodes`` with the required edges and the allowed ``edges``.

    Required edges go in first. Each learned edge is then kept if allowed; if only its reverse
    is allowed the edge is flipped (the adjacency is evidence, its direction is not); an edge
    that would close a cycle is dropped. Edges are visited in the given order, so pass them in
    a deterministic one.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(map(str, nodes)))
    knowledge = knowledge or ExpertKnowledge()
    for u, v in knowledge.required_edges(graph.nodes):
        graph.add_edge(u, v)
    for u, v in edges:
        u, v = str(u), str(v)
        if graph.has_edge(u, v) or graph.has_edge(v, u):
            continue
        if not knowledge.allows(u, v):
            if not knowledge.allows(v, u):
                continue
            u, v = v, u
        if not nx.has_path(graph, v, u):
            graph.add_edge(u, v)
    return graph


class _KnowledgeLearner(BaseEstimator):
    """Shared ``fit`` of the learners: prepare data, build pgmpy knowledge, enforce it."""

    def fit(self, X: pd.DataFrame, y=None) -> "_KnowledgeLearner":
        """Learn a DAG from ``X`` (rows = patients, columns = nodes); returns ``self``.

        Fitted attributes: ``causal_graph_`` (networkx DiGraph, a DAG that respects the
        knowledge), ``feature_names_in_`` (sorted column names), ``n_features_in_``,
        ``fit_seconds_`` (wall time of the search, s).
        """
        data = prepare_table(X)
        knowledge = self.knowledge if self.knowledge is not None else ExpertKnowledge()
        if not isinstance(knowledge, ExpertKnowledge):
            raise KnowledgeError(f"knowledge must be a bayesrad ExpertKnowledge "
                                 f"(got {type(knowledge).__name__})")
        knowledge.check_nodes(data.columns)
        start = time.perf_counter()
        edges = self._search(data, knowledge)
        self.causal_graph_ = enforce_knowledge(edges, knowledge, data.columns)
        self.fit_seconds_ = time.perf_counter() - start
        self.feature_names_in_ = np.asarray(data.columns, dtype=object)
        self.n_features_in_ = data.shape[1]
        return self


def _gaussian_bic_class():
    """A pgmpy structure score equal to pgmpy's ``bic-g``, computed with numpy least squares.

    pgmpy's ``bic-g`` fits a statsmodels GLM from a formula for every local score (~10 ms);
    the same number - the Gaussian log-likelihood at the ML variance, ``-n/2 (log(2 pi RSS/n)
    + 1)``, minus ``(p + 2)/2 log n`` for ``p`` parents - costs ~0.1 ms with ``lstsq``, which
    is what makes hill climbing on 40+ continuous nodes and its bootstraps practical. The
    search is unchanged; tests check the values against pgmpy's.
    """
    from pgmpy.structure_score import BaseStructureScore

    class _GaussianBIC(BaseStructureScore):
        _tags = {"name": "bayesrad-bic-g", "supported_datatype": "continuous",
                 "default_for": None, "is_parameteric": False}

        def __init__(self, data, state_names=None):
            super().__init__(data, state_names=state_names)
            self._values = self.data.to_numpy(dtype=float)
            self._column = {name: i for i, name in enumerate(self.data.columns)}

        def _local_score(self, variable, parents):
            n = self._values.shape[0]
            y = self._values[:, self._column[variable]]
            design = np.column_stack([np.ones(n)] + [self._values[:, self._column[p]]
                                                     for p in parents])
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            rss = float(np.sum((y - design @ coef) ** 2))
            log_likelihood = -0.5 * n * (np.log(2 * np.pi * max(rss, 1e-300) / n) + 1.0)
            return log_likelihood - (len(parents) + 2) / 2.0 * np.log(n)

    return _GaussianBIC


def _sorted_hill_climb_class():
    """pgmpy's HillClimbSearch whose candidate moves are ranked in sorted order.

    ``HillClimbSearch`` takes ``max`` over moves generated from a ``set`` of node pairs; on
    ties (score-equivalent additions such as a->b vs b->a) the winner depends on the set's
    iteration order, i.e. on ``PYTHONHASHSEED``. Sorting the moves first makes ``max`` pick the
    same move in every process (and with every implementation of the same score); the search
    itself is pgmpy's.
    """
    from pgmpy.causal_discovery import HillClimbSearch

    class _SortedHillClimbSearch(HillClimbSearch):
        def _legal_operations_dag(self, *args, **kwargs):
            # Score-equivalent moves differ only by floating-point noise (1e-12), which
            # depends on the score's implementation and the BLAS; rounding makes them exact
            # ties, which the sorted order then breaks.
            moves = [(op, round(float(delta), 8))
                     for op, delta in super()._legal_operations_dag(*args, **kwargs)]
            moves.sort(key=lambda move: (move[0][0], tuple(map(str, move[0][1]))))
            return iter(moves)

    return _SortedHillClimbSearch


class HillClimbLearner(_KnowledgeLearner):
    """Greedy hill climbing (pgmpy ``HillClimbSearch``) on a BIC score, under expert knowledge.

    Parameters
    ----------
    score : pgmpy score name; ``"auto"`` picks ``bic-cg`` for mixed data (conditional-Gaussian
        BIC: discrete columns must be pandas categoricals), ``bic-g`` for continuous and
        ``bic-d`` for discrete data. ``bic-g`` is computed by a numpy score with pgmpy's
        values (~100x faster); ``"bic-g-pgmpy"`` uses pgmpy's own implementation.
    knowledge : ``ExpertKnowledge`` or ``None``.
    max_indegree : most parents per node (``None`` = unlimited).
    tabu_length : moves remembered to avoid undoing them.
    epsilon : smallest score gain that counts as an improvement.
    max_iter : most search iterations.
    """

    def __init__(self, score: str = "auto", knowledge: ExpertKnowledge | None = None,
                 max_indegree: int | None = None, tabu_length: int = 100,
                 epsilon: float = 1e-4, max_iter: int = 1_000_000):
        self.score = score
        self.knowledge = knowledge
        self.max_indegree = max_indegree
        self.tabu_length = tabu_length
        self.epsilon = epsilon
        self.max_iter = max_iter

    def _search(self, data: pd.DataFrame, knowledge: ExpertKnowledge) -> list[tuple[str, str]]:
        score = _default_score(data) if self.score == "auto" else self.score
        self.score_ = score
        if score == "bic-g":
            scoring = _gaussian_bic_class()(data)
        elif score == "bic-g-pgmpy":
            scoring = "bic-g"
        else:
            scoring = score
        search = _sorted_hill_climb_class()(
            scoring_method=scoring, expert_knowledge=knowledge.to_pgmpy(data.columns),
            max_indegree=self.max_indegree, tabu_length=self.tabu_length,
            epsilon=self.epsilon, max_iter=self.max_iter, return_type="dag",
            show_progress=False)
        try:
            search.fit(data)
        except ValueError as exc:
            raise GraphError(f"hill climbing with score {score!r} failed: {exc}") from exc
        return sorted(search.causal_graph_.edges())


class GLMResidualiser(BaseEstimator):
    """The regression behind the mixed ``pillai`` CI test: ``predict`` is an ordinary least
    squares fit (continuous targets), ``predict_proba`` a multinomial logistic regression
    (discrete targets, given as integer codes). pgmpy calls exactly one of them after ``fit``,
    so each model is fitted on first use."""

    def fit(self, X, y) -> "GLMResidualiser":
        self.X_ = np.asarray(X, dtype=float)
        self.y_ = np.asarray(y)
        return self

    def predict(self, X) -> np.ndarray:
        from sklearn.linear_model import LinearRegression

        return LinearRegression().fit(self.X_, self.y_.astype(float)).predict(
            np.asarray(X, dtype=float))

    def predict_proba(self, X) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        # A weak ridge (C=100) keeps separable classes finite without visibly shrinking fits.
        model = LogisticRegression(C=100.0, max_iter=500).fit(self.X_, self.y_)
        return model.predict_proba(np.asarray(X, dtype=float))


class PCLearner(_KnowledgeLearner):
    """The PC algorithm (pgmpy ``PC``, stable variant) with a mixed-data independence test.

    Parameters
    ----------
    ci_test : pgmpy CI test name; ``"auto"`` picks ``pillai`` (GLM residuals) for mixed data,
        ``pearsonr`` for continuous and ``chi_square`` for discrete data; ``"pillai_rf"`` is
        pgmpy's random-forest Pillai test.
    significance_level : alpha of each independence test.
    max_cond_vars : largest conditioning set.
    knowledge : ``ExpertKnowledge`` or ``None``.

    Undirected edges of the learned CPDAG are oriented by the knowledge where it decides,
    then by pgmpy's consistent extension (``PDAG.to_dag``).
    """

    def __init__(self, ci_test: str = "auto", significance_level: float = 0.01,
                 max_cond_vars: int = 3, knowledge: ExpertKnowledge | None = None):
        self.ci_test = ci_test
        self.significance_level = significance_level
        self.max_cond_vars = max_cond_vars
        self.knowledge = knowledge

    def _search(self, data: pd.DataFrame, knowledge: ExpertKnowledge) -> list[tuple[str, str]]:
        from pgmpy.causal_discovery import PC

        if self.ci_test == "auto":
            ci_test = {"bic-d": "chi_square", "bic-g": "pearsonr"}.get(_default_score(data),
                                                                     "pillai")
        else:
            ci_test = self.ci_test
        self.ci_test_ = ci_test
        if ci_test == "pillai":
            from pgmpy.ci_tests import PillaiTrace

            test = PillaiTrace(data=data, estimator=GLMResidualiser())
        else:
            test = "pillai" if ci_test == "pillai_rf" else ci_test
        search = PC(variant="stable", ci_test=test, return_type="pdag",
                    significance_level=self.significance_level,
                    max_cond_vars=self.max_cond_vars,
                    expert_knowledge=knowledge.to_pgmpy(data.columns), n_jobs=1,
                    show_progress=False)
        try:
            search.fit(data)
        except ValueError as exc:
            raise GraphError(f"PC with test {ci_test!r} failed: {exc}") from exc
        pdag = search.causal_graph_
        for u, v in sorted(pdag.undirected_edges):
            if not knowledge.allows(u, v) and knowledge.allows(v, u):
                pdag.orient_undirected_edge(v, u, inplace=True)
            elif not knowledge.allows(v, u) and knowledge.allows(u, v):
                pdag.orient_undirected_edge(u, v, inplace=True)
        directed = set(pdag.directed_edges)
        dag = pdag.to_dag()
        # Edges PC oriented itself (colliders) first, then the consistent extension's choices.
        return sorted(directed) + sorted(set(dag.edges()) - directed)


def make_learner(method: str = "hill_climb", knowledge: ExpertKnowledge | None = None,
                 **params) -> _KnowledgeLearner:
    """A learner by name (``"hill_climb"`` or ``"pc"``) with its settings."""
    if method in ("hill_climb", "hc", "hillclimb"):
        return HillClimbLearner(knowledge=knowledge, **params)
    if method == "pc":
        return PCLearner(knowledge=knowledge, **params)
    raise GraphError(f"unknown structure-learning method {method!r}; use one of {METHODS}")


def kind_constraints(kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    """Edges a bayesrad Graph cannot hold: out of a ``survival`` node, into a ``group`` node."""
    names = sorted(kinds)
    forbidden = []
    for u in names:
        for v in names:
            if u != v and (kinds[u] == "survival" or kinds[v] == "group"):
                forbidden.append((u, v))
    return forbidden


def dag_to_graph(dag: nx.DiGraph, table: NodeTable,
                 confidence: Mapping[tuple[str, str], Mapping[str, float]] | None = None
                 ) -> Graph:
    """A bayesrad ``Graph`` with the node table's specs and the DAG's edges (and confidence)."""
    graph = Graph([table.specs[name] for name in table.data.columns])
    confidence = confidence or {}
    for u, v in sorted(dag.edges()):
        graph.add_edge(u, v, confidence=confidence.get((u, v)))
    return graph


def edge_table(graph: Graph) -> pd.DataFrame:
    """The graph's edges as a table: ``from``, ``to``, ``probability``, ``direction`` (NaN
    without bootstrap confidence), sorted by decreasing probability."""
    confidence = graph.edge_confidence
    rows = [(u, v, confidence.get((u, v), {}).get("probability", np.nan),
             confidence.get((u, v), {}).get("direction", np.nan)) for u, v in graph.edges]
    table = pd.DataFrame(rows, columns=["from", "to", "probability", "direction"])
    return table.sort_values(["probability", "from", "to"], ascending=[False, True, True],
                             na_position="last").reset_index(drop=True)


def compare_graphs(learned, truth) -> dict[str, float]:
    """Structure-recovery metrics of a learned DAG against the true one.

    Parameters
    ----------
    learned, truth : anything with ``.edges`` giving ``(parent, child)`` pairs (a bayesrad
        ``Graph``, a networkx DiGraph) or an iterable of pairs.

    Returns
    -------
    dict with ``shd`` (structural Hamming distance: node pairs whose status - absent, u->v,
    v->u - differs; a reversed edge counts 1, as ``pgmpy.metrics.SHD``), ``skeleton_precision``
    and ``skeleton_recall`` (of adjacencies, ignoring direction), ``orientation_accuracy``
    (fraction of correctly found adjacencies whose direction is right; NaN when none),
    ``n_learned``, ``n_true``.
    """
    def pairs(g):
        edges = g.edges if hasattr(g, "edges") else g
        return {(str(u), str(v)) for u, v in edges}

    est, tru = pairs(learned), pairs(truth)
    skel_est = {frozenset(e) for e in est}
    skel_tru = {frozenset(e) for e in tru}
    shd = sum(((u, v) in est, (v, u) in est) != ((u, v) in tru, (v, u) in tru)
              for u, v in (tuple(sorted(p)) for p in skel_est | skel_tru))
    common = [e for e in est if frozenset(e) in skel_tru]
    return {
        "shd": int(shd),
        "skeleton_precision": len(skel_est & skel_tru) / len(skel_est) if skel_est else float("nan"),
        "skeleton_recall": len(skel_est & skel_tru) / len(skel_tru) if skel_tru else float("nan"),
        "orientation_accuracy": (sum(e in tru for e in common) / len(common)
                                 if common else float("nan")),
        "n_learned": len(est),
        "n_true": len(tru),
    }


def learn_structure(table: NodeTable | pd.DataFrame,
                    knowledge: ExpertKnowledge | None = None,
                    method: str = "hill_climb", bootstrap: int = 0,
                    threshold: float | str = "scutari", n_jobs: int = 1, client=None,
                    seed: int = 0, **params) -> Graph:
    """Learn a bayesrad ``Graph`` from a node table under expert knowledge.

    Parameters
    ----------
    table : a ``NodeTable`` (``build_node_table(cohort)``), a ``Cohort`` (its node table is
        built with the defaults) or a DataFrame (kinds from dtypes).
    knowledge : ``ExpertKnowledge`` (never violated), ``None``, or ``"default"``: tiers from
        the blocks (``ExpertKnowledge.from_blocks``).
    method : ``"hill_climb"`` (BIC score, default) or ``"pc"``.
    bootstrap : number B of bootstrap resamples; 0 = one search on the full data.
    threshold : with ``bootstrap``: ``"scutari"`` (bnlearn's L1 threshold on edge strengths)
        or a probability in [0, 1].
    n_jobs, client : bootstrap parallelism: processes, or a Dask ``Client`` / scheduler address.
    seed : bootstrap seed.
    params : settings of the learner (e.g. ``score``, ``max_indegree``, ``significance_level``).

    Returns
    -------
    Graph whose nodes are the table's node specs; with ``bootstrap`` every edge carries
    ``confidence={"probability": p, "direction": q}``, also in ``graph.bootstrap_`` (the
    ``BootstrapResult``) when set.
    """
    if isinstance(table, pd.DataFrame):
        table = table_from_frame(table)
    elif hasattr(table, "blocks") and hasattr(table, "patient_ids"):
        from bayesrad.graph.node_table import build_node_table

        table = build_node_table(table, seed=seed)
    if not isinstance(table, NodeTable):
        raise GraphError(f"learn_structure takes a NodeTable, a Cohort or a DataFrame "
                         f"(got {type(table).__name__})")
    if isinstance(knowledge, str):
        if knowledge != "default":
            raise KnowledgeError(f"knowledge must be an ExpertKnowledge, None or 'default' "
                                 f"(got {knowledge!r})")
        knowledge = ExpertKnowledge.from_blocks(table.blocks)
    base = knowledge if knowledge is not None else ExpertKnowledge()
    full = base.merged(forbidden=kind_constraints(table.kinds))
    learner = make_learner(method, knowledge=full, **params)
    if not bootstrap:
        dag = learner.fit(table.data).causal_graph_
        return dag_to_graph(dag, table)
    from bayesrad.graph.bootstrap import bootstrap_structure

    result = bootstrap_structure(table.data, learner, n_bootstrap=int(bootstrap), seed=seed,
                                 n_jobs=n_jobs, client=client)
    dag = result.averaged_dag(threshold=threshold)
    graph = dag_to_graph(dag, table, result.confidence())
    graph.bootstrap_ = result
    return graph


__all__ = ["HillClimbLearner", "PCLearner", "GLMResidualiser", "learn_structure", "enforce_knowledge",
           "prepare_table", "make_learner", "compare_graphs", "edge_table", "kind_constraints", "dag_to_graph", "METHODS"]
