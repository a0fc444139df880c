"""Graph and NodeSpec: construction, validation errors that name the culprit, YAML round trip,
the default graph, and finding nodes in data."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from bayesrad.errors import GraphError, MissingFileError
from bayesrad.graph.graph import Graph, NodeSpec


def _small_graph() -> Graph:
    graph = Graph([
        NodeSpec("centre", "group", levels=["A", "B"]),
        NodeSpec("age_years", "continuous", block="clinical", unit="years"),
        NodeSpec("stage", "ordinal", levels=[1, 2, 3]),
        NodeSpec("radiomics", "latent", block="radiomics", latent_dim=2),
        NodeSpec("dose_mean_gy", "continuous", unit="Gy", prior={"noise_scale": 0.5}),
        NodeSpec("local_control", "binary", block="outcome"),
        NodeSpec("os_days", "survival", event="os_event"),
    ])
    graph.add_edge("age_years", "stage")
    graph.add_edge("stage", "dose_mean_gy")
    graph.add_edge("centre", "dose_mean_gy")
    graph.add_edge("dose_mean_gy", "local_control", prior={"sign": "positive", "scale": 0.5},
                   confidence={"probability": 0.9, "direction": 0.8})
    graph.add_edge("radiomics", "local_control")
    graph.add_edge("local_control", "os_days")
    return graph


def test_accessors_and_order():
    graph = _small_graph()
    assert graph.nodes[:2] == ["centre", "age_years"]
    assert graph.parents("dose_mean_gy") == ["stage", "centre"]
    assert graph.children("local_control") == ["os_days"]
    order = graph.topological_order()
    for u, v in graph.edges:
        assert order.index(u) < order.index(v)
    assert graph.edge_prior("dose_mean_gy", "local_control") == {"sign": "positive", "scale": 0.5}
    assert graph.edge_confidence == {("dose_mean_gy", "local_control"):
                                     {"probability": 0.9, "direction": 0.8}}
    assert set(graph.markov_blanket("dose_mean_gy")) == {"stage", "centre", "local_control",
                                                         "radiomics"}
    nxg = graph.to_networkx()
    assert isinstance(nxg, nx.DiGraph) and nxg.nodes["radiomics"]["spec"].latent_dim == 2


def test_cycle_is_refused_and_named():
    graph = _small_graph()
    with pytest.raises(GraphError, match=r"'local_control' -> 'stage'.*cycle.*stage"):
        graph.add_edge("local_control", "stage")
    assert ("local_control", "stage") not in graph.edges


def test_unknown_kind_names_the_node():
    with pytest.raises(GraphError, match=r"node 'tumour'.*unknown kind 'blob'"):
        NodeSpec("tumour", "blob")


def test_impossible_parent_kinds_are_refused():
    graph = _small_graph()
    with pytest.raises(GraphError, match=r"'os_days'.*survival node.*cannot be a parent"):
        graph.add_edge("os_days", "age_years")
    with pytest.raises(GraphError, match=r"group node \('centre'\).*cannot have parents"):
        graph.add_edge("age_years", "centre")


def test_unknown_node_and_bad_prior():
    graph = _small_graph()
    with pytest.raises(GraphError, match="node 'volume' is not in the graph"):
        graph.add_edge("volume", "local_control")
    with pytest.raises(GraphError, match="sign must be 'positive' or 'negative'"):
        graph.add_edge("age_years", "local_control", prior={"sign": "up"})
    with pytest.raises(GraphError, match="unknown prior keys"):
        NodeSpec("x", "continuous", prior={"slope": 1})
    with pytest.raises(GraphError, match="latent node 'genes' needs block="):
        NodeSpec("genes", "latent")


def test_yaml_round_trip(tmp_path):
    graph = _small_graph()
    path = tmp_path / "graph.yaml"
    text = graph.to_yaml(path)
    again = Graph.from_yaml(path)
    assert again == graph
    assert again.to_yaml() == text
    assert again.spec("stage").levels == [1, 2, 3]
    assert again.edge_prior("dose_mean_gy", "local_control")["sign"] == "positive"
    with pytest.raises(MissingFileError):
        Graph.from_yaml(tmp_path / "absent.yaml")
    with pytest.raises(GraphError, match="format"):
        Graph.from_yaml("format: other/9\nnodes: []\n")


def test_nodes_missing_from_data_are_named():
    graph = Graph([NodeSpec("age_years", "continuous"), NodeSpec("lc", "binary")],
                  [("age_years", "lc")])
    blocks = {"clinical": pd.DataFrame({"age_years": [60.0]}, index=["p1"])}
    with pytest.raises(GraphError, match=r"node 'lc'.*not found in blocks \['clinical'\]"):
        graph.check_data(blocks)
    latent = Graph([NodeSpec("rad", "latent", block="radiomics")])
    with pytest.raises(GraphError, match=r"latent node 'rad'.*block 'radiomics'.*not in the data"):
        latent.check_data(blocks)


def test_default_graph_from_blocks():
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(30)]
    blocks = {
        "clinical": pd.DataFrame({"age_years": rng.normal(60, 9, 30),
                                  "sex": rng.choice(["F", "M"], 30)}, index=ids),
        "radiomics": pd.DataFrame(rng.normal(size=(30, 12)),
                                  columns=[f"ct_gtv_f{j}" for j in range(12)], index=ids),
        "outcome": pd.DataFrame({"local_control": rng.integers(0, 2, 30).astype(float),
                                 "os": rng.uniform(10, 100, 30),
                                 "os_event": rng.integers(0, 2, 30).astype(float)}, index=ids),
    }
    graph = Graph.default(blocks, "local_control")
    assert set(graph.nodes) == {"age_years", "sex", "radiomics", "local_control"}
    assert graph.spec("radiomics").kind == "latent"
    assert graph.spec("radiomics").columns == [f"ct_gtv_f{j}" for j in range(12)]
    assert graph.spec("sex").kind == "categorical"
    assert sorted(graph.parents("local_control")) == ["age_years", "radiomics", "sex"]
    where = graph.check_data(blocks)
    assert where["local_control"] == ("outcome", ["local_control"])
    with pytest.raises(GraphError, match="target 'relapse' is not a column"):
        Graph.default(blocks, "relapse")
