"""Graphviz diagrams of cells, in one style for both domains (cnn/visualize.py, rnn/visualize.py)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Callable

import graphviz

import cli
from errors import UserError
from paths import LOGS_DIR

FORMATS = ("pdf", "png", "svg")
INSTALL_HINT = ("Graphviz's `dot` program is not on PATH, so only the .gv sources were written: "
                "install it (apt-get install graphviz, conda install graphviz or "
                "brew install graphviz) and run again, or render them with `dot -Tpdf FILE.gv`.")
DEFAULT_OUT_DIR = LOGS_DIR / "visualize"
INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR = "darkseagreen2", "lightblue", "palegoldenrod"


def writable(text: str) -> str:
    """The text as a literal graphviz label: what UTF-8 cannot write (a lone surrogate, from an escape
    such as '\\ud800' in an op name) shown as its escape, and backslashes drawn as themselves."""
    return graphviz.escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def new_graph(label: str) -> graphviz.Digraph:
    """An empty left-to-right graph titled `label`, in the style of the DARTS figures."""
    return graphviz.Digraph(
        graph_attr={"rankdir": "LR", "label": writable(label), "labelloc": "t", "fontsize": "20",
                    "fontname": "helvetica"},
        node_attr={"style": "filled", "shape": "rect", "penwidth": "2", "fontsize": "20",
                   "fontname": "helvetica"},
        edge_attr={"fontsize": "20", "fontname": "times"},
    )


def render(diagrams: list[tuple[str, graphviz.Digraph]], out_dir: Path, fmt: str, *,
           keep_source: bool = False) -> list[Path]:
    """Write each (file stem, graph) and return every file written.

    Without `dot` on PATH the `.gv` sources are the result, since they render anywhere later.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    can_render = shutil.which("dot") is not None
    written = []
    for stem, graph in diagrams:
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


def drawing_parser(description: str, arch_help: str) -> argparse.ArgumentParser:
    """The flags of both visualize.py scripts; --format and --out stay None when not given, so that a
    script can tell them apart from the defaults (``write_diagrams`` fills them in)."""
    parser = cli.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", nargs="?", help=arch_help)
    parser.add_argument("--format", default=None, choices=FORMATS, help="output format (default: pdf)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: logs/visualize in the repository, whatever the current directory)")
    parser.add_argument("--keep_source", action="store_true",
                        help="keep the graphviz .gv sources next to the rendered files")
    return parser


def write_diagrams(diagrams: list[tuple[str, graphviz.Digraph]], args: argparse.Namespace) -> int:
    """Render into ``args.out`` and list the files written. Exit status 0 when the diagrams (or,
    without `dot`, their sources) are written; a folder that cannot be written is one sentence."""
    out = args.out or DEFAULT_OUT_DIR
    try:
        written = render(diagrams, out, args.format or "pdf", keep_source=args.keep_source)
    except (OSError, graphviz.CalledProcessError) as err:
        raise UserError(f"cannot write the diagrams to {out}: {err}") from err
    for path in written:
        print(path)
    if shutil.which("dot") is None:
        print(INSTALL_HINT, file=sys.stderr)
    return 0


def draw_command(argv: list[str] | None, description: str, arch_help: str,
                 diagrams_of: Callable[[str], list[tuple[str, graphviz.Digraph]]]) -> int:
    """A visualize.py command line that draws one genotype: `diagrams_of(arch)` written into --out."""
    parser = drawing_parser(description, arch_help)
    args = parser.parse_args(argv)
    if args.arch is None:
        parser.error("give the genotype to draw")
    return write_diagrams(diagrams_of(args.arch), args)
