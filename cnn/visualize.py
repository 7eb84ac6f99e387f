"""Draw the cells of a genotype with graphviz.

    python cnn/visualize.py DARTS_V2                 # from the repository root
    cd cnn && python visualize.py DARTS_V2 --format png

A shared-layout genotype (DARTS, sharpDARTS) gives `<NAME>_normal` and `<NAME>_reduce`;
a per-cell genotype (D-DARTS) gives one `<NAME>_cell<k>` per distinct gene k.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import graphviz

import core_path  # noqa: F401  (puts core/ on the import path)
import cli
from errors import UserError
from genotypes import Architecture, CellGenes, load_architecture
from paths import LOGS_DIR

FORMATS = ("pdf", "png", "svg")
DEFAULT_OUT_DIR = LOGS_DIR / "visualize"
INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NAME = "c_{k}"
INSTALL_HINT = ("Graphviz's `dot` program is not on PATH, so only the .gv sources were written: "
                "install it (apt-get install graphviz, conda install graphviz or "
                "brew install graphviz) and run again, or render them with `dot -Tpdf FILE.gv`.")


def _node_name(node: int) -> str:
    """Cell inputs keep the DARTS names; intermediate nodes count from 0 as in the papers' figures."""
    return INPUT_NAMES[node] if node < len(INPUT_NAMES) else str(node - len(INPUT_NAMES))


def _writable(text: str) -> str:
    """The text as a literal graphviz label: what UTF-8 cannot write (a lone surrogate, from an escape
    such as '\\ud800' in an op name) shown as its escape, and backslashes drawn as themselves."""
    return graphviz.escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def cell_graph(cell: CellGenes, label: str) -> graphviz.Digraph:
    """One cell as a left-to-right graph, every node present even when nothing feeds it."""
    graph = graphviz.Digraph(
        graph_attr={"rankdir": "LR", "label": _writable(label), "labelloc": "t", "fontsize": "20",
                    "fontname": "helvetica"},
        node_attr={"style": "filled", "shape": "rect", "penwidth": "2", "fontsize": "20",
                   "fontname": "helvetica"},
        edge_attr={"fontsize": "20", "fontname": "times"},
    )
    for name in INPUT_NAMES:
        graph.node(name, fillcolor="darkseagreen2")
    mentioned = [n for e in cell.edges for n in (e.to_node, e.from_node)] + list(cell.concat)
    last = max(mentioned, default=len(INPUT_NAMES) - 1)
    for node in range(len(INPUT_NAMES), last + 1):
        graph.node(_node_name(node), fillcolor="lightblue")
    for edge in cell.edges:
        graph.edge(_node_name(edge.from_node), _node_name(edge.to_node), label=_writable(edge.op),
                   fillcolor="gray")
    graph.node(OUTPUT_NAME, fillcolor="palegoldenrod")
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
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    can_render = shutil.which("dot") is not None
    written = []
    for stem, graph in _diagrams(arch):
        source = out_dir / f"{stem}.gv"
        if can_render:
            rendered = out_dir / f"{stem}.{fmt}"
            graph.render(filename=source, outfile=rendered, cleanup=not keep_source)
            written.append(rendered)
            if keep_source:
                written.append(source)
        else:
            graph.save(filename=source)
            written.append(source)
    return written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", help="genotype name (a file in genotypes/) or path to a genotype file")
    parser.add_argument("--format", default="pdf", choices=FORMATS, help="output format (default: pdf)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR,
                        help="output folder (default: logs/visualize in the repository, "
                             "whatever the current directory)")
    parser.add_argument("--keep_source", action="store_true",
                        help="keep the graphviz .gv sources next to the rendered files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the diagrams (or, without `dot`, their sources) are written; 2 for bad input."""
    args = parse_args(argv)
    arch = load_architecture(args.arch)
    try:
        written = draw_architecture(arch, args.out, args.format, keep_source=args.keep_source)
    except (OSError, graphviz.CalledProcessError) as err:
        raise UserError(f"cannot write the diagrams to {args.out}: {err}") from err
    for path in written:
        print(path)
    if shutil.which("dot") is None:
        print(INSTALL_HINT, file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
