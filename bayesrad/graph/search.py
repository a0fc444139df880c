"""Score-based DAG search: greedy hill climbing with a tabu walk and random restarts.

Written here rather than taken from pgmpy because pgmpy's ``HillClimbSearch`` (1) rescores
every candidate move at every step, (2) breaks ties between equal-score moves by the
iteration order of a Python ``set`` (so its graph changes with ``PYTHONHASHSEED``), and
(3) stops at the first local optimum. bnlearn's ``hc``/``tabu`` do the search below, but in R.
The moves and their legality are the textbook ones (Koller & Friedman 2009, 18.4.3; pgmpy's
``_legal_operations_dag``): add, delete or reverse one edge, keeping the graph acyclic, the
in-degree bounded and the expert knowledge (``allowed`` / ``required``) intact.

What differs from pgmpy:

- **Score deltas are cached** per child: a move changes the parents of one node (two for a
  reversal), so only those columns of the delta tables are rescored. Acyclicity is checked on
  a reachability matrix. This makes a step cost O(n) local scores instead of O(n^2).
- **Tabu walk** (bnlearn's ``tabu``, Russell & Norvig's tabu search): at a local optimum the
  best non-tabu move is taken even when it does not improve the score (e.g. reversing a
  covered edge, which moves within the equivalence class), up to ``max_stall`` steps without
  a new best score; the best graph seen is returned. Recent moves cannot be undone (a tabu
  list of length ``tabu_length``).
- **Random restarts** (bnlearn's ``restart``/``perturb``): the best graph is perturbed by
  ``perturb`` random legal moves and climbed again, ``restarts`` times; the best-scoring graph
  wins (the earlier one on equal scores).
- **Ties** (moves whose score gains agree to 1e-9 relative, e.g. ``a -> b`` against
  ``b -> a`` under a score-equivalent score) are broken by a fixed pseudo-random priority
  drawn from ``seed``, not by name, so no alphabetical direction bias enters; restarts then
  explore other members of the tie.

Nodes are indexed in sorted-name order, so the result depends only on the data, the knowledge
and ``seed``: not on column order or the hash seed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

_ADD, _DELETE, _REVERSE = 0, 1, 2
_TIE_RTOL = 1e-9


@dataclass
class SearchResult:
    """The best DAG a search found.

    Attributes
    ----------
    adjacency : (n, n) bool, ``adjacency[i, j]`` = edge ``nodes[i] -> nodes[j]``.
    score : its total score (sum of local scores).
    n_steps : moves applied over all climbs.
    n_local_scores : local scores looked up (the score object caches repeats).
    restart_scores : best score after the first climb and after each restart.
    """

    adjacency: np.ndarray
    score: float
    n_steps: int
    n_local_scores: int
    restart_scores: list[float]


def reachability(adjacency: np.ndarray) -> np.ndarray:
    """Reflexive transitive closure: ``R[i, j]`` = a directed path ``i -> ... -> j`` exists
    (``R[i, i]`` is True). By repeated squaring, O(n^3 log n) in numpy."""
    n = adjacency.shape[0]
    closure = adjacency.astype(np.int64) | np.eye(n, dtype=np.int64)
    while True:
        nxt = ((closure @ closure) > 0).astype(np.int64)
        if np.array_equal(nxt, closure):
            return closure.astype(bool)
        closure = nxt


class TabuSearch:
    """Hill climbing + tabu walk + restarts over DAGs on ``nodes`` (see the module docstring).

    Parameters
    ----------
    score : object with ``local_score(node, parents_tuple) -> float`` (a decomposable score
        such as ``bayesrad.graph.scores.ConditionalGaussianBIC``; larger is better).
    nodes : node names (sorted here).
    allowed : (n, n) bool in sorted-name order; ``allowed[i, j]`` = edge ``i -> j`` may exist.
    required : (n, n) bool; required edges (they start in the graph and never leave it).
    max_indegree : most parents per node (``None`` = unlimited).
    tabu_length : recent moves that may not be undone.
    max_stall : non-improving steps of the tabu walk before a climb stops (0 = plain greedy).
    restarts, perturb : random restarts, and random moves per restart.
    epsilon : smallest gain that counts as an improvement.
    max_steps : most moves per climb.
    seed : seed of the tie-break priorities and the restarts' perturbations.
    """

    def __init__(self, score, nodes, allowed: np.ndarray, required: np.ndarray,
                 max_indegree: int | None = None, tabu_length: int = 100, max_stall: int = 10,
                 restarts: int = 0, perturb: int = 3, epsilon: float = 1e-4,
                 max_steps: int = 100_000, seed: int = 0):
        self.nodes = sorted(map(str, nodes))
        n = len(self.nodes)
        self.score = score
        self.allowed = np.asarray(allowed, dtype=bool) & ~np.eye(n, dtype=bool)
        self.required = np.asarray(required, dtype=bool)
        self.allowed |= self.required
        self.max_indegree = n if max_indegree is None else int(max_indegree)
        self.tabu_length = int(tabu_length)
        self.max_stall = int(max_stall)
        self.restarts = int(restarts)
        self.perturb = int(perturb)
        self.epsilon = float(epsilon)
        self.max_steps = int(max_steps)
        rng = np.random.default_rng(seed)
        # One fixed priority per move: the tie-break, the same at every step.
        self._priority = rng.permutation(3 * n * n).reshape(3, n, n).astype(float)
        self._rng = rng
        self._computed = 0
        self._steps = 0

    # ------------------------------------------------------------------ scores
    def _local(self, child: int, parents) -> float:
        self._computed += 1
        return self.score.local_score(self.nodes[child],
                                      tuple(self.nodes[p] for p in sorted(parents)))

    def _refresh(self, j: int, adjacency: np.ndarray, local: np.ndarray,
                 add: np.ndarray, delete: np.ndarray) -> None:
        """Rescore node ``j`` and the add/delete gains of every edge into it."""
        parents = set(np.flatnonzero(adjacency[:, j]).tolist())
        local[j] = self._local(j, parents)
        add[:, j] = -np.inf
        delete[:, j] = -np.inf
        if len(parents) < self.max_indegree:
            for i in np.flatnonzero(self.allowed[:, j]):
                if i not in parents:
                    add[i, j] = self._local(j, parents | {int(i)}) - local[j]
        for i in parents:
            delete[i, j] = self._local(j, parents - {i}) - local[j]

    # ------------------------------------------------------------------ moves
    def _legal_gains(self, adjacency, add, delete, tabu) -> np.ndarray:
        """(3, n, n) gains of add / delete / reverse ``i -> j``; ``-inf`` where illegal."""
        reach = reachability(adjacency)
        indegree = adjacency.sum(axis=0)
        room = indegree < self.max_indegree
        gains = np.full((3,) + adjacency.shape, -np.inf)
        ok_add = (self.allowed & ~adjacency & ~adjacency.T & ~reach.T & room[None, :])
        gains[_ADD] = np.where(ok_add, add, -np.inf)
        ok_delete = adjacency & ~self.required
        gains[_DELETE] = np.where(ok_delete, delete, -np.inf)
        # Reversing i -> j closes a cycle iff another path i -> ... -> j exists, i.e. a child
        # w != j of i reaches j: (A @ R)[i, j] counts the children of i that reach j (j too).
        paths = adjacency.astype(np.int64) @ reach.astype(np.int64)
        ok_reverse = ok_delete & self.allowed.T & (paths == 1) & room[:, None]
        gains[_REVERSE] = np.where(ok_reverse, add.T + delete, -np.inf)
        for kind, i, j in tabu:
            gains[kind, i, j] = -np.inf
        return gains

    def _best_move(self, gains: np.ndarray):
        best = gains.max()
        if not np.isfinite(best):
            return None, best
        ties = gains >= best - _TIE_RTOL * max(1.0, abs(best))
        flat = np.flatnonzero(ties.ravel())
        choice = flat[np.argmax(self._priority.ravel()[flat])]
        return np.unravel_index(choice, gains.shape), best

    @staticmethod
    def _apply(adjacency: np.ndarray, kind: int, i: int, j: int) -> list[int]:
        """Apply a move in place; returns the nodes whose parents changed."""
        if kind == _ADD:
            adjacency[i, j] = True
            return [j]
        adjacency[i, j] = False
        if kind == _DELETE:
            return [j]
        adjacency[j, i] = True
        return [i, j]

    @staticmethod
    def _undo_of(kind: int, i: int, j: int) -> list[tuple[int, int, int]]:
        if kind == _ADD:
            return [(_DELETE, i, j)]
        if kind == _DELETE:
            return [(_ADD, i, j)]
        return [(_REVERSE, j, i), (_REVERSE, i, j)]

    # ------------------------------------------------------------------ search
    def _climb(self, adjacency: np.ndarray) -> tuple[np.ndarray, float]:
        n = len(self.nodes)
        adjacency = adjacency.copy()
        local = np.zeros(n)
        add = np.full((n, n), -np.inf)
        delete = np.full((n, n), -np.inf)
        for j in range(n):
            self._refresh(j, adjacency, local, add, delete)
        best_adjacency, best_score = adjacency.copy(), float(local.sum())
        tabu: deque = deque(maxlen=max(self.tabu_length, 1))
        stall = 0
        for _ in range(self.max_steps):
            move, gain = self._best_move(self._legal_gains(adjacency, add, delete,
                                                           list(tabu) if self.tabu_length else []))
            if move is None or (gain < self.epsilon and stall >= self.max_stall):
                break
            kind, i, j = (int(m) for m in move)
            for changed in self._apply(adjacency, kind, i, j):
                self._refresh(changed, adjacency, local, add, delete)
            tabu.extend(self._undo_of(kind, i, j))
            self._steps += 1
            total = float(local.sum())
            if total > best_score + self.epsilon:
                best_adjacency, best_score, stall = adjacency.copy(), total, 0
            else:
                stall += 1
        return best_adjacency, best_score

    def _perturbed(self, adjacency: np.ndarray) -> np.ndarray:
        """``perturb`` random legal moves (any gain) from ``adjacency``."""
        adjacency = adjacency.copy()
        n = len(self.nodes)
        zero = np.zeros((n, n))
        for _ in range(self.perturb):
            legal = np.isfinite(self._legal_gains(adjacency, zero, zero, []))
            moves = np.argwhere(legal)
            if not len(moves):
                break
            kind, i, j = moves[self._rng.integers(len(moves))]
            self._apply(adjacency, int(kind), int(i), int(j))
        return adjacency

    def fit(self) -> SearchResult:
        """Run the search from the graph of the required edges."""
        start = self.required.copy()
        best_adjacency, best_score = self._climb(start)
        history = [best_score]
        for _ in range(self.restarts):
            candidate, score = self._climb(self._perturbed(best_adjacency))
            if score > best_score + self.epsilon:
                best_adjacency, best_score = candidate, score
            history.append(score)
        return SearchResult(adjacency=best_adjacency, score=best_score, n_steps=self._steps,
                            n_local_scores=self._computed, restart_scores=history)

    def edges(self, result: SearchResult) -> list[tuple[str, str]]:
        """The result's edges as sorted ``(parent, child)`` name pairs."""
        return sorted((self.nodes[i], self.nodes[j]) for i, j in np.argwhere(result.adjacency))


__all__ = ["TabuSearch", "SearchResult", "reachability"]
