"""The D-DARTS architecture distance (the DARTOpti metric), numpy only.

    python cnn/arch_distance.py ResNet18 ResNet50          # names in genotypes/ or file paths
    cd cnn && python arch_distance.py ResNet18 path/to/genotype.txt

What it computes, as D-DARTS's ``architecture_processing.hausdorff_metric`` does:

1. Each genotype becomes an array ``(n_genes, n_edges, 12)``: for every edge
   ``(op, to, from)`` of gene ``g``, entry ``[g, row(to) + from, op]`` is 10.0, where rows
   follow the DARTS edge order (node 2 has rows 0-1, node 3 rows 2-4, ...) and columns
   the 12-op ``DDARTS_12`` set; everything else is 0. Two ops on one edge make a row with
   two 10.0 entries. ``n_edges`` covers every node the genotype uses, and at least
   ``steps`` = 4 nodes (D-DARTS takes the node count from the written ``concat``; for every
   shipped genotype that is the same number). The genes are the *distinct* genes:
   a ``Genotype_opt`` (ResNet18, ResNet50, Xception) counts each gene once whatever ``seq``
   repeats it, and a classic DARTS genotype has two, normal and reduce.
2. Two rows are compared with the weighted Hamming distance: the sum of the op statistics
   (``ddarts_op_stats.json``, median accuracies per op) over the columns where the rows
   differ, divided by the sum of all 12 statistics.
3. Two cells are compared with the symmetric Hausdorff distance between their sets of
   rows: the larger of the two directed distances ``max_row min_row' d(row, row')``.
4. Cells are paired in order and the pairs stop at the shorter genotype (D-DARTS's
   ``zip``): ResNet18 (one gene) against ResNet50 (three) compares one pair. The distance
   is the mean over the pairs; it is symmetric by construction (D-DARTS takes the larger
   of both orders, which are equal).

The published figures are reproduced to the last printed digit: ResNet18-ResNet50
0.0836299697, ResNet18-Xception 0.0841555475, ResNet50-Xception 0.1385269409.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import core_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import numpy as np

import cli
from derive import DeriveError, edge_count, parse_cell
from errors import UserError
from genotypes import PRIMITIVE_SETS, Architecture, load_architecture

__all__ = ["DistanceError", "OP_STATS_FILE", "ONE_HOT_VALUE", "load_op_stats", "genotype_matrix",
           "matrix_distance", "architecture_distance", "weights_distance", "main"]

OP_STATS_FILE = Path(__file__).resolve().with_name("ddarts_op_stats.json")
DDARTS_12 = PRIMITIVE_SETS["DDARTS_12"]
ONE_HOT_VALUE = 10.0          # what D-DARTS writes for a chosen op
NONE_OP = "none"


class DistanceError(UserError, ValueError):
    """Input the distance cannot be computed for; the message is one sentence."""


# ----------------------------------------------------------------------------------------
# Op statistics
# ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _op_stats() -> tuple[float, ...]:
    try:
        data = json.loads(OP_STATS_FILE.read_text(encoding="utf-8"))
    except OSError as e:
        raise DistanceError(f"cannot read the op statistics {OP_STATS_FILE} "
                            f"({e.strerror or e}); restore it from the repository") from None
    except ValueError as e:
        raise DistanceError(f"{OP_STATS_FILE} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or set(data) != set(DDARTS_12):
        raise DistanceError(f"{OP_STATS_FILE} must map exactly the 12 ops of DDARTS_12 to numbers")
    values = []
    for op in DDARTS_12:
        v = data[op]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
            raise DistanceError(f"{OP_STATS_FILE}: the statistic of {op} must be a positive "
                                f"number, found {v!r}")
        values.append(float(v))
    return tuple(values)


def load_op_stats() -> np.ndarray:
    """The 12 per-op weights of the Hamming distance, in DDARTS_12 order (a fresh array)."""
    return np.array(_op_stats(), dtype=np.float64)


# ----------------------------------------------------------------------------------------
# Genotypes -> matrices
# ----------------------------------------------------------------------------------------

def _row(to_node: int) -> int:
    """First row of node `to_node` in the DARTS edge order (node 2 -> 0, 3 -> 2, 4 -> 5)."""
    return edge_count(to_node - 2)


def genotype_matrix(arch: Architecture, primitives: Sequence[str] = DDARTS_12,
                    steps: int = 4) -> np.ndarray:
    """(n_genes, n_edges, n_ops) array with 10.0 at each chosen (edge, op), as D-DARTS builds it.

    One slice per distinct gene (``arch.cells``); ``n_edges`` is that of
    ``max(steps, highest node - 1)`` steps. Columns follow ``primitives``.
    """
    if not isinstance(arch, Architecture):
        raise DistanceError(f"expected an Architecture (genotypes.load_architecture), "
                            f"got {type(arch).__name__}")
    names = tuple(primitives)
    column = {op: k for k, op in enumerate(names)}
    top = max(e.to_node for cell in arch.cells for e in cell.edges)
    n_steps = max(int(steps), top - 1)
    matrix = np.zeros((len(arch.cells), edge_count(n_steps), len(names)))
    for g, cell in enumerate(arch.cells):
        where = f"the {('normal', 'reduce')[g]} cell" if arch.shared and g < 2 else f"gene {g}"
        for op, to_node, from_node in cell.edges:
            if op not in column:
                raise DistanceError(f"{arch.name}: op {op!r} of {where} is not one of the "
                                    f"primitives the distance knows ({', '.join(names)})")
            if from_node >= to_node:
                raise DistanceError(f"{arch.name}: edge ({op!r}, {to_node}, {from_node}) of "
                                    f"{where} comes from a later node and has no place in the "
                                    f"DARTS edge order")
            matrix[g, _row(to_node) + from_node, column[op]] = ONE_HOT_VALUE
    return matrix


# ----------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------

def _cell_distance(c1: np.ndarray, c2: np.ndarray, stats: np.ndarray) -> float:
    """Symmetric Hausdorff distance between the rows of two cells."""
    differ = c1[:, None, :] != c2[None, :, :]
    # sum(w * differ) / sum(w), summed as np.average does: that is scipy's weighted hamming
    # of D-DARTS's time (scipy >= 1.12 normalises w first and takes a dot product, which can
    # differ in the last bit), so the published figures come out bit for bit.
    d = np.multiply(differ, stats, dtype=np.float64).sum(axis=-1) / stats.sum(dtype=np.float64)
    return max(d.min(axis=1).max(), d.min(axis=0).max())


def _as_cells(a, what: str) -> np.ndarray:
    array = np.asarray(a)
    if array.dtype.kind not in "fiu":
        raise DistanceError(f"{what} must be an array of real numbers, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DistanceError(f"{what} must have shape (n_cells, n_edges, n_ops) with at least one "
                            f"cell and edge, got shape {array.shape}")
    return array


def matrix_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The distance between two (n_cells, n_edges, 12) arrays of genotype_matrix's form.

    Entries are compared for equality, as the Hamming distance does; cells pair in order up
    to the shorter array; edge counts may differ.
    """
    a, b = _as_cells(a, "a"), _as_cells(b, "b")
    stats = load_op_stats()
    for what, m in (("a", a), ("b", b)):
        if m.shape[2] != len(stats):
            raise DistanceError(f"{what} has {m.shape[2]} op columns; the distance needs the 12 "
                                f"of DDARTS_12, in that order")
    cells = [_cell_distance(x, y, stats) for x, y in zip(a, b)]
    return float(np.mean(cells))


def architecture_distance(a: Architecture, b: Architecture) -> float:
    """D-DARTS's distance between two architectures (see the module docstring)."""
    return matrix_distance(genotype_matrix(a), genotype_matrix(b))


def _selected(weights: np.ndarray, primitives: tuple[str, ...], op_threshold: float,
              what: str) -> np.ndarray:
    """Raw weights -> genotype_matrix's form of the threshold_edge genotype they give."""
    n_cells, n_edges, n_ops = weights.shape
    if n_ops != len(primitives):
        raise DistanceError(f"{what} has {n_ops} op columns but {len(primitives)} primitives "
                            f"were named")
    steps = next((s for s in range(1, n_edges + 1) if edge_count(s) >= n_edges), 0)
    if edge_count(steps) != n_edges:
        raise DistanceError(f"{what} has {n_edges} edges, which no number of steps gives "
                            f"(4 steps have 14, 5 have 20)")
    column = {op: k for k, op in enumerate(DDARTS_12)}
    unknown = [op for op in primitives if op != NONE_OP and op not in column]
    if unknown:
        raise DistanceError(f"{what}: op {unknown[0]!r} is not in DDARTS_12, so the op "
                            f"statistics give it no weight")
    matrix = np.zeros((n_cells, n_edges, len(DDARTS_12)))
    for c in range(n_cells):
        try:
            triples = parse_cell(weights[c], primitives, steps, "threshold_edge", op_threshold)
        except DeriveError as e:
            raise DistanceError(f"{what}: {e}") from None
        for op, to_node, from_node in triples:
            matrix[c, _row(to_node) + from_node, column[op]] = ONE_HOT_VALUE
    return matrix


def weights_distance(a: np.ndarray, b: np.ndarray, *, primitives: Sequence[str] = DDARTS_12,
                     op_threshold: float = 0.85) -> float:
    """The distance between the architectures two raw weight arrays stand for.

    ``a`` and ``b`` are ``(n_cells, n_edges, n_ops)`` arrays of weighted values (sigmoids in
    D-DARTS), columns in ``primitives`` order. Each cell is parsed with the ``threshold_edge``
    rule at ``op_threshold``, as D-DARTS does before logging the metric each epoch, and the
    result compared as ``matrix_distance`` does. A ``genotype_matrix`` array with at most two
    ops per edge passes through unchanged (its 10.0 entries pass any threshold up to 10), so
    a hand-made baseline can be given that way. 'none' columns are never chosen.
    """
    names = tuple(primitives)
    return matrix_distance(_selected(_as_cells(a, "a"), names, op_threshold, "a"),
                           _selected(_as_cells(b, "b"), names, op_threshold, "b"))


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="arch_distance.py",
        description="Print the D-DARTS architecture distance between two genotypes "
                    "(names in genotypes/ or genotype file paths).")
    parser.add_argument("first", help="genotype name (e.g. ResNet18) or file path")
    parser.add_argument("second", help="genotype name (e.g. ResNet50) or file path")
    args = parser.parse_args(argv)
    print(repr(architecture_distance(load_architecture(args.first), load_architecture(args.second))))
    return 0


if __name__ == "__main__":
    cli.run(main)
