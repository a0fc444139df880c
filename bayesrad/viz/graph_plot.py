"""A matplotlib picture of a bayesrad graph: nodes coloured by block, edge width by confidence.

Nodes are laid out in columns by tier when ``ExpertKnowledge`` is given (earliest tier on the
left), otherwise by topological generation, so causes sit left of their effects. An edge's
width grows with its bootstrap probability and its label shows ``p`` (and the direction
probability when below 1); edges without confidence are drawn thin and dashed.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np

from bayesrad.errors import GraphError

# Colour per block (a colour-blind-safe palette); unknown blocks take the remaining colours.
BLOCK_COLOURS = {
    "clinical": "#0072B2", "demographics": "#56B4E9", "dosimetry": "#E69F00",
    "radiomics": "#009E73", "deep": "#F0E442", "genes": "#CC79A7", "expression": "#CC79A7",
    "outcome": "#D55E00",
}
_SPARE_COLOURS = ("#999999", "#882255", "#44AA99", "#117733", "#332288", "#AA4499")


def _layout(g: nx.DiGraph, knowledge=None) -> dict[str, tuple[float, float]]:
    if knowledge is not None and knowledge.tiers:
        names = list(knowledge.tiers)
        column = {n: names.index(knowledge.tier_of(n)) if knowledge.tier_of(n) else len(names)
                  for n in g.nodes}
    else:
        column = {}
        for depth, generation in enumerate(nx.topological_generations(g)):
            for n in generation:
                column[n] = depth
    positions = {}
    for col in sorted(set(column.values())):
        members = sorted(n for n in g.nodes if column[n] == col)
        for row, n in enumerate(members):
            positions[n] = (float(col), -(row - (len(members) - 1) / 2.0))
    return positions


def plot_graph(graph, ax=None, knowledge=None, min_width: float = 0.6,
               max_width: float = 5.0, title: str | None = None,
               colours: Mapping[str, str] | None = None):
    """Draw ``graph`` (a bayesrad ``Graph``) with matplotlib.

    Parameters
    ----------
    graph : bayesrad ``Graph`` (edge confidence, if any, sets the widths).
    ax : matplotlib Axes to draw into (a new figure when ``None``).
    knowledge : ``ExpertKnowledge`` whose tiers set the columns of the layout (default: the
        knowledge the graph carries, ``graph.knowledge``).
    min_width, max_width : edge line widths (points) at probability 0 and 1.
    title : axes title.
    colours : ``{block: colour}`` overrides of ``BLOCK_COLOURS``.

    Returns
    -------
    matplotlib Figure. ``fig.edge_widths`` holds ``{(u, v): width}`` as drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not hasattr(graph, "to_networkx"):
        raise GraphError(f"plot_graph takes a bayesrad Graph (got {type(graph).__name__})")
    g = graph.to_networkx()
    if knowledge is None:
        knowledge = getattr(graph, "knowledge", None)
    if ax is None:
        width = 2.2 * (1 + len(list(nx.topological_generations(g)))) if len(g) else 4
        fig, ax = plt.subplots(figsize=(min(max(width, 6), 18), max(4, 0.6 * len(g))))
    else:
        fig = ax.figure
    palette = dict(BLOCK_COLOURS, **(colours or {}))
    blocks = sorted({str(g.nodes[n].get("block")) for n in g.nodes})
    spare = iter(_SPARE_COLOURS * 4)
    for block in blocks:
        if block not in palette:
            palette[block] = next(spare)
    positions = _layout(g, knowledge)
    confidence = graph.edge_confidence
    widths, styles = {}, []
    for u, v in g.edges:
        conf = confidence.get((u, v))
        p = conf.get("probability") if conf else None
        widths[(u, v)] = min_width + (max_width - min_width) * (p if p is not None else 0.0)
        styles.append("solid" if p is not None else "dashed")
    edge_list = list(g.edges)
    nx.draw_networkx_edges(g, positions, edgelist=edge_list, ax=ax,
                           width=[widths[e] for e in edge_list], style=styles,
                           arrows=True, arrowsize=14, edge_color="#444444",
                           connectionstyle="arc3,rad=0.08", node_size=1400)
    node_colours = [palette[str(g.nodes[n].get("block"))] for n in g.nodes]
    nx.draw_networkx_nodes(g, positions, ax=ax, node_color=node_colours, node_size=1400,
                           edgecolors="black", linewidths=0.8)
    nx.draw_networkx_labels(g, positions, ax=ax, font_size=7)
    labels = {}
    for (u, v), conf in confidence.items():
        if g.has_edge(u, v):
            text = f"{conf.get('probability', np.nan):.2f}"
            if conf.get("direction", 1.0) < 1.0:
                text += f" ({conf['direction']:.2f})"
            labels[(u, v)] = text
    if labels:
        nx.draw_networkx_edge_labels(g, positions, edge_labels=labels, ax=ax, font_size=6,
                                     label_pos=0.4)
    ax.legend(handles=[Patch(facecolor=palette[b], edgecolor="black", label=b) for b in blocks],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="block")
    ax.set_title(title or "edge width: bootstrap probability (direction probability)")
    ax.set_axis_off()
    fig.tight_layout()
    fig.edge_widths = widths
    return fig


__all__ = ["plot_graph", "BLOCK_COLOURS"]
