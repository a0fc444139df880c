"""Structure learning over a node table, under expert knowledge.

Two learners in the style of ``pgmpy.causal_discovery`` (sklearn estimators: ``__init__``
stores settings, ``fit(X)`` returns ``self``, the result is ``causal_graph_``):

- ``HillClimbLearner``: score-based search (``bayesrad.graph.search.TabuSearch``: hill
  climbing, a tabu walk past local optima, random restarts) on a BIC score
  (``bayesrad.graph.scores``). For mixed tables the default score is ``bic-glm``, the BIC of
  the node families ``HybridBN`` fits (Gaussian / logistic / proportional-odds / Poisson
  regressions with additive parents); pgmpy's conditional-Gaussian ``bic-cg`` (computed in
  numpy, same values) stays available but gives a continuous child one regression per
  combination of its discrete parents, which on the simulator loses most clinical edges.
  ``bic-g`` / ``bic-d`` for continuous-only / discrete-only tables.
- ``PCLearner``: pgmpy's ``PC`` (stable variant) with the matching independence test: for
  mixed data ``pillai`` (Pillai's trace on the residuals of both variables given the
  conditioning set, Ankan & Textor 2023) with *generalised linear* residuals (linear
  regression for continuous, multinomial logistic for discrete variables). pgmpy's default
  residualiser is an in-sample random forest, which is ~100x slower here and whose in-sample
  residuals are shrunk towards zero by overfitting; ``ci_test="pillai_rf"`` keeps it.

Both add:

1. Determinism. Columns are sorted by name and the search breaks ties by a seeded priority,
   never by a Python ``set`` order: the same data, knowledge and seed give the same graph
   whatever the hash seed or column order.
2. Expert knowledge (``bayesrad.graph.knowledge.ExpertKnowledge``): the search only makes
   allowed moves (PC gets it as pgmpy knowledge), and the result is passed through
   ``enforce_knowledge``: the learned graph never violates it (pgmpy's PC only warns when a
   collider contradicts the knowledge).
3. Graph kinds: a survival outcome cannot be a parent and a group node cannot be a child in a
   bayesrad ``Graph``; ``learn_structure`` forbids those edges before the search.
4. Vector nodes (hill climbing): a block summarised by k component scores is one node
   (``NodeTable.vector_nodes``), as it is one k-dimensional latent node in ``HybridBN``.

``learn_structure`` is the one-call entry point; with ``bootstrap=B`` it returns the averaged
graph with edge confidence (``bayesrad.graph.bootstrap``). ``compare_graphs`` scores a learned
DAG against a true one, also between equivalence classes (CPDAGs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import networkx as nx
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from bayesrad.errors import GraphError, KnowledgeError
from bayesrad.graph.bootstrap import BootstrapLearner
from bayesrad.graph.graph import Graph
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.graph.node_table import NodeTable, table_from_frame
# re-exported: they were defined here, and callers import them from this module
from bayesrad.graph.preparation import enforce_knowledge, node_names, prepare_table

METHODS = ("hill_climb", "pc")


def _default_score(data: pd.DataFrame, vector_nodes: Mapping[str, list[str]] | None = None
                   ) -> str:
    discrete = [isinstance(data[c].dtype, pd.CategoricalDtype) for c in data.columns]
    if vector_nodes or (any(discrete) and not all(discrete)):
        return "bic-glm"
    if all(discrete):
        return "bic-d"
    if any(pd.api.types.is_integer_dtype(data[c]) for c in data.columns):
        return "bic-glm"                                  # counts: Poisson children
    return "bic-g"


class _KnowledgeLearner(BaseEstimator):
    """Shared ``fit`` of the learners: prepare data, build pgmpy knowledge, enforce it."""

    def fit(self, X: pd.DataFrame, y=None) -> "_KnowledgeLearner":
        """Learn a DAG from ``X`` (rows = patients, columns = nodes); returns ``self``.

        Fitted attributes: ``causal_graph_`` (networkx DiGraph, a DAG that respects the
        knowledge), ``feature_names_in_`` (sorted column names), ``n_features_in_``,
        ``fit_seconds_`` (wall time of the search, s).
        """
        data = prepare_table(X, missing="impute" if self.impute else "error",
                             seed=getattr(self, "seed", 0))
        knowledge = self.knowledge if self.knowledge is not None else ExpertKnowledge()
        if not isinstance(knowledge, ExpertKnowledge):
            raise KnowledgeError(f"knowledge must be a bayesrad ExpertKnowledge "
                                 f"(got {type(knowledge).__name__})")
        vector_nodes = getattr(self, "vector_nodes", None) or {}
        nodes = node_names(data.columns, vector_nodes)
        knowledge.check_nodes(nodes)
        start = time.perf_counter()
        edges = self._search(data, knowledge, nodes)
        self.causal_graph_ = enforce_knowledge(edges, knowledge, nodes)
        self.fit_seconds_ = time.perf_counter() - start
        self.nodes_ = nodes
        self.feature_names_in_ = np.asarray(data.columns, dtype=object)
        self.n_features_in_ = data.shape[1]
        return self


# Scores by name: bayesrad's numpy classes carry pgmpy's values (bayesrad.graph.scores);
# the "-pgmpy" names select pgmpy's own implementations (slow; for checks).
_NUMPY_SCORES = {"bic-g": "GaussianBIC", "bic-d": "DiscreteBIC", "bic-cg": "ConditionalGaussianBIC",
                 "bic-glm": "GLMBIC"}


def make_score(name: str, data: pd.DataFrame,
               vector_nodes: Mapping[str, list[str]] | None = None):
    """A structure score object over ``data`` (as ``prepare_table`` returns it) by name.

    ``bic-glm``: the BIC of HybridBN's node families (``bayesrad.graph.scores.GLMBIC``, the
    only score that takes ``vector_nodes``). ``bic-g``, ``bic-d``, ``bic-cg``: bayesrad's
    numpy versions of pgmpy's scores (same values); any other name (``bic-cg-pgmpy`` for
    pgmpy's own ``bic-cg``, ``bdeu``, ``aic-g``, ...) is pgmpy's score.
    """
    from bayesrad.graph import scores

    if name == "bic-glm":
        return scores.GLMBIC(data, vector_nodes=vector_nodes)
    if vector_nodes:
        raise GraphError(f"score {name!r} takes one column per node, but the table has vector "
                         f"nodes {sorted(vector_nodes)}; use score='bic-glm' or build the node "
                         "table with latent_dim=1")
    if name in _NUMPY_SCORES:
        return getattr(scores, _NUMPY_SCORES[name])(data)
    from pgmpy.structure_score import get_scoring_method

    pgmpy_name = name[: -len("-pgmpy")] if name.endswith("-pgmpy") else name
    try:
        return get_scoring_method(pgmpy_name, data)
    except ValueError as exc:
        raise GraphError(f"unknown structure score {name!r}: {exc}; use 'auto', "
                         f"{sorted(_NUMPY_SCORES)} or a pgmpy score name") from exc


class HillClimbLearner(_KnowledgeLearner):
    """Score-based search (hill climbing, tabu walk, random restarts) under expert knowledge.

    The search is ``bayesrad.graph.search.TabuSearch`` (see there why it is not pgmpy's
    ``HillClimbSearch``); the scores are pgmpy's BIC scores, computed in numpy
    (``bayesrad.graph.scores``). Continuous columns are standardised before scoring: BIC
    scores are unit-free except for pgmpy's density floor in ``bic-cg``.

    Parameters
    ----------
    score : ``"auto"`` picks ``bic-glm`` (the BIC of HybridBN's node families, see
        ``bayesrad.graph.scores.GLMBIC``) for mixed data, count columns or vector nodes,
        ``bic-g`` for continuous and ``bic-d`` for discrete data; or any name ``make_score``
        takes (``bic-cg``: pgmpy's conditional-Gaussian BIC).
    vector_nodes : ``{node: [columns]}``: nodes held in several columns (a block summary with
        k components, ``NodeTable.vector_nodes``); a vector child is a multivariate Gaussian
        regression, a vector parent enters with all its columns. Needs ``bic-glm``.
    knowledge : ``ExpertKnowledge`` or ``None``; moves that break it are never considered.
    max_indegree : most parents per node (``None`` = unlimited).
    tabu_length : recent moves that may not be undone.
    max_stall : non-improving steps the tabu walk takes past a local optimum (0 = greedy).
    restarts, perturb : random restarts from the best graph perturbed by ``perturb`` moves.
    epsilon : smallest score gain that counts as an improvement.
    max_steps : most moves per climb.
    seed : seed of tie-breaks, restarts and imputation (the result is a function of data,
        knowledge and seed only).
    impute : draw missing numeric values before the search (stochastic regression
        imputation, ``bayesrad.graph.node_table.impute_numeric``); otherwise they raise.
    """

    def __init__(self, score: str = "auto", knowledge: ExpertKnowledge | None = None,
                 vector_nodes: Mapping[str, list[str]] | None = None,
                 max_indegree: int | None = None, tabu_length: int = 100, max_stall: int = 10,
                 restarts: int = 5, perturb: int = 3, epsilon: float = 1e-4,
                 max_steps: int = 100_000, seed: int = 0, impute: bool = False):
        self.score = score
        self.knowledge = knowledge
        self.vector_nodes = vector_nodes
        self.max_indegree = max_indegree
        self.tabu_length = tabu_length
        self.max_stall = max_stall
        self.restarts = restarts
        self.perturb = perturb
        self.epsilon = epsilon
        self.max_steps = max_steps
        self.seed = seed
        self.impute = impute

    def _search(self, data: pd.DataFrame, knowledge: ExpertKnowledge,
                nodes: list[str]) -> list[tuple[str, str]]:
        from bayesrad.graph.scores import standardise_continuous
        from bayesrad.graph.search import TabuSearch

        vector_nodes = self.vector_nodes or {}
        score = _default_score(data, vector_nodes) if self.score == "auto" else self.score
        self.score_ = score
        allowed = np.array([[u != v and knowledge.allows(u, v) for v in nodes] for u in nodes])
        required = np.zeros_like(allowed)
        index = {name: i for i, name in enumerate(nodes)}
        for u, v in knowledge.required_edges(nodes):
            required[index[u], index[v]] = True
        scoring = make_score(score, standardise_continuous(data), vector_nodes)
        search = TabuSearch(scoring, nodes, allowed,
                            required, max_indegree=self.max_indegree,
                            tabu_length=self.tabu_length, max_stall=self.max_stall,
                            restarts=self.restarts, perturb=self.perturb,
                            epsilon=self.epsilon, max_steps=self.max_steps, seed=self.seed)
        result = search.fit()
        self.score_value_ = result.score
        self.search_ = result
        return search.edges(result)


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
    impute : draw missing numeric values before the tests (as ``HillClimbLearner``).

    Undirected edges of the learned CPDAG are oriented by the knowledge where it decides,
    then by pgmpy's consistent extension (``PDAG.to_dag``).
    """

    def __init__(self, ci_test: str = "auto", significance_level: float = 0.01,
                 max_cond_vars: int = 3, knowledge: ExpertKnowledge | None = None,
                 impute: bool = False):
        self.ci_test = ci_test
        self.significance_level = significance_level
        self.max_cond_vars = max_cond_vars
        self.knowledge = knowledge
        self.impute = impute

    def _search(self, data: pd.DataFrame, knowledge: ExpertKnowledge,
                nodes: list[str]) -> list[tuple[str, str]]:
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
    graph = table.empty_graph()
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


def cpdag(edges: Iterable[tuple[str, str]], nodes: Iterable[str] = ()
          ) -> dict[frozenset, tuple[str, str] | None]:
    """The equivalence class (CPDAG) of a DAG: ``{frozenset({u, v}): (u, v)}`` for an edge
    compelled to point ``u -> v``, ``None`` for a reversible (undirected) one.

    By pgmpy's ``DAG.to_pdag`` (Chickering 2002). Two DAGs with the same skeleton and
    v-structures, which a score-equivalent score (BIC-g, BIC-d) cannot tell apart, have the
    same CPDAG.
    """
    from pgmpy.base import DAG

    dag = DAG()
    dag.add_nodes_from(nodes)
    dag.add_edges_from(edges)
    pdag = dag.to_pdag()
    out: dict[frozenset, tuple[str, str] | None] = {frozenset(e): None
                                                    for e in pdag.undirected_edges}
    out.update({frozenset(e): (str(e[0]), str(e[1])) for e in pdag.directed_edges})
    return out


def compare_graphs(learned, truth) -> dict[str, float]:
    """Structure-recovery metrics of a learned DAG against the true one.

    Parameters
    ----------
    learned, truth : anything with ``.edges`` giving ``(parent, child)`` pairs (a bayesrad
        ``Graph``, a networkx DiGraph) or an iterable of pairs.

    Returns
    -------
    dict with

    - ``shd``: structural Hamming distance between the DAGs (node pairs whose status -
      absent, u->v, v->u - differs; a reversed edge counts 1, as ``pgmpy.metrics.SHD``);
    - ``cpdag_shd``: the same between their CPDAGs (status absent, u->v, v->u, undirected):
      what a score-equivalent score can recover at best is ``cpdag_shd = 0``;
    - ``skeleton_precision``, ``skeleton_recall`` (adjacencies, ignoring direction);
    - ``orientation_accuracy``: among correctly found adjacencies, the fraction pointing as
      in the truth (NaN when none); ``cpdag_orientation_accuracy``: the fraction whose CPDAG
      mark (the compelled direction, or undirected) is the true CPDAG's;
    - ``n_learned``, ``n_true``.
    """
    def pairs(g):
        edges = g.edges if hasattr(g, "edges") else g
        return {(str(u), str(v)) for u, v in edges}

    est, tru = pairs(learned), pairs(truth)
    import networkx as nx

    for label, edges in (("learned", est), ("truth", tru)):
        cycle = None
        try:
            cycle = nx.find_cycle(nx.DiGraph(list(edges)))
        except nx.NetworkXNoCycle:
            pass
        if cycle:
            raise GraphError(f"compare_graphs: the {label} graph has a cycle "
                             f"({' -> '.join(u for u, _ in cycle)} -> {cycle[0][0]}); both graphs must be DAGs")
    skel_est = {frozenset(e) for e in est}
    skel_tru = {frozenset(e) for e in tru}
    shd = sum(((u, v) in est, (v, u) in est) != ((u, v) in tru, (v, u) in tru)
              for u, v in (tuple(sorted(p)) for p in skel_est | skel_tru))
    common = [e for e in est if frozenset(e) in skel_tru]
    nodes = {n for e in est | tru for n in e}
    class_est, class_tru = cpdag(est, nodes), cpdag(tru, nodes)
    cpdag_shd = sum(class_est.get(p, "absent") != class_tru.get(p, "absent")
                    for p in skel_est | skel_tru)
    found = skel_est & skel_tru
    return {
        "shd": int(shd),
        "cpdag_shd": int(cpdag_shd),
        "skeleton_precision": len(found) / len(skel_est) if skel_est else float("nan"),
        "skeleton_recall": len(found) / len(skel_tru) if skel_tru else float("nan"),
        "orientation_accuracy": (sum(e in tru for e in common) / len(common)
                                 if common else float("nan")),
        "cpdag_orientation_accuracy": (sum(class_est[p] == class_tru[p] for p in found)
                                       / len(found) if found else float("nan")),
        "n_learned": len(est),
        "n_true": len(tru),
    }


def learn_structure(table: NodeTable | pd.DataFrame,
                    knowledge: ExpertKnowledge | None = None,
                    method: str = "hill_climb", bootstrap: int = 0,
                    threshold: float | str = "scutari", n_jobs: int = 1, client=None,
                    seed: int = 0, progress: bool = False, **params) -> Graph:
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
    progress : report bootstrap resamples as they finish (``bayesrad.progress``).
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
    if table.vector_nodes:
        if method not in ("hill_climb", "hc", "hillclimb"):
            raise GraphError(f"method {method!r} needs one column per node, but the node table "
                             f"summarises blocks {sorted(table.vector_nodes)} by several "
                             "components; build it with build_node_table(..., latent_dim=1)")
        params = dict(params, vector_nodes=table.vector_nodes)
    if table.data.isna().any().any():
        params.setdefault("impute", True)      # build_node_table(missing="impute") left NaN
    learner = make_learner(method, knowledge=full, **params)
    if not bootstrap:
        graph = dag_to_graph(learner.fit(table.data).causal_graph_, table)
    else:
        boot = BootstrapLearner(learner, n_bootstrap=int(bootstrap), seed=seed, n_jobs=n_jobs,
                                client=client, threshold=threshold,
                                progress=progress).fit(table.data)
        graph = dag_to_graph(boot.causal_graph_, table, boot.result_.confidence())
        graph.bootstrap_ = boot.result_
    graph.knowledge = knowledge
    return graph


__all__ = ["HillClimbLearner", "PCLearner", "GLMResidualiser", "learn_structure",
           "enforce_knowledge", "prepare_table", "make_learner", "make_score", "node_names",
           "compare_graphs", "cpdag", "edge_table", "kind_constraints", "dag_to_graph", "METHODS"]
