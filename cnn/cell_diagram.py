"""A CNN cell as a graphviz diagram, drawn by cnn/visualize.py and cnn/search_figures.py alike."""
from __future__ import annotations

import graphviz

from diagrams import INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR, new_graph, writable
from genotypes import CellGenes

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"


def node_name(node: int) -> str:
    """Cell inputs keep the DARTS names; intermediate nodes count from 0 as in the papers' figures."""
    return INPUT_NAMES[node] if node < len(INPUT_NAMES) else str(node - len(INPUT_NAMES))


def cell_graph(cell: CellGenes, label: str) -> graphviz.Digraph:
    """One cell as a left-to-right graph, every node present even when nothing feeds it."""
    graph = new_graph(label)
    for name in INPUT_NAMES:
        graph.node(name, fillcolor=INPUT_COLOR)
    mentioned = [n for e in cell.edges for n in (e.to_node, e.from_node)] + list(cell.concat)
    last = max(mentioned, default=len(INPUT_NAMES) - 1)
    for node in range(len(INPUT_NAMES), last + 1):
        graph.node(node_name(node), fillcolor=NODE_COLOR)
    for edge in cell.edges:
        graph.edge(node_name(edge.from_node), node_name(edge.to_node), label=writable(edge.op),
                   fillcolor="gray")
    graph.node(OUTPUT_NAME, fillcolor=OUTPUT_COLOR)
    for node in cell.concat:
        graph.edge(node_name(node), OUTPUT_NAME, fillcolor="gray")
    return graph
