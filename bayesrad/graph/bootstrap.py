"""Bootstrap edge confidence and averaged networks (Friedman et al. 1999; Scutari & Nagarajan 2013).

``bootstrap_structure`` refits a structure learner on B resamples of the rows (drawn with
replacement) and counts, for every ordered pair of nodes, how often the edge appears. As in
bnlearn's ``boot.strength``:

- **strength** (edge probability) of a pair = fraction of resamples with an edge between the
  two nodes in either direction;
- **direction** of ``u -> v`` = fraction of those resamples where it points ``u -> v``.

``BootstrapResult.averaged_dag`` keeps the edges whose strength exceeds a threshold and whose
direction is >= 0.5, as bnlearn's ``averaged.network``; the default threshold is Scutari's: the
quantile of the strengths at the level ``p`` minimising the L1 distance between their empirical
CDF and the ideal CDF of a perfectly confident bootstrap (all strengths 0 or 1). Candidate
edges enter in decreasing strength; one that would close a cycle or break the expert knowledge
is skipped, and required edges always enter.

Resamples run in worker processes (``n_jobs``) or on a Dask cluster (``client=`` a
``distributed.Client`` or a scheduler address). Resample indices are drawn in the caller from
``seed``, so the result does not depend on the number of workers or where they run.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone

from bayesrad.errors import GraphError
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.graph.preparation import enforce_knowledge, node_names, prepare_table


def scutari_threshold(strengths: np.ndarray) -> float:
    """Scutari & Nagarajan's (2013) significance threshold for bootstrap edge strengths.

    Minimises, over ``p`` in [0, 1], the L1 distance between the empirical CDF ``F`` of the
    strengths and the step CDF that is ``p`` on [0, 1) (the ideal: a fraction ``p`` of pairs
    with strength 0, the rest with strength 1), then returns the type-1 quantile of the
    strengths at that ``p`` (the formula of bnlearn's ``threshold()``, solved exactly: the
    objective is piecewise linear in ``p``, so a minimum is at one of the CDF's values).

    Parameters
    ----------
    strengths : (m,) edge strengths in [0, 1], one per node pair (both orders allowed).

    Returns
    -------
    threshold : edges with strength strictly above it are significant.
    """
    strengths = np.asarray(strengths, dtype=float)
    if strengths.size == 0:
        return 0.0
    if np.any((strengths < 0) | (strengths > 1)) or np.any(~np.isfinite(strengths)):
        raise GraphError("edge strengths must be probabilities in [0, 1]")
    knots = np.unique(strengths)
    grid = np.unique(np.concatenate([[0.0], knots, [1.0]]))
    widths = np.diff(grid)
    left = np.unique(np.concatenate([[0.0], knots[knots < 1]]))
    ecdf_left = np.searchsorted(np.sort(strengths), left, side="right") / strengths.size

    def l1(p: float) -> float:
        return float(np.sum(widths * np.abs(ecdf_left - p)))

    candidates = np.unique(np.concatenate([[0.0, 1.0], ecdf_left]))
    values = np.array([l1(p) for p in candidates])
    best = candidates[np.isclose(values, values.min(), rtol=0, atol=1e-12)]
    # A flat stretch of minima between two CDF values: take its middle, where a continuous
    # optimiser such as R's optimize() lands.
    p0 = 0.5 * (best.min() + best.max())
    return float(np.quantile(strengths, p0, method="inverted_cdf"))


@dataclass
class BootstrapResult:
    """Edge counts of B bootstrap structure fits.

    Attributes
    ----------
    nodes : sorted node names.
    counts : (n, n) int array, ``counts[i, j]`` = resamples with the edge ``nodes[i] ->
        nodes[j]``.
    n_bootstrap : B.
    knowledge : the expert knowledge the learner respected (averaging keeps to it).
    edge_lists : the learned edges of every resample, in resample order.
    """

    nodes: list[str]
    counts: np.ndarray
    n_bootstrap: int
    knowledge: ExpertKnowledge | None
    edge_lists: list[list[tuple[str, str]]]

    def strength(self) -> pd.DataFrame:
        """bnlearn-style arc strengths: one row per ordered pair ``(from, to)``.

        Columns ``from``, ``to``, ``strength`` (P(edge between them, either direction)),
        ``direction`` (P(from -> to | edge); 0 where no resample has the edge).
        """
        either = self.counts + self.counts.T
        rows = []
        for i, u in enumerate(self.nodes):
            for j, v in enumerate(self.nodes):
                if i == j:
                    continue
                both = either[i, j]
                rows.append((u, v, both / self.n_bootstrap,
                             self.counts[i, j] / both if both else 0.0))
        return pd.DataFrame(rows, columns=["from", "to", "strength", "direction"])

    def edge_probability(self) -> pd.DataFrame:
        """(n, n) DataFrame of P(``row -> column``) over the resamples (directed frequency)."""
        return pd.DataFrame(self.counts / self.n_bootstrap, index=self.nodes, columns=self.nodes)

    def confidence(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(u, v): {"probability": strength, "direction": direction}}`` for every ordered
        pair seen at least once (the form ``Graph.add_edge(confidence=...)`` takes)."""
        table = self.strength()
        table = table[table["strength"] > 0]
        return {(r["from"], r["to"]): {"probability": float(r["strength"]),
                                       "direction": float(r["direction"])}
                for _, r in table.iterrows()}

    def threshold(self, method: float | str = "scutari") -> float:
        """The strength threshold: Scutari's (``"scutari"``) or the given number."""
        if isinstance(method, str):
            if method != "scutari":
                raise GraphError(f"threshold must be 'scutari' or a number in [0, 1] "
                                 f"(got {method!r})")
            # One strength per unordered pair (bnlearn lists each pair twice; the ECDF is
            # the same either way).
            iu = np.triu_indices(len(self.nodes), k=1)
            return scutari_threshold(((self.counts + self.counts.T) / self.n_bootstrap)[iu])
        value = float(method)
        if not 0.0 <= value <= 1.0:
            raise GraphError(f"threshold must be in [0, 1] (got {value})")
        return value

    def averaged_dag(self, threshold: float | str = "scutari") -> nx.DiGraph:
        """The averaged network: edges with strength > threshold and direction >= 0.5.

        Candidates enter in decreasing strength (then direction, then name); an edge that
        closes a cycle or breaks the knowledge is skipped (bnlearn's "smart" averaging).
        A pair with direction exactly 0.5 keeps whichever direction enters first.
        """
        cut = self.threshold(threshold)
        table = self.strength()
        chosen = table[(table["strength"] > cut) & (table["direction"] >= 0.5)]
        chosen = chosen.sort_values(["strength", "direction", "from", "to"],
                                    ascending=[False, False, True, True])
        dag = enforce_knowledge(zip(chosen["from"], chosen["to"]), self.knowledge, self.nodes)
        dag.graph["threshold"] = cut
        return dag


# Per-process state of pool workers: the data and learner are sent once, not per task.
_WORKER: dict = {}


def _init_worker(data: pd.DataFrame, learner) -> None:
    _WORKER["data"] = data
    _WORKER["learner"] = learner


def _fit_rows(data: pd.DataFrame, learner, rows: np.ndarray) -> list[tuple[str, str]]:
    sample = data.iloc[rows].reset_index(drop=True)
    fitted = clone(learner).fit(sample)
    return sorted(fitted.causal_graph_.edges())


def _fit_in_worker(rows: np.ndarray) -> list[tuple[str, str]]:
    return _fit_rows(_WORKER["data"], _WORKER["learner"], rows)


def _draw_rows(data: pd.DataFrame, n_bootstrap: int, seed: int) -> list[np.ndarray]:
    """Row indices of each resample; a resample in which a column came out constant (a rare
    level lost) is redrawn, since no structure score can use a constant column."""
    n = len(data)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_bootstrap)]
    values = [pd.factorize(data[c])[0] if isinstance(data[c].dtype, pd.CategoricalDtype)
              else data[c].to_numpy() for c in data.columns]
    draws = []
    for b, rng in enumerate(rngs):
        for _ in range(20):
            rows = rng.integers(0, n, size=n)
            if all(np.unique(v[rows]).size > 1 for v in values):
                break
        else:
            raise GraphError(f"bootstrap resample {b}: some column stays constant in 20 draws; "
                             "a level is too rare to bootstrap, merge or drop it")
        draws.append(rows)
    return draws


def bootstrap_structure(data: pd.DataFrame, learner, n_bootstrap: int = 100, seed: int = 0,
                        n_jobs: int = 1, client=None, progress: bool = False) -> BootstrapResult:
    """Fit ``learner`` on ``n_bootstrap`` resamples of ``data`` and count the edges.

    Parameters
    ----------
    data : patients x nodes table (as for ``learner.fit``).
    learner : an unfitted structure learner (``HillClimbLearner``, ``PCLearner``); it is
        cloned for every resample.
    n_bootstrap : B, number of resamples (rows drawn with replacement, same size as data).
    seed : seed of the resample indices (drawn here, so results do not depend on workers).
    n_jobs : worker processes (1 = in this process; -1 = all CPUs).
    client : a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``); when
        given, resamples run on that Dask cluster and ``n_jobs`` is ignored.
    progress : report resamples as they finish (a bar on a terminal, lines in a log).

    Returns
    -------
    BootstrapResult
    """
    if int(n_bootstrap) < 1:
        raise GraphError(f"n_bootstrap must be >= 1 (got {n_bootstrap})")
    # Missing numeric values stay missing here: each resample is imputed by its own fit.
    data = prepare_table(data, missing="keep" if getattr(learner, "impute", False) else "error")
    draws = _draw_rows(data, int(n_bootstrap), seed)
    if client is not None:
        edge_lists = _run_dask(data, learner, draws, client)
    else:
        workers = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
        if workers < 1:
            raise GraphError(f"n_jobs must be >= 1 or -1 (got {n_jobs})")
        if progress:
            from bayesrad.progress import progress_iter

            track = lambda items: progress_iter(items, total=len(draws), desc="structure bootstrap",  # noqa: E731
                                                unit="resamples")
        else:
            track = iter
        if workers == 1:
            edge_lists = [_fit_rows(data, learner, rows) for rows in track(draws)]
        else:
            # fork keeps start-up cheap (no re-import of pgmpy/torch per worker); results do
            # not depend on the start method because the search is hash-order independent.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(max_workers=workers,
                                     mp_context=multiprocessing.get_context(method),
                                     initializer=_init_worker,
                                     initargs=(data, learner)) as pool:
                edge_lists = list(track(pool.map(_fit_in_worker, draws,
                                                 chunksize=max(1, len(draws) // (4 * workers)))))
    nodes = node_names(data.columns, getattr(learner, "vector_nodes", None))
    index = {name: i for i, name in enumerate(nodes)}
    counts = np.zeros((len(nodes), len(nodes)), dtype=int)
    for edges in edge_lists:
        for u, v in edges:
            counts[index[u], index[v]] += 1
    return BootstrapResult(nodes=nodes, counts=counts, n_bootstrap=int(n_bootstrap),
                           knowledge=getattr(learner, "knowledge", None),
                           edge_lists=[list(e) for e in edge_lists])


class BootstrapLearner(BaseEstimator):
    """Any structure learner, refitted on bootstrap resamples (as pgmpy's bootstrap wraps a
    learner): adds edge probabilities and the averaged DAG.

    Parameters
    ----------
    learner : an unfitted structure learner (``HillClimbLearner``, ``PCLearner``); cloned
        for every resample.
    n_bootstrap, seed, n_jobs, client : as for ``bootstrap_structure``.
    threshold : ``"scutari"`` or a strength in [0, 1] for the averaged DAG.
    progress : report resamples as they finish (``bayesrad.progress``).

    Attributes (after ``fit``)
    --------------------------
    result_ : the ``BootstrapResult`` (counts, edge lists, strengths).
    edge_prob_ : (n, n) DataFrame, P(``row -> column``) over the resamples.
    causal_graph_ : the averaged DAG (networkx), as the wrapped learner's attribute.
    threshold_ : the strength threshold used.
    nodes_, feature_names_in_, n_features_in_ : as the wrapped learner's.
    """

    def __init__(self, learner, n_bootstrap: int = 100, seed: int = 0, n_jobs: int = 1,
                 client=None, threshold: float | str = "scutari", progress: bool = False):
        self.learner = learner
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.n_jobs = n_jobs
        self.client = client
        self.threshold = threshold
        self.progress = progress

    def fit(self, X: pd.DataFrame, y=None) -> "BootstrapLearner":
        """Fit the learner on ``n_bootstrap`` resamples of ``X``; returns ``self``."""
        result = bootstrap_structure(X, self.learner, n_bootstrap=self.n_bootstrap,
                                     seed=self.seed, n_jobs=self.n_jobs, client=self.client,
                                     progress=self.progress)
        self.result_ = result
        self.edge_prob_ = result.edge_probability()
        self.causal_graph_ = result.averaged_dag(self.threshold)
        self.threshold_ = float(self.causal_graph_.graph["threshold"])
        self.nodes_ = list(result.nodes)
        columns = sorted(map(str, X.columns))
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)
        return self


def _run_dask(data: pd.DataFrame, learner, draws: list[np.ndarray], client):
    """Run the resamples on a Dask cluster; the data is scattered to every worker once."""
    from distributed import Client

    own = isinstance(client, str)
    if own:
        client = Client(client)
    elif not isinstance(client, Client):
        raise GraphError(f"client must be a distributed.Client or a scheduler address "
                         f"(got {type(client).__name__})")
    try:
        data_future = client.scatter(data, broadcast=True)
        futures = [client.submit(_fit_rows, data_future, learner, rows, pure=False)
                   for rows in draws]
        return client.gather(futures)
    finally:
        if own:
            client.close()


__all__ = ["BootstrapResult", "bootstrap_structure", "scutari_threshold"]
