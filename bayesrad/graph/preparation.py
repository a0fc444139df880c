"""The table preparation and knowledge enforcement that the structure learners
(``structure.py``) and the bootstrap (``bootstrap.py``) share.

They live apart from both so that ``structure.learn_structure`` can use the bootstrap
wrapper and the bootstrap can use them without an import circle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx
import numpy as np
import pandas as pd

from bayesrad.errors import GraphError, plain
from bayesrad.graph.knowledge import ExpertKnowledge


def prepare_table(X: pd.DataFrame, missing: str = "error", seed: int = 0) -> pd.DataFrame:
    """The data as the scores need it: columns sorted by name, discrete columns as pandas
    categoricals (bool / text too), integer columns as int64 (counts), other numeric columns
    as float64.

    ``missing``: ``"error"`` raises for any missing value; ``"keep"`` lets missing *numeric*
    values through (for resampling before imputation); ``"impute"`` draws them with
    ``bayesrad.graph.node_table.impute_numeric`` (seeded). A missing discrete value always
    raises. Raises ``GraphError`` naming the column for missing values, a constant column or
    an unusable dtype.
    """
    if missing not in ("error", "keep", "impute"):
        raise GraphError(f"missing must be 'error', 'keep' or 'impute' (got {missing!r})")
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
        numeric = (pd.api.types.is_numeric_dtype(series)
                   and not pd.api.types.is_bool_dtype(series))
        if series.isna().any() and (missing == "error" or not numeric):
            patient = series.index[series.isna()][0]
            raise GraphError(f"column {col!r} has missing values (first: row {plain(patient)!r}); "
                             "drop those rows, or impute numeric columns with "
                             "HillClimbLearner(impute=True)")
        if isinstance(series.dtype, pd.CategoricalDtype):
            data[col] = series.cat.remove_unused_categories()
        elif pd.api.types.is_bool_dtype(series) or series.dtype == object:
            data[col] = pd.Categorical(series.astype(str))
        elif pd.api.types.is_integer_dtype(series) and not series.isna().any():
            data[col] = series.astype(np.int64)          # counts (Poisson under bic-glm)
        elif pd.api.types.is_numeric_dtype(series):
            data[col] = series.astype(float)
        else:
            raise GraphError(f"column {col!r} has dtype {series.dtype}, which structure "
                             "learning cannot use; make it numeric or categorical")
        if data[col].nunique() < 2:
            raise GraphError(f"column {col!r} is constant; drop it (it cannot have edges)")
    if missing == "impute":
        from bayesrad.graph.node_table import impute_numeric

        data = impute_numeric(data, seed)
    return data


def node_names(columns: Iterable[str], vector_nodes: Mapping[str, Iterable[str]] | None = None
               ) -> list[str]:
    """Sorted node names of a table: its columns, with each vector node's columns replaced
    by the node. Raises ``GraphError`` for a vector node naming absent or shared columns."""
    columns = [str(c) for c in columns]
    members: dict[str, str] = {}
    for node, cols in (vector_nodes or {}).items():
        cols = [str(c) for c in cols]
        absent = sorted(set(cols) - set(columns))
        if absent or not cols:
            raise GraphError(f"vector node {node!r} names columns {absent or cols} that are not "
                             "in the data; fix vector_nodes")
        for col in cols:
            if col in members:
                raise GraphError(f"column {col!r} belongs to vector nodes {members[col]!r} and "
                                 f"{node!r}; give each column to one node")
            members[col] = str(node)
        if str(node) in columns and str(node) not in cols:
            raise GraphError(f"vector node {node!r} has the name of a column; rename one")
    return sorted({members.get(c, c) for c in columns})


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
