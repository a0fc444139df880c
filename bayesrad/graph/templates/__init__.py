"""Ready model templates: one graph per clinical setting, shipped as package data.

Each ``<name>.yaml`` here is a graph in the ``Graph.to_yaml`` format (node specs with kinds,
blocks, levels and units; edges with sign priors; expert tiers with forbidden and required
edges under ``knowledge:``) plus a ``card:`` section (intended data, the clinical reasoning
behind every tier and sign prior, what the template does not cover), which ``Graph.from_yaml``
ignores. Node names and blocks match the columns of the simulated scenario of the same setting
(``bayesrad.data.simulate.simulate``). The files are read with importlib.resources, so they
load from a wheel as well as from a source checkout.

    >>> from bayesrad.graph import templates
    >>> graph = templates.load("glioma_pet")          # a Graph with its ExpertKnowledge
    >>> templates.card("glioma_pet")["intended_data"]  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from bayesrad.errors import GraphError

# template name -> the simulated scenario whose columns it matches
SCENARIO_OF = {
    "radiotherapy": "radiotherapy",
    "glioma_pet": "glioma_pet",
    "wholebody_petct": "wholebody_petct",
    "liver_multiphase": "liver_multiphase",
    "incomplete_multimodal": "incomplete_multimodal",
}


def names() -> list[str]:
    """Names of the shipped templates (sorted)."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".yaml"))


def _text(name: str) -> str:
    resource = resources.files(__name__) / f"{name}.yaml"
    if not isinstance(name, str) or not resource.is_file():
        raise GraphError(f"no model template {name!r}; the package ships {names()} "
                         f"(bayesrad/graph/templates/<name>.yaml)")
    return resource.read_text(encoding="utf-8")


def text(name: str) -> str:
    """The YAML text of template ``name`` (to copy and edit: ``Graph.from_yaml`` reads it)."""
    return _text(name)


def load(name: str):
    """The ``Graph`` of template ``name``, with its expert knowledge (``graph.knowledge``)."""
    from bayesrad.graph.graph import Graph  # graph.py imports nothing from here

    graph = Graph.from_yaml(_text(name))
    return graph


def card(name: str) -> dict[str, Any]:
    """The template's card: ``setting``, ``intended_data``, ``tiers`` (reason per tier),
    ``sign_priors`` (reason per signed edge), ``required``, ``forbidden``, ``not_covered``."""
    import yaml

    return dict(yaml.safe_load(_text(name)).get("card") or {})


__all__ = ["names", "load", "card", "text", "SCENARIO_OF"]
