"""Figures of a search run (visualize.py --run): the cells derived at chosen epochs side by side,
and the architecture weights as heatmaps.

The cells come from the run's weights/epoch_NNN.npy (what train_search.py saves after each
epoch: the weights the parse rule sees, (sets, edges, ops)), parsed with the rule and threshold
of its args.json by cnn/derive.py, and drawn with cell_diagram.cell_graph.
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import graphviz
import matplotlib.image
import numpy as np

from derive import DeriveError, edge_count, parse_cell
from errors import UserError
from genotypes import PRIMITIVE_SETS, CellGenes, Edge
from model import default_reductions
from plots import image_grid, weight_heatmaps
from cell_diagram import cell_graph, node_name

CELLS_PER_ROW = 4


class RunError(UserError):
    """A search run folder that --run cannot draw, said in one sentence."""


@dataclass(frozen=True)
class RunSettings:
    """What turns a search run's saved weights into cells: from its args.json."""
    primitives: tuple[str, ...]
    steps: int
    multiplier: int
    layout: str               # "shared", "per_cell" or "baseline" (DARTOpti genes)
    parse_method: str
    op_threshold: float


def run_settings(run: Path) -> RunSettings:
    path = run / "args.json"
    try:
        args = json.loads(path.read_text())["args"]
        return RunSettings(tuple(PRIMITIVE_SETS[args["primitives"]]), int(args["steps"]), int(args["multiplier"]),
                           args.get("layout", "shared"), args["parse_method"], float(args["op_threshold"]))
    except OSError as e:
        raise RunError(f"{path} cannot be read ({e.strerror or e}); --run takes a train_search.py run folder") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} is not the args.json of a train_search.py run ({type(e).__name__}: {e})") from None


def recorded_epochs(run: Path) -> dict[int, Path]:
    """weights/epoch_NNN.npy of the run, by epoch."""
    folder = run / "weights"
    if not folder.is_dir():
        raise RunError(f"{run} has no weights/ folder: --run takes a train_search.py run folder such as "
                       f"logs/search/<run>")
    files = {int(p.stem.removeprefix("epoch_")): p for p in folder.glob("epoch_*.npy")
             if p.stem.removeprefix("epoch_").isdigit()}
    if not files:
        npz = " (it searched multi-channel widths, which have no cells)" if any(folder.glob("*.npz")) else ""
        raise RunError(f"{folder} holds no epoch_NNN.npy weights{npz}")
    return dict(sorted(files.items()))


def choose_epochs(text: str | None, recorded: dict[int, Path]) -> list[int]:
    """The epochs asked for ('1,10,50'); by default the first, middle and last recorded."""
    available = list(recorded)
    if text is None:
        return sorted({available[0], available[len(available) // 2], available[-1]})
    try:
        epochs = [int(part) for part in text.split(",")]
    except ValueError:
        raise RunError(f"--epochs takes epoch numbers separated by commas, such as 1,10,50, not {text!r}") from None
    missing = [e for e in epochs if e not in recorded]
    if missing:
        raise RunError(f"epoch {missing[0]} has no weights in this run; it recorded epochs {available[0]} to "
                       f"{available[-1]}" + ("" if len(available) == available[-1] - available[0] + 1
                                             else f" ({len(available)} of them)"))
    return list(dict.fromkeys(epochs))


def set_names(settings: RunSettings, n_sets: int) -> list[str]:
    """As the search names its weight sets; per-cell sets say which cells reduce."""
    if settings.layout == "shared":
        return ["normal cell", "reduction cell"]
    if settings.layout == "baseline":
        return [f"gene {k}" for k in range(n_sets)]
    reductions = default_reductions(n_sets)
    return [f"cell {k}" + (" (reduction)" if k in reductions else "") for k in range(n_sets)]


def derived_cell(weights: np.ndarray, settings: RunSettings) -> CellGenes:
    """One weight set -> the cell its parse rule keeps (possibly with no edge, early in a threshold search)."""
    gene = parse_cell(weights, settings.primitives, settings.steps, settings.parse_method, settings.op_threshold)
    if settings.parse_method == "darts":   # two (op, from) pairs per node, nodes in order
        edges = tuple(Edge(op, 2 + k // 2, source) for k, (op, source) in enumerate(gene))
    else:
        edges = tuple(Edge(*triple) for triple in gene)
    if settings.layout == "shared":
        concat = tuple(range(2 + settings.steps - settings.multiplier, settings.steps + 2))
    else:   # a nested cell concatenates every node it computes
        concat = tuple(sorted({e.to_node for e in edges}))
    return CellGenes(edges=edges, concat=concat)


def edge_labels(steps: int) -> list[str]:
    """The rows of a weight set: node 2 takes inputs 0, 1; node 3 takes 0, 1, 2; ..."""
    return [f"{node_name(source)} → {node_name(i + 2)}" for i in range(steps) for source in range(i + 2)]


def load_weights(path: Path, settings: RunSettings) -> np.ndarray:
    try:
        weights = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RunError(f"{path} cannot be read as weights ({e})") from None
    expected = (edge_count(settings.steps), len(settings.primitives))
    if weights.ndim != 3 or weights.shape[1:] != expected:
        raise RunError(f"{path} holds weights of shape {weights.shape}, but the run's args.json gives "
                       f"(sets, {expected[0]}, {expected[1]})")
    return weights


def _png(graph: graphviz.Digraph) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(graph.pipe(format="png")), format="png")


def draw_run(run: Path, epochs_text: str | None, out_dir: Path) -> list[Path]:
    """The cells derived at the chosen epochs in one image, and the weights as heatmaps."""
    if shutil.which("dot") is None:
        raise RunError("--run draws the cells with graphviz's `dot`, which is not on PATH: install it "
                       "(apt-get install graphviz, conda install graphviz or brew install graphviz)")
    recorded = recorded_epochs(run)
    settings = run_settings(run)
    epochs = choose_epochs(epochs_text, recorded)
    cell_rows, heatmap_rows = [], []
    for epoch in epochs:
        weights = load_weights(recorded[epoch], settings)
        names = set_names(settings, len(weights))
        try:
            cells = [derived_cell(w, settings) for w in weights]
        except DeriveError as e:
            raise RunError(f"{recorded[epoch]}: {e}") from None
        panels = [_png(cell_graph(cell, f"epoch {epoch}: {name}")) for cell, name in zip(cells, names)]
        cell_rows += [panels[i:i + CELLS_PER_ROW] for i in range(0, len(panels), CELLS_PER_ROW)]
        heatmap_rows.append((f"epoch {epoch}", list(zip(names, weights))))
    stem = "epochs_" + "-".join(map(str, epochs))
    return [image_grid(cell_rows, out_dir / f"cells_{stem}.png"),
            weight_heatmaps(heatmap_rows, list(settings.primitives), edge_labels(settings.steps),
                            out_dir / f"weights_{stem}.png")]
