"""bayesrad: Bayesian networks over multimodal oncology data.

The public names load on first use, so that ``import bayesrad`` stays fast and does not
pull in torch, pgmpy, pyradiomics or MONAI until they are needed.
"""

from bayesrad import errors
from bayesrad.data import Cohort, ColumnType

__version__ = "0.1.0"

_LAZY = {
    "simulate": "bayesrad.data.simulate",
    "Simulation": "bayesrad.data.simulate",
    "SCENARIOS": "bayesrad.data.simulate",
    "Graph": "bayesrad.graph.graph",
    "NodeSpec": "bayesrad.graph.graph",
    "ExpertKnowledge": "bayesrad.graph.knowledge",
    "learn_structure": "bayesrad.graph.structure",
    "build_node_table": "bayesrad.graph.node_table",
    "HybridBN": "bayesrad.model.hybrid",
    "extract_cohort": "bayesrad.features.extract",
    "ComBatHarmonizer": "bayesrad.features.harmonize",
    "GeneModules": "bayesrad.features.genes",
    "KineticHabitats": "bayesrad.features.kinetics",
    "pretrain_encoder": "bayesrad.imaging.pretrain",
    "embed_cohort": "bayesrad.imaging.embed",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bayesrad' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["Cohort", "ColumnType", "errors", "__version__", *_LAZY]
