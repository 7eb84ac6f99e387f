"""Draw the cells of a genotype with graphviz, or how a search run's cells changed.

    python cnn/visualize.py DARTS_V2                 # from the repository root
    cd cnn && python visualize.py DARTS_V2 --format png
    python cnn/visualize.py --run logs/search/<run> --epochs 1,10,50

A shared-layout genotype (DARTS, sharpDARTS) gives `<NAME>_normal` and `<NAME>_reduce`;
a per-cell genotype (D-DARTS) gives one `<NAME>_cell<k>` per distinct gene k.

With --run (cnn/search_figures.py), the cells derived from the run's weights/epoch_NNN.npy at each chosen epoch (with
the run's --parse_method and --op_threshold from its args.json) are drawn side by side in
`cells_epochs_<list>.png`, one row per epoch (a per-cell run: every cell, four to a row), and the
weights themselves as heatmaps (edges down, ops across, one per weight set and epoch) in
`weights_epochs_<list>.png`, both in <run>/figures unless --out says otherwise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import graphviz

import cli
from cell_diagram import cell_graph
from diagrams import drawing_parser, render, write_diagrams
from errors import UserError
from genotypes import Architecture, load_architecture


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = drawing_parser(__doc__, "genotype name (a file in genotypes/) or path to a genotype file")
    parser.add_argument("--run", type=Path, default=None,
                        help="a train_search.py run folder: draw its derived cells and its weights at --epochs "
                             "(PNG, in the run's figures/ folder unless --out says otherwise)")
    parser.add_argument("--epochs", default=None,
                        help="with --run: epochs to draw, e.g. 1,10,50 (default: the first, middle and last recorded)")
    args = parser.parse_args(argv)
    if (args.arch is None) == (args.run is None):
        parser.error("give a genotype to draw, or --run with a search run folder (not both)")
    if args.arch is not None and Path(args.arch).is_dir():
        parser.error(f"{args.arch} is a folder, not a genotype: to draw a search run, give --run {args.arch}")
    if args.run is not None and (args.format not in (None, "png") or args.keep_source):
        parser.error("--run writes PNG images: drop --format and --keep_source")
    if args.run is None and args.epochs is not None:
        parser.error("--epochs chooses the epochs of a search run: add --run logs/search/<run>")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the diagrams (or, without `dot`, their sources) are written; 2 for bad input."""
    args = parse_args(argv)
    if args.arch is not None:
        return write_diagrams(_diagrams(load_architecture(args.arch)), args)
    from search_figures import draw_run   # here: it loads matplotlib and torch, which a genotype does not need
    out = args.out or args.run / "figures"
    try:
        written = draw_run(args.run, args.epochs, out)
    except OSError as err:
        raise UserError(f"cannot write the figures to {out}: {err}") from err
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    cli.run(main)
