"""Graphs: the DAG of typed nodes, expert knowledge, structure learning, bootstrap confidence.

``Graph``/``NodeSpec`` load eagerly; the learners (which import pgmpy) load on first use.
"""

from bayesrad.graph.graph import Graph, NodeSpec

_LAZY = {
    "ExpertKnowledge": "bayesrad.graph.knowledge",
    "learn_structure": "bayesrad.graph.structure",
    "HillClimbLearner": "bayesrad.graph.structure",
    "PCLearner": "bayesrad.graph.structure",
    "BootstrapLearner": "bayesrad.graph.bootstrap",
    "build_node_table": "bayesrad.graph.node_table",
    "NodeTable": "bayesrad.graph.node_table",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bayesrad.graph' has no attribute {name!r}")


__all__ = ["Graph", "NodeSpec", *_LAZY]
