"""Expert knowledge for structure learning: tiers, forbidden and required edges, outcome parents.

Clinicians trust a learned network when it respects what they know. ``ExpertKnowledge`` holds
that knowledge as one object that every structure learner takes:

- ``tiers``: an ordered mapping ``{tier name: [nodes]}`` (e.g. demographics -> clinical ->
  dose -> imaging and genes -> outcome). An edge may only point forward in the order, or stay
  within a tier when that tier allows it (``within_tier``). Nodes in no tier are not restricted
  by the order.
- ``forbidden`` / ``required``: directed edges that must be absent / present.
- ``outcomes`` and ``outcome_parent_tiers``: edges into an outcome node come only from nodes of
  the named tiers.

Contradictions (a required edge against the tier order, a required edge that is also forbidden,
required edges forming a cycle, a node in two tiers) are refused on construction with a
``KnowledgeError`` that names the edge or node. The object is read from and written to YAML.
"""

from __future__ import annotations

import warnings

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from bayesrad.graph._yaml import dump_yaml, load_yaml
from bayesrad.errors import KnowledgeError

KNOWLEDGE_FORMAT = "bayesrad-knowledge/1"

# Block names mapped to the default causal tier they belong to (earliest first). A node table
# built from a cohort carries each node's block, so tiers follow from the blocks alone.
# Baseline imaging and expression describe the tumour at diagnosis, before treatment is
# planned on them, so they share the disease tier with the clinical block; put post-treatment
# imaging in a later tier with ``block_tiers=``/``node_tiers=``.
DEFAULT_BLOCK_TIERS: dict[str, tuple[str, ...]] = {
    "demographics": ("demographics", "demography"),
    "disease": ("clinical", "pathology", "tumour", "tumor", "staging", "radiomics", "deep",
                "imaging", "kinetics", "genes", "expression", "gene_modules"),
    "treatment": ("treatment", "dosimetry", "dose", "dvh", "therapy"),
    "outcome": ("outcome", "outcomes", "response", "survival"),
}

def packaged_tiers(name: str) -> dict:
    """Tiers shipped with the package (``bayesrad/graph/tiers/<name>.yaml``, read with
    importlib.resources so that it works from a wheel): ``{"block_tiers": {tier: (blocks,)},
    "node_tiers": {node: tier}}``, the keyword arguments of :meth:`ExpertKnowledge.from_blocks`."""
    from importlib import resources

    import yaml

    resource = resources.files("bayesrad.graph") / "tiers" / f"{name}.yaml"
    if not resource.is_file():
        shipped = sorted(p.name[:-5] for p in (resources.files("bayesrad.graph") / "tiers").iterdir()
                         if p.name.endswith(".yaml"))
        raise KnowledgeError(f"no packaged tiers {name!r}; the package ships {shipped}")
    meta = yaml.safe_load(resource.read_text())
    return {"block_tiers": {tier: tuple(blocks or ()) for tier, blocks in meta["block_tiers"].items()},
            "node_tiers": dict(meta.get("node_tiers") or {})}


def _edge(pair: Any, what: str) -> tuple[str, str]:
    if isinstance(pair, Mapping):
        if "from" not in pair or "to" not in pair:
            raise KnowledgeError(f"a {what} edge needs 'from' and 'to' (got {dict(pair)!r})")
        pair = (pair["from"], pair["to"])
    if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise KnowledgeError(f"a {what} edge is a (parent, child) pair (got {pair!r})")
    u, v = str(pair[0]), str(pair[1])
    if u == v:
        raise KnowledgeError(f"{what} edge {u!r} -> {v!r} is a self-loop; remove it")
    return u, v


class ExpertKnowledge:
    """What an expert knows about the structure, as constraints no learner may violate.

    Parameters
    ----------
    tiers : ordered ``{tier name: [node, ...]}`` or a list of node lists (named ``tier0``,
        ``tier1``, ...). Edges go from an earlier tier to a later one, never backwards.
    forbidden : ``(parent, child)`` edges that must not be in the graph.
    required : ``(parent, child)`` edges that must be in the graph.
    within_tier : ``True`` (edges between nodes of the same tier allowed, the default),
        ``False`` (no tier allows them) or the names of the tiers that allow them.
    outcomes : outcome node names.
    outcome_parent_tiers : names of the tiers whose nodes may be parents of an outcome
        (``None``: any node the tiers allow). Nodes in no tier count as not allowed.

    Raises
    ------
    KnowledgeError
        On contradictions: a node in two tiers, a required edge that is also forbidden, points
        backwards in the tiers, stays within a tier that forbids it, enters an outcome from a
        tier not allowed, or required edges forming a cycle.
    """

    def __init__(
        self,
        tiers: Mapping[str, Iterable[str]] | Sequence[Iterable[str]] | None = None,
        forbidden: Iterable[Any] = (),
        required: Iterable[Any] = (),
        within_tier: bool | Iterable[str] = True,
        outcomes: Iterable[str] = (),
        outcome_parent_tiers: Iterable[str] | None = None,
    ):
        if tiers is None:
            tiers = {}
        if not isinstance(tiers, Mapping):
            tiers = {f"tier{i}": list(nodes) for i, nodes in enumerate(tiers)}
        self.tiers: dict[str, list[str]] = {}
        self._tier_index: dict[str, int] = {}
        for index, (name, nodes) in enumerate(tiers.items()):
            if isinstance(nodes, str):
                raise KnowledgeError(f"tier {name!r} must list nodes, not the string {nodes!r}")
            self.tiers[str(name)] = [str(n) for n in nodes]
            for node in self.tiers[str(name)]:
                if node in self._tier_index:
                    other = list(self.tiers)[self._tier_index[node]]
                    raise KnowledgeError(
                        f"node {node!r} is in tier {other!r} and in tier {name!r}; "
                        "put it in one tier only"
                    )
                self._tier_index[node] = index
        self.forbidden: list[tuple[str, str]] = sorted({_edge(e, "forbidden") for e in forbidden})
        self.required: list[tuple[str, str]] = sorted({_edge(e, "required") for e in required})
        if isinstance(within_tier, bool):
            self.within_tier: bool | list[str] = within_tier
        else:
            self.within_tier = [str(t) for t in within_tier]
            self._check_tier_names(self.within_tier, "within_tier")
        self.outcomes: list[str] = [str(o) for o in outcomes]
        self.outcome_parent_tiers = (None if outcome_parent_tiers is None
                                     else [str(t) for t in outcome_parent_tiers])
        if self.outcome_parent_tiers is not None:
            self._check_tier_names(self.outcome_parent_tiers, "outcome_parent_tiers")
        # Sets for the O(1) look-ups a search over all node pairs makes.
        self._forbidden_set = set(self.forbidden)
        self._outcome_set = set(self.outcomes)
        self._check_consistent()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_blocks(cls, node_blocks: Mapping[str, str | None],
                    block_tiers: Mapping[str, Iterable[str]] | None = None,
                    outcome_tier: str | None = "outcome",
                    node_tiers: Mapping[str, str] | None = None, **kwargs) -> "ExpertKnowledge":
        """Tiers from the cohort block of every node.

        Parameters
        ----------
        node_blocks : ``{node: block name}`` (e.g. ``NodeTable.blocks``).
        block_tiers : ordered ``{tier name: [block names]}``; default ``DEFAULT_BLOCK_TIERS``
            (demographics -> disease: clinical, baseline imaging and genes -> treatment/dose ->
            outcome). A node whose block is in no tier (e.g. organ uptake) is left unordered
            among the other tiers but placed before the outcomes: edges from an outcome into
            it are forbidden, and a warning names the untiered blocks.
        outcome_tier : the tier whose nodes are the outcomes (``None``: no outcomes).
        node_tiers : ``{node: tier name}`` overrides for single nodes (e.g. age and sex of
            the clinical block into ``"demographics"``); a new tier name raises.
        kwargs : ``forbidden``, ``required``, ``within_tier``, ``outcome_parent_tiers``.
        """
        block_tiers = dict(DEFAULT_BLOCK_TIERS if block_tiers is None else block_tiers)
        tier_of_block = {}
        for tier, blocks in block_tiers.items():
            for block in blocks:
                tier_of_block[str(block)] = tier
        tiers: dict[str, list[str]] = {tier: [] for tier in block_tiers}
        node_tiers = dict(node_tiers or {})
        unknown = sorted({t for t in node_tiers.values() if t not in block_tiers})
        if unknown:
            raise KnowledgeError(f"node_tiers names unknown tiers {unknown}; "
                                 f"tiers are {list(block_tiers)}")
        absent = sorted(set(node_tiers) - set(node_blocks))
        if absent:
            raise KnowledgeError(f"node_tiers names nodes {absent} that are not in node_blocks")
        untiered: dict[str, list[str]] = {}
        for node, block in node_blocks.items():
            tier = tier_of_block.get(str(block)) if block is not None else None
            tier = node_tiers.get(node, tier)
            if tier is not None:
                tiers[tier].append(str(node))
            elif block is not None:
                untiered.setdefault(str(block), []).append(str(node))
        tiers = {name: sorted(nodes) for name, nodes in tiers.items() if nodes}
        outcomes = tiers.get(outcome_tier, []) if outcome_tier else []
        if untiered and outcomes:
            # An outcome cannot cause a baseline measurement: without this a search learns
            # e.g. response -> liver uptake (issue 18).
            kwargs["forbidden"] = list(kwargs.get("forbidden", ())) + [
                (outcome, node) for outcome in outcomes for nodes in untiered.values() for node in nodes]
            warnings.warn(f"blocks {sorted(untiered)} are in no tier ({list(block_tiers)}); their nodes "
                          f"are placed before the outcomes only -- give block_tiers a place for them",
                          UserWarning, stacklevel=2)
        return cls(tiers=tiers, outcomes=outcomes, **kwargs)

    def merged(self, forbidden: Iterable[Any] = (), required: Iterable[Any] = ()
               ) -> "ExpertKnowledge":
        """A copy with more forbidden / required edges (contradictions raise)."""
        return ExpertKnowledge(
            tiers=self.tiers, forbidden=list(self.forbidden) + list(forbidden),
            required=list(self.required) + list(required), within_tier=self.within_tier,
            outcomes=self.outcomes, outcome_parent_tiers=self.outcome_parent_tiers)

    # ------------------------------------------------------------------ queries
    def tier_of(self, node: str) -> str | None:
        """The tier name of ``node`` (``None`` when it is in no tier)."""
        index = self._tier_index.get(node)
        return None if index is None else list(self.tiers)[index]

    def reason_forbidden(self, u: str, v: str) -> str | None:
        """Why the edge ``u -> v`` is not allowed, or ``None`` when it is allowed."""
        if (u, v) in self._forbidden_set:
            return f"edge {u!r} -> {v!r} is listed as forbidden"
        tu, tv = self._tier_index.get(u), self._tier_index.get(v)
        if tu is not None and tv is not None:
            names = list(self.tiers)
            if tu > tv:
                return (f"edge {u!r} -> {v!r} points backwards: tier {names[tu]!r} comes after "
                        f"tier {names[tv]!r}")
            if tu == tv and not self._within_allowed(names[tu]):
                return f"edge {u!r} -> {v!r} stays within tier {names[tu]!r}, which forbids it"
        if v in self._outcome_set and self.outcome_parent_tiers is not None:
            tier = self.tier_of(u)
            if tier not in self.outcome_parent_tiers:
                return (f"edge {u!r} -> {v!r} enters outcome {v!r} from "
                        f"{'tier ' + repr(tier) if tier else 'a node in no tier'}; outcome "
                        f"parents may only come from tiers {self.outcome_parent_tiers}")
        return None

    def allows(self, u: str, v: str) -> bool:
        """Whether the directed edge ``u -> v`` is allowed."""
        return self.reason_forbidden(u, v) is None

    def forbidden_edges(self, nodes: Iterable[str]) -> set[tuple[str, str]]:
        """Every forbidden ordered pair among ``nodes`` (explicit, tiers and outcome rules)."""
        nodes = [str(n) for n in nodes]
        return {(u, v) for u in nodes for v in nodes if u != v and not self.allows(u, v)}

    def required_edges(self, nodes: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Required edges, restricted to those between ``nodes`` when given."""
        if nodes is None:
            return list(self.required)
        present = set(map(str, nodes))
        return [(u, v) for u, v in self.required if u in present and v in present]

    def violations(self, edges: Iterable[tuple[str, str]],
                   nodes: Iterable[str] | None = None) -> list[str]:
        """Messages for every way the directed ``edges`` break this knowledge (empty = none).

        Required edges are checked only when both of their nodes are in ``nodes`` (default:
        the nodes the edges touch).
        """
        edges = [(str(u), str(v)) for u, v in edges]
        if nodes is None:
            nodes = {n for e in edges for n in e}
        problems = [reason for u, v in edges if (reason := self.reason_forbidden(u, v))]
        present = set(edges)
        problems += [f"required edge {u!r} -> {v!r} is missing"
                     for u, v in self.required_edges(nodes) if (u, v) not in present]
        return problems

    def check_nodes(self, nodes: Iterable[str]) -> None:
        """Refuse knowledge that names nodes absent from the data (a typo would silently
        drop a constraint)."""
        present = set(map(str, nodes))
        named = set(self._tier_index) | set(self.outcomes)
        named |= {n for e in self.forbidden + self.required for n in e}
        absent = sorted(named - present)
        if absent:
            raise KnowledgeError(
                f"expert knowledge names nodes that are not in the data: {absent[:10]}; "
                f"fix the names or drop them (data columns: {sorted(present)[:15]})"
            )

    def to_pgmpy(self, nodes: Iterable[str]):
        """The same constraints as a ``pgmpy.causal_discovery.ExpertKnowledge`` over ``nodes``.

        Tiers and outcome rules are expanded into explicit forbidden edges, so pgmpy's search
        never has to interpret a temporal order (and never mutates this object).
        """
        from pgmpy.causal_discovery import ExpertKnowledge as PgmpyKnowledge

        nodes = sorted(map(str, nodes))
        return PgmpyKnowledge(forbidden_edges=self.forbidden_edges(nodes),
                              required_edges=self.required_edges(nodes))

    # ------------------------------------------------------------------ YAML
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for YAML."""
        out: dict[str, Any] = {"format": KNOWLEDGE_FORMAT,
                               "tiers": [{"name": t, "nodes": list(n)} for t, n in self.tiers.items()],
                               "within_tier": self.within_tier,
                               "forbidden": [[u, v] for u, v in self.forbidden],
                               "required": [[u, v] for u, v in self.required],
                               "outcomes": list(self.outcomes)}
        if self.outcome_parent_tiers is not None:
            out["outcome_parent_tiers"] = list(self.outcome_parent_tiers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExpertKnowledge":
        """Inverse of ``to_dict``; unknown keys raise ``KnowledgeError``."""
        if not isinstance(data, Mapping):
            raise KnowledgeError(f"expert knowledge must be a mapping (got {type(data).__name__})")
        fmt = data.get("format", KNOWLEDGE_FORMAT)
        if fmt != KNOWLEDGE_FORMAT:
            raise KnowledgeError(f"knowledge format {fmt!r} is not supported "
                                 f"(expected {KNOWLEDGE_FORMAT!r})")
        allowed = {"format", "tiers", "within_tier", "forbidden", "required", "outcomes",
                   "outcome_parent_tiers"}
        unknown = set(data) - allowed
        if unknown:
            raise KnowledgeError(f"unknown expert-knowledge keys {sorted(unknown)}; "
                                 f"allowed: {sorted(allowed)}")
        tiers = data.get("tiers") or []
        if isinstance(tiers, Sequence):
            ordered = {}
            for i, entry in enumerate(tiers):
                if isinstance(entry, Mapping):
                    if "nodes" not in entry:
                        raise KnowledgeError(f"tier entry {i} needs 'nodes' (got {dict(entry)!r})")
                    ordered[str(entry.get("name", f"tier{i}"))] = entry["nodes"] or []
                else:
                    ordered[f"tier{i}"] = entry
            tiers = ordered
        return cls(tiers=tiers, forbidden=data.get("forbidden") or [],
                   required=data.get("required") or [],
                   within_tier=data.get("within_tier", True),
                   outcomes=data.get("outcomes") or [],
                   outcome_parent_tiers=data.get("outcome_parent_tiers"))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Write as YAML to ``path`` (atomically, when given) and return the text."""
        return dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "ExpertKnowledge":
        """Read from a YAML file, or from YAML text (a string containing a newline)."""
        data = load_yaml(path_or_text, "expert-knowledge", KnowledgeError)
        return cls.from_dict(data or {})

    def __eq__(self, other) -> bool:
        return isinstance(other, ExpertKnowledge) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"ExpertKnowledge({len(self.tiers)} tiers over {len(self._tier_index)} nodes, "
                f"{len(self.forbidden)} forbidden, {len(self.required)} required, "
                f"{len(self.outcomes)} outcomes)")

    # ------------------------------------------------------------------ internals
    def _within_allowed(self, tier: str) -> bool:
        if isinstance(self.within_tier, bool):
            return self.within_tier
        return tier in self.within_tier

    def _check_tier_names(self, names: Iterable[str], what: str) -> None:
        unknown = [t for t in names if t not in self.tiers]
        if unknown:
            raise KnowledgeError(f"{what} names unknown tiers {unknown}; "
                                 f"tiers are {list(self.tiers)}")

    def _check_consistent(self) -> None:
        for u, v in self.required:
            reason = self.reason_forbidden(u, v)
            if reason is not None:
                raise KnowledgeError(
                    f"required edge {u!r} -> {v!r} contradicts the rest of the knowledge: "
                    f"{reason}; drop the requirement or change the tiers/forbidden edges"
                )
        required = nx.DiGraph(self.required)
        try:
            cycle = nx.find_cycle(required)
        except nx.NetworkXNoCycle:
            return
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise KnowledgeError(f"required edges form the cycle {path}; a Bayesian network is "
                             "acyclic, so drop one of these requirements")


__all__ = ["ExpertKnowledge", "DEFAULT_BLOCK_TIERS", "KNOWLEDGE_FORMAT"]
