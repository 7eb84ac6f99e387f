"""Draw the cells of a genotype with graphviz.

    python cnn/visualize.py DARTS_V2                 # from the repository root
    cd cnn && python visualize.py DARTS_V2 --format png

A shared-layout genotype (DARTS, sharpDARTS) gives `<NAME>_normal` and `<NAME>_reduce`;
a per-cell genotype (D-DARTS) gives one `<NAME>_cell<k>` per distinct gene k.
"""
from __future__ import annotations

from pathlib import Path

import graphviz

import core_path  # noqa: F401  (puts core/ on the import path)
import cli
from diagrams import INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR, draw_command, new_graph, render, writable
from genotypes import Architecture, CellGenes, load_architecture

INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"


def _node_name(node: int) -> str:
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
        graph.node(_node_name(node), fillcolor=NODE_COLOR)
    for edge in cell.edges:
        graph.edge(_node_name(edge.from_node), _node_name(edge.to_node), label=writable(edge.op),
                   fillcolor="gray")
    graph.node(OUTPUT_NAME, fillcolor=OUTPUT_COLOR)
    for node in cell.concat:
        graph.edge(_node_name(node), OUTPUT_NAME, fillcolor="gray")
    return graph


def _layers_text(layers: list[int]) -> str:
    return f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"


def _diagrams(arch: Architecture) -> list[tuple[str, graphviz.Digraph]]:
    """(file stem, graph) for each cell a reader needs to see: both shared cells, or each used gene."""
    if arch.shared:
        normal, reduce = arch.cells
        return [(f"{arch.name}_normal", cell_graph(normal, f"{arch.name}: normal cell")),
                (f"{arch.name}_reduce", cell_graph(reduce, f"{arch.name}: reduction cell"))]
    reductions = set(arch.reductions or ())
    diagrams = []
    for gene in sorted(set(arch.layer_genes)):
        layers = [layer for layer, g in enumerate(arch.layer_genes) if g == gene]
        reducing = [layer for layer in layers if layer in reductions]
        label = f"{arch.name}: gene {gene}: {_layers_text(layers)}"
        if reducing == layers:
            label += " (reduction)"
        elif reducing:
            label += f" (reduction at {_layers_text(reducing)})"
        diagrams.append((f"{arch.name}_cell{gene}", cell_graph(arch.cells[gene], label)))
    return diagrams


def draw_architecture(arch: Architecture, out_dir: Path, fmt: str, *,
                      keep_source: bool = False) -> list[Path]:
    """Write the diagrams and return every file written.

    Without `dot` on PATH the `.gv` sources are the result, since they render anywhere later.
    """
    return render(_diagrams(arch), out_dir, fmt, keep_source=keep_source)


def main(argv: list[str] | None = None) -> int:
    return draw_command(argv, __doc__, "genotype name (a file in genotypes/) or path to a genotype file",
                        lambda name: _diagrams(load_architecture(name)))


if __name__ == "__main__":
    cli.run(main)
