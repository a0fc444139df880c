"""The graph of a bayesrad model: a DAG of typed nodes (``NodeSpec``) on networkx.

A node is either one observed column of a cohort block (``continuous``, ``binary``,
``categorical``, ``ordinal``, ``count``, ``survival``), a ``latent`` node standing for a whole
high-dimensional block (radiomics, deep features, genes) through a k-dimensional latent with a
factor-analysis likelihood over the block's columns, or a ``group`` node (centre, scanner) that
gives its children hierarchical random intercepts.

The graph is acyclic by construction: ``add_edge`` refuses an edge that would close a cycle,
an edge into a ``group`` node and an edge out of a ``survival`` node, naming the nodes.
It is read and written as YAML (``to_yaml`` / ``from_yaml``).
"""

from __future__ import annotations

import re

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from bayesrad.graph._yaml import dump_yaml, load_yaml, source_name
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.errors import GraphError

KINDS = ("continuous", "binary", "categorical", "ordinal", "count", "survival", "latent", "group")
OBSERVED_KINDS = ("continuous", "binary", "categorical", "ordinal", "count", "survival")
# Kinds whose values are discrete levels (a categorical parent is one-hot coded against its
# first level; an ordinal parent enters as its level index).
DISCRETE_KINDS = ("binary", "categorical", "ordinal", "group")

GRAPH_FORMAT = "bayesrad-graph/1"

# Keys a node's prior override may hold (all on the standardised scale of the node):
#   intercept_scale, coef_scale, noise_scale: Normal / HalfNormal scales;
#   shrinkage: "horseshoe" (regularised horseshoe over its incoming coefficients), "ridge"
#   (a Gaussian prior whose scale is learned, one scale per latent parent and one for the
#   observed parents: a Bayesian ridge regression with automatic relevance per block; its
#   prior sd of each block's contribution to the linear predictor is HalfNormal(tau_scale))
#   or "normal";
#   family: the likelihood family (``model/families.py``: "normal" | "student_t" for
#   continuous nodes, "poisson" | "negbinom" for count nodes); mlp_hidden: width of a small MLP mean
#   (continuous nodes); group_scale: scale of the random-intercept sd of a group parent;
#   factors: "empirical_bayes" for a latent node whose loadings are probabilistic PCA of its
#   block with k chosen by evidence (``model/factors.py``; latent_dim is then an upper bound);
#   transform: "normal_scores" for a latent node's block columns (training quantiles);
#   supervise: an outcome node's name, for an empirical-Bayes latent node whose factors are
#   fitted on the block's columns most associated with that outcome (supervised principal
#   components; how many by inner CV on the training data, ``model/factors.choose_screening``).
NODE_PRIOR_KEYS = frozenset(
    {"intercept_scale", "coef_scale", "noise_scale", "shrinkage", "family", "mlp_hidden",
     "group_scale", "global_scale", "slab_scale", "factors", "transform", "tau_scale",
     "supervise"}
)
# Keys an edge's prior override may hold: sign ("positive" / "negative", a known direction of
# effect: the coefficient's prior becomes half-normal on that side), mean, scale (standardised).
EDGE_PRIOR_KEYS = frozenset({"sign", "mean", "scale"})

# A numeric block with more columns than this is summarised by a latent node in
# ``Graph.default`` (a factor model); smaller blocks enter column by column.
_DEFAULT_LATENT_MIN_COLUMNS = 10
_LATENT_BLOCKS = ("radiomics", "deep", "genes", "expression")
# Upper bound of the factors of a latent node in Graph.default (as model/factors.MAX_FACTORS;
# the graph layer cannot import the model layer)
_AUTO_MAX_FACTORS = 64


@dataclass
class NodeSpec:
    """One node of a bayesrad graph.

    Parameters
    ----------
    name : node name; for an observed node, the column name in its block.
    kind : one of ``KINDS``.
    block : name of the cohort block holding the node's column(s); found from the data when
        ``None`` (observed nodes). Required for ``latent`` nodes.
    columns : for ``latent`` nodes, the block's columns its factor model explains
        (``None`` = every numeric column of the block).
    levels : ordered levels of ``binary`` / ``categorical`` / ``ordinal`` / ``group`` nodes
        (the first is the reference level); found from the data when ``None``.
    unit : physical unit (``"Gy"``, ``"days"``), informative only.
    latent_dim : dimension k of a ``latent`` node.
    event : for a ``survival`` node (the time column), the name of its 0/1 event column.
    prior : node prior overrides (keys in ``NODE_PRIOR_KEYS``).
    """

    name: str
    kind: str
    block: str | None = None
    columns: list[str] | None = None
    levels: list | None = None
    unit: str | None = None
    latent_dim: int = 2
    event: str | None = None
    prior: dict[str, Any] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise GraphError(f"a node needs a non-empty text name (got {self.name!r})")
        if self.kind not in KINDS:
            raise GraphError(
                f"node {self.name!r}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}"
            )
        if self.kind == "latent":
            if not self.block:
                raise GraphError(
                    f"latent node {self.name!r} needs block= (the cohort block it stands for)"
                )
            if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, (int, np.integer)):
                raise GraphError(
                    f"latent node {self.name!r}: latent_dim must be a whole number >= 1 "
                    f"(got {self.latent_dim!r})"
                )
            if int(self.latent_dim) < 1:
                raise GraphError(
                    f"latent node {self.name!r}: latent_dim must be >= 1 (got {self.latent_dim})"
                )
        self.latent_dim = int(self.latent_dim)
        if self.columns is not None:
            self.columns = [str(c) for c in self.columns]
        if self.levels is not None:
            self.levels = list(self.levels)
            if len(set(map(str, self.levels))) != len(self.levels):
                raise GraphError(f"node {self.name!r}: repeated levels {self.levels}")
        if self.kind == "binary" and self.levels is not None and len(self.levels) != 2:
            raise GraphError(
                f"binary node {self.name!r} needs exactly 2 levels (got {self.levels}); "
                "declare it categorical instead"
            )
        if self.prior is not None:
            unknown = set(self.prior) - NODE_PRIOR_KEYS
            if unknown:
                raise GraphError(
                    f"node {self.name!r}: unknown prior keys {sorted(unknown)}; "
                    f"allowed: {sorted(NODE_PRIOR_KEYS)}"
                )
            self.prior = dict(self.prior)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for YAML): empty fields dropped, ``latent_dim`` only for latents."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key in ("block", "columns", "levels", "unit", "event", "prior"):
            value = getattr(self, key)
            if value is not None:
                out[key] = _plain(value)
        if self.kind == "latent":
            out["latent_dim"] = self.latent_dim
        return out

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "NodeSpec":
        """Inverse of ``to_dict``; unknown fields raise ``GraphError``."""
        if not isinstance(spec, Mapping) or "name" not in spec or "kind" not in spec:
            raise GraphError(f"a node entry needs 'name' and 'kind' (got {spec!r})")
        allowed = {"name", "kind", "block", "columns", "levels", "unit", "latent_dim", "event",
                   "prior"}
        unknown = set(spec) - allowed
        if unknown:
            raise GraphError(f"node {spec['name']!r}: unknown fields {sorted(unknown)}")
        return cls(**dict(spec))


def _plain(value):
    """YAML-safe copy of a value (numpy scalars to Python, tuples to lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _check_parent_kind(parent: NodeSpec, child: NodeSpec) -> None:
    """Refuse an edge whose parent kind the child's family cannot take."""
    if child.kind == "group":
        raise GraphError(
            f"edge {parent.name!r} -> {child.name!r}: a group node ({child.name!r}) is a root "
            "(it gives random intercepts to its children) and cannot have parents; "
            "reverse the edge or make it categorical"
        )
    if parent.kind == "survival":
        raise GraphError(
            f"edge {parent.name!r} -> {child.name!r}: a survival node ({parent.name!r}) is an "
            "outcome observed with censoring and cannot be a parent; use a binary "
            "'event by time t' node instead"
        )


class Graph:
    """A DAG of ``NodeSpec``s with per-edge prior overrides and edge confidence.

    Parameters
    ----------
    nodes : node specs (names must be unique).
    edges : ``(parent, child)`` pairs between named nodes.

    Attributes
    ----------
    knowledge : the ``ExpertKnowledge`` (tiers, forbidden / required edges) the graph was
        learned under, or ``None``; it travels with the graph through YAML.
    """

    def __init__(self, nodes: Iterable[NodeSpec] = (), edges: Iterable[tuple[str, str]] = ()):
        self.knowledge = None
        self._g = nx.DiGraph()
        for spec in nodes:
            self.add_node(spec)
        for edge in edges:
            if len(edge) != 2:
                raise GraphError(f"an edge is a (parent, child) pair (got {edge!r})")
            self.add_edge(edge[0], edge[1])

    # ---------------------------------------------------------------- building
    def add_node(self, spec: NodeSpec) -> "Graph":
        """Add a node; a repeated name raises ``GraphError``."""
        if not isinstance(spec, NodeSpec):
            raise GraphError(f"add_node takes a NodeSpec (got {type(spec).__name__})")
        if spec.name in self._g:
            raise GraphError(f"node {spec.name!r} is already in the graph; rename one of them")
        self._g.add_node(spec.name, spec=spec)
        return self

    def add_edge(self, u: str, v: str, prior: Mapping[str, Any] | None = None,
                 confidence: float | Mapping[str, float] | None = None) -> "Graph":
        """Add the edge ``u -> v`` (``u`` a parent of ``v``).

        Parameters
        ----------
        prior : edge prior override, keys ``sign`` (``"positive"``/``"negative"``), ``mean``,
            ``scale`` (on the standardised scale of the child's linear predictor).
        confidence : bootstrap edge probability, a float or ``{"probability": p,
            "direction": q}``.
        """
        for name in (u, v):
            if name not in self._g:
                raise GraphError(
                    f"edge {u!r} -> {v!r}: node {name!r} is not in the graph; add it first "
                    f"(nodes: {self.nodes[:20]})"
                )
        if u == v:
            raise GraphError(f"edge {u!r} -> {v!r} is a self-loop; a node cannot cause itself")
        _check_parent_kind(self.spec(u), self.spec(v))
        if nx.has_path(self._g, v, u):
            path = nx.shortest_path(self._g, v, u)
            raise GraphError(
                f"edge {u!r} -> {v!r} would close the cycle {' -> '.join(path + [v])}; "
                "remove or reverse one of its edges"
            )
        self._g.add_edge(u, v, prior=_check_edge_prior(u, v, prior),
                         confidence=_check_confidence(u, v, confidence))
        return self

    def remove_edge(self, u: str, v: str) -> "Graph":
        """Remove the edge ``u -> v`` (``GraphError`` if absent)."""
        if not self._g.has_edge(u, v):
            raise GraphError(f"edge {u!r} -> {v!r} is not in the graph")
        self._g.remove_edge(u, v)
        return self

    # ---------------------------------------------------------------- reading
    @property
    def nodes(self) -> list[str]:
        """Node names in insertion order."""
        return list(self._g.nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(parent, child)`` pairs."""
        return list(self._g.edges)

    def spec(self, name: str) -> NodeSpec:
        """The ``NodeSpec`` of node ``name``."""
        if name not in self._g:
            raise GraphError(f"node {name!r} is not in the graph (nodes: {self.nodes[:20]})")
        return self._g.nodes[name]["spec"]

    def parents(self, name: str) -> list[str]:
        """Parents of ``name`` in the order their edges were added."""
        self.spec(name)
        return list(self._g.predecessors(name))

    def children(self, name: str) -> list[str]:
        """Children of ``name``."""
        self.spec(name)
        return list(self._g.successors(name))

    def ancestors(self, name: str) -> set[str]:
        """Every node with a directed path into ``name`` (``name`` excluded)."""
        self.spec(name)
        return set(nx.ancestors(self._g, name))

    def descendants(self, name: str) -> set[str]:
        """Every node reachable from ``name`` along edges (``name`` excluded)."""
        self.spec(name)
        return set(nx.descendants(self._g, name))

    def edge_prior(self, u: str, v: str) -> dict[str, Any] | None:
        """Prior override of edge ``u -> v`` (``None`` = the default prior)."""
        if not self._g.has_edge(u, v):
            raise GraphError(f"edge {u!r} -> {v!r} is not in the graph")
        return self._g.edges[u, v]["prior"]

    @property
    def edge_confidence(self) -> dict[tuple[str, str], dict[str, float]]:
        """``{(u, v): {"probability": p, "direction": q}}`` for edges that carry one."""
        return {(u, v): dict(d["confidence"]) for u, v, d in self._g.edges(data=True)
                if d.get("confidence") is not None}

    def topological_order(self) -> list[str]:
        """Nodes so that every parent comes before its children (ties in insertion order)."""
        return list(nx.lexicographical_topological_sort(
            self._g, key=lambda n: self.nodes.index(n)))

    def markov_blanket(self, name: str) -> list[str]:
        """Parents, children and the children's other parents of ``name``."""
        blanket = set(self.parents(name)) | set(self.children(name))
        for child in self.children(name):
            blanket |= set(self.parents(child))
        blanket.discard(name)
        return [n for n in self.nodes if n in blanket]

    def to_networkx(self) -> nx.DiGraph:
        """A copy as ``networkx.DiGraph``: node attr ``spec`` (and ``kind``, ``block``), edge
        attrs ``prior`` and ``confidence``."""
        g = self._g.copy()
        for name in g.nodes:
            spec = g.nodes[name]["spec"]
            g.nodes[name]["kind"] = spec.kind
            g.nodes[name]["block"] = spec.block
        return g

    @classmethod
    def from_networkx(cls, g: nx.DiGraph, kinds: Mapping[str, str] | None = None) -> "Graph":
        """Build from a DiGraph whose nodes carry ``spec`` (a NodeSpec) or ``kind`` (+``block``)
        attributes, or whose kinds are given in ``kinds``."""
        graph = cls()
        for name, data in g.nodes(data=True):
            if isinstance(data.get("spec"), NodeSpec):
                graph.add_node(replace(data["spec"]))
                continue
            kind = (kinds or {}).get(name, data.get("kind"))
            if kind is None:
                raise GraphError(f"node {name!r} has no kind; pass kinds={{{name!r}: ...}}")
            # node attributes named like NodeSpec fields (as the simulator's truth graph
            # carries them) are kept; an empty column list means "the whole block"
            extra = {key: data[key] for key in ("levels", "unit", "event", "latent_dim", "prior")
                     if data.get(key) is not None}
            if data.get("columns"):
                extra["columns"] = list(data["columns"])
            graph.add_node(NodeSpec(str(name), kind, block=data.get("block"), **extra))
        for u, v, data in g.edges(data=True):
            graph.add_edge(str(u), str(v), prior=data.get("prior"),
                           confidence=data.get("confidence"))
        return graph

    def copy(self) -> "Graph":
        """A deep-enough copy (specs copied; edits do not leak)."""
        return Graph.from_dict(self.to_dict())

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Graph({len(self)} nodes, {self._g.number_of_edges()} edges)"

    # ---------------------------------------------------------------- data
    def check_data(self, blocks: Mapping[str, pd.DataFrame]) -> dict[str, tuple[str, list[str]]]:
        """Find every node's block and columns in ``blocks`` (``{block: DataFrame}``).

        Returns ``{node: (block, columns)}``; an observed node's columns are ``[name]`` (plus
        its event column for survival). A node whose column (or block) is absent raises
        ``GraphError`` naming the node and where it was looked for.
        """
        where: dict[str, tuple[str, list[str]]] = {}
        for name in self.nodes:
            spec = self.spec(name)
            if spec.kind == "latent":
                if spec.block not in blocks:
                    raise GraphError(
                        f"latent node {name!r} stands for block {spec.block!r}, which is not in "
                        f"the data (blocks: {sorted(blocks)}); add the block or fix block="
                    )
                frame = blocks[spec.block]
                if spec.columns is None:
                    columns = [c for c in frame.columns
                               if pd.api.types.is_numeric_dtype(frame[c])]
                else:
                    absent = [c for c in spec.columns if c not in frame.columns]
                    if absent:
                        raise GraphError(
                            f"latent node {name!r}: columns {absent[:5]} are not in block "
                            f"{spec.block!r}; fix columns= or the data"
                        )
                    columns = list(spec.columns)
                if not columns:
                    raise GraphError(f"latent node {name!r}: block {spec.block!r} has no "
                                     "numeric columns to model")
                where[name] = (spec.block, columns)
                continue
            needed = [name] + ([spec.event] if spec.kind == "survival" else [])
            if spec.kind == "survival" and not spec.event:
                raise GraphError(f"survival node {name!r} needs event= (its 0/1 event column)")
            candidates = [spec.block] if spec.block else list(blocks)
            found = [b for b in candidates if b in blocks and all(c in blocks[b].columns
                                                                  for c in needed)]
            if not found:
                looked = f"block {spec.block!r}" if spec.block else f"blocks {sorted(blocks)}"
                raise GraphError(
                    f"node {name!r}: column(s) {needed} not found in {looked}; add the column "
                    "to the data, fix the node's block=, or remove the node"
                )
            if len(found) > 1:
                raise GraphError(
                    f"node {name!r}: a column of that name is in several blocks {found}; "
                    "set block= on the node"
                )
            where[name] = (found[0], needed)
        return where

    @classmethod
    def default(cls, cohort_or_blocks, target: str, latent_dim: int | str = "auto",
                exclude: Iterable[str] = ()) -> "Graph":
        """The obvious first graph: every block and clinical variable a parent of ``target``,
        under shrinkage.

        Blocks named radiomics/deep/genes/expression (or containing those words, such as
        ``pet_radiomics``, with ``latent_dim="auto"``), or numeric blocks with more than 10
        columns, become one ``latent`` node each (named after the block); other columns
        become observed nodes typed from the cohort schema (or inferred). The target may sit
        in a block with its features (one CSV): the block's other columns are its parents.
        Other outcome columns (survival times, events, and every column of an ``outcome``
        block other than the target) are left out so that no outcome explains another.

        With ``latent_dim="auto"`` (the default) a latent node's block is put on normal
        scores and summarised by probabilistic PCA with the number of factors chosen by
        evidence on the training data (``model/factors.py``, at most 64), and the target's
        coefficients get ridge shrinkage with one learned scale per block (a Bayesian ridge
        regression on the block's columns, seen through its factors). With several latent
        blocks, the most complete one is a parent of the others (ridge-shrunk), so a block a
        patient lacks is predicted from the blocks they have. An integer keeps the
        older k-dimensional factor model learned jointly by SVI, with Normal(0, 1)
        coefficients.

        Parameters
        ----------
        cohort_or_blocks : a ``Cohort`` or ``{block: DataFrame}`` indexed by patient_id.
        target : name of the target column.
        latent_dim : ``"auto"`` or k of each latent node.
        exclude : column names to leave out (identifiers, leakage).
        """
        from bayesrad.data.schema import infer_schema

        auto = latent_dim == "auto"
        if not auto and (isinstance(latent_dim, bool) or not isinstance(latent_dim, int)
                         or latent_dim < 1):
            raise GraphError(f"latent_dim must be 'auto' or a positive integer (got {latent_dim!r})")
        blocks, schema = _blocks_and_schema(cohort_or_blocks)
        exclude = set(exclude)
        target_spec = None
        specs: list[NodeSpec] = []
        for block, frame in blocks.items():
            types = schema.get(block) or infer_schema(frame)
            own = target in frame.columns
            if own:
                target_spec = _spec_from_type(target, block, types[target])
                _refuse_unpaired_time(target, target_spec, block)
                # the target's time/event partner is an outcome too, never a parent
                exclude_here = exclude | {target} | (
                    {target_spec.event} if target_spec.event else set())
            else:
                exclude_here = exclude
            if block == "outcome":
                continue
            numeric = [c for c in frame.columns
                       if c not in exclude_here and types[c].kind in ("continuous", "count")]
            candidates = [c for c in frame.columns if c not in exclude_here]
            as_latent = block in _LATENT_BLOCKS or (
                auto and any(word in block for word in _LATENT_BLOCKS) and len(numeric) > 2) or (
                len(numeric) > _DEFAULT_LATENT_MIN_COLUMNS
                and len(numeric) >= 0.8 * max(len(candidates), 1))
            if as_latent:
                if numeric:
                    name = block if block != target else f"{block}_features"
                    specs.append(NodeSpec(
                        name, "latent", block=block, columns=numeric,
                        latent_dim=(min(_AUTO_MAX_FACTORS, len(numeric)) if auto
                                    else min(latent_dim, len(numeric))),
                        prior=({"factors": "empirical_bayes", "transform": "normal_scores"}
                               if auto else None)))
                # columns a factor model cannot hold (levels, labels) stay out of the
                # latent; discrete ones enter as their own nodes
                for col in candidates:
                    ctype = types[col]
                    if col in numeric or ctype.kind in ("label", "event", "survival",
                                                        "continuous", "count"):
                        continue
                    specs.append(_spec_from_type(col, block, ctype))
                continue
            for col in candidates:
                ctype = types[col]
                if ctype.kind in ("label", "event", "survival"):
                    continue
                specs.append(_spec_from_type(col, block, ctype))
        if target_spec is None:
            raise GraphError(
                f"target {target!r} is not a column of any block ({sorted(blocks)}); "
                "pass the name of an outcome column"
            )
        names = {s.name for s in specs}
        if target_spec.name in names:
            raise GraphError(f"target {target!r} collides with a node of the same name")
        if not specs:
            raise GraphError(
                f"target {target!r} has no candidate parents: no other column of "
                f"{sorted(blocks)} can be a node (all excluded, outcomes or labels); add the "
                "features as columns or blocks of the cohort")
        if auto:
            target_spec.prior = {**(target_spec.prior or {}), "shrinkage": "ridge"}
        latents = [s for s in specs if s.kind == "latent"]
        if auto and target_spec.kind in ("binary", "categorical", "ordinal", "continuous"):
            # each block's factors summarise its columns most associated with the target
            # (how many, the whole block included, by inner CV on the training patients)
            for spec in latents:
                spec.prior = {**(spec.prior or {}), "supervise": target}
        if auto and len(latents) > 1:
            # a block missing for a patient is predicted from the blocks present: the most
            # complete block is a parent of every other (ridge-shrunk factor regressions);
            # roots would fall back to their prior and flatten the answer
            counts = {s.name: int(blocks[s.block][s.columns].notna().any(axis=1).sum())
                      for s in latents}
            hub = max(latents, key=lambda s: (counts[s.name], -latents.index(s)))
            for spec in latents:
                if spec is not hub:
                    spec.prior = {**(spec.prior or {}), "shrinkage": "ridge"}
        graph = cls(specs + [target_spec])
        if auto and len(latents) > 1:
            for spec in latents:
                if spec is not hub:
                    graph.add_edge(hub.name, spec.name)
        for spec in specs:
            graph.add_edge(spec.name, target)
        return graph

    def with_allowed_parents(self, target: str, knowledge: ExpertKnowledge | None = None
                             ) -> "Graph":
        """A copy in which ``target`` has every parent the expert knowledge allows, under ridge
        shrinkage (one learned scale per latent parent and one for the observed ones).

        A learned graph is one draw of an uncertain structure: a true parent the search missed
        biases the target's answer and its intervals then miss the truth (the demo's learned
        graph lacked three of local control's four parents: 6 of 24 held-out patients had
        their true risk inside the 90% interval). Giving the target all parents the tiers
        allow, and letting shrinkage switch off the ones the data do not support, puts that
        part of the graph's uncertainty into the posterior. A node is added as a parent when
        ``knowledge.allows(node, target)``, it sits in an earlier tier than the target (when
        both are tiered), it is not a descendant of the target (no cycle) and it is not an
        outcome of the knowledge; edges already present keep their priors.
        ``knowledge``: default ``self.knowledge``; without any, every non-descendant qualifies.
        """
        knowledge = knowledge if knowledge is not None else self.knowledge
        graph = self.copy()
        spec = graph.spec(target)
        below = graph.descendants(target) | {target}
        outcomes = set(getattr(knowledge, "outcomes", ()) or ()) if knowledge is not None else set()
        for node in graph.nodes:
            if node in below or node in outcomes or node in graph.parents(target):
                continue
            if graph.spec(node).kind == "group":
                continue
            if knowledge is not None:
                if not knowledge.allows(node, target):
                    continue
                # a node of the target's own tier (another outcome) may be allowed by the
                # tiers but is not a parent to assume: only earlier tiers are added
                tiers = list(knowledge.tiers)
                own, other = knowledge.tier_of(target), knowledge.tier_of(node)
                if own is not None and other is not None and tiers.index(other) >= tiers.index(own):
                    continue
            graph.add_edge(node, target)
        spec.prior = {**(spec.prior or {}), "shrinkage": "ridge"}
        return graph

    # ---------------------------------------------------------------- YAML
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form: ``{"format", "nodes": [...], "edges": [...]}`` (and
        ``"knowledge"`` when set)."""
        edges = []
        for u, v, data in self._g.edges(data=True):
            entry: dict[str, Any] = {"from": u, "to": v}
            if data.get("prior") is not None:
                entry["prior"] = _plain(data["prior"])
            if data.get("confidence") is not None:
                entry["confidence"] = _plain(data["confidence"])
            edges.append(entry)
        out = {"format": GRAPH_FORMAT,
               "nodes": [self.spec(n).to_dict() for n in self.nodes],
               "edges": edges}
        if self.knowledge is not None:
            out["knowledge"] = self.knowledge.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Graph":
        """Inverse of ``to_dict``."""
        if not isinstance(data, Mapping) or "nodes" not in data:
            raise GraphError("a graph description needs a 'nodes' list (and 'edges')")
        fmt = data.get("format", GRAPH_FORMAT)
        if fmt != GRAPH_FORMAT:
            raise GraphError(f"graph format {fmt!r} is not supported (expected {GRAPH_FORMAT!r})")
        if not isinstance(data["nodes"], list):
            raise GraphError(f"'nodes' must be a list of node entries (got {data['nodes']!r})")
        edges = data.get("edges") or []
        if not isinstance(edges, list):
            raise GraphError(f"'edges' must be a list of [parent, child] pairs (got {edges!r})")
        graph = cls([NodeSpec.from_dict(n) for n in data["nodes"]])
        for entry in edges:
            if isinstance(entry, Mapping):
                if "from" not in entry or "to" not in entry:
                    raise GraphError(f"an edge entry needs 'from' and 'to' (got {dict(entry)!r})")
                graph.add_edge(entry["from"], entry["to"], prior=entry.get("prior"),
                               confidence=entry.get("confidence"))
            else:
                if not isinstance(entry, list) or len(entry) != 2:
                    raise GraphError(f"an edge is a [parent, child] pair or {{from:, to:}} (got {entry!r})")
                u, v = entry
                graph.add_edge(u, v)
        if data.get("knowledge") is not None:
            graph.knowledge = ExpertKnowledge.from_dict(data["knowledge"])
        return graph

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Write the graph as YAML to ``path`` (atomically) and return the text."""
        return dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "Graph":
        """Read a graph from a YAML file (or YAML text containing a newline)."""
        data = load_yaml(path_or_text, "graph", GraphError)
        try:
            return cls.from_dict(data)
        except GraphError as exc:
            raise GraphError(f"{source_name(path_or_text, 'graph')}: {exc}") from exc
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            # A value of the wrong type deep in an entry (e.g. a list where a name goes):
            # name the file rather than let the raw exception through.
            raise GraphError(f"{source_name(path_or_text, 'graph')}: an entry has a value of the wrong "
                             f"type ({type(exc).__name__}: {exc}); compare with a graph written by "
                             f"Graph.to_yaml") from exc


def _check_edge_prior(u, v, prior):
    if prior is None:
        return None
    if not isinstance(prior, Mapping):
        raise GraphError(f"edge {u!r} -> {v!r}: prior must be a mapping (got {prior!r})")
    unknown = set(prior) - EDGE_PRIOR_KEYS
    if unknown:
        raise GraphError(f"edge {u!r} -> {v!r}: unknown prior keys {sorted(unknown)}; "
                         f"allowed: {sorted(EDGE_PRIOR_KEYS)}")
    if "sign" in prior and prior["sign"] not in ("positive", "negative"):
        raise GraphError(f"edge {u!r} -> {v!r}: sign must be 'positive' or 'negative' "
                         f"(got {prior['sign']!r})")
    if "scale" in prior and not float(prior["scale"]) > 0:
        raise GraphError(f"edge {u!r} -> {v!r}: prior scale must be > 0 (got {prior['scale']})")
    return dict(prior)


def _check_confidence(u, v, confidence):
    if confidence is None:
        return None
    if not isinstance(confidence, Mapping):
        confidence = {"probability": float(confidence)}
    out = {str(k): float(val) for k, val in confidence.items()}
    for key, val in out.items():
        if not 0.0 <= val <= 1.0:
            raise GraphError(f"edge {u!r} -> {v!r}: confidence {key} must be in [0, 1] "
                             f"(got {val})")
    return out


def _blocks_and_schema(cohort_or_blocks):
    """``({block: DataFrame}, {block: {column: ColumnType}})`` from a Cohort or a dict."""
    if isinstance(cohort_or_blocks, Mapping):
        return dict(cohort_or_blocks), {}
    blocks = getattr(cohort_or_blocks, "blocks", None)
    if blocks is None:
        raise GraphError(
            f"expected a Cohort or a dict of DataFrames (got {type(cohort_or_blocks).__name__})"
        )
    return dict(blocks), dict(getattr(cohort_or_blocks, "schema", {}) or {})


_TIME_LIKE = re.compile(r"(^|[_.])(time|days?|months?|years?|os|pfs|dfs|rfs|survival|"
                        r"follow_?up|time_to_\w+)($|[_.])", re.IGNORECASE)


def _refuse_unpaired_time(name: str, spec: NodeSpec, block: str) -> None:
    """A target that reads as a survival time but has no event column would be modelled as a
    Gaussian on censored times: a silently wrong answer. Refuse it and say how to pair it."""
    if spec.kind in ("continuous", "count") and _TIME_LIKE.search(name):
        raise GraphError(
            f"target {name!r} (block {block!r}) looks like a survival time but no event column "
            f"is paired with it, so censored times would be modelled as exact values. Name its "
            f"0/1 event column {name}_event, event_{name} or {name}_status (or e.X for t.X), or "
            f"declare it: Cohort(..., schema={{{block!r}: {{{name!r}: {{'kind': 'survival', "
            f"'event': '<event column>'}}}}}}). If it truly is an uncensored measurement, write "
            f"the graph yourself (Graph([... NodeSpec({name!r}, 'continuous') ...])).")


def _spec_from_type(name: str, block: str, ctype) -> NodeSpec:
    kind = ctype.kind
    if kind in ("event",):
        kind = "binary"
    if kind == "label":
        raise GraphError(f"column {name!r} in block {block!r} is a label (text/id) and cannot "
                         "be a node; exclude it")
    levels = list(ctype.levels) if ctype.levels is not None and kind != "binary" else None
    return NodeSpec(name, kind, block=block, levels=levels, unit=ctype.unit,
                    event=ctype.event if kind == "survival" else None)


__all__ = ["Graph", "NodeSpec", "KINDS", "OBSERVED_KINDS", "GRAPH_FORMAT"]
