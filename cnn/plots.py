"""The PNG figures of a study and of a search run (matplotlib, Agg: files only, never a window).

summarize_results.py draws the test accuracy per epoch of many runs (one colour per genotype,
the mean and a mean ± std band) and the accuracy against parameters and MACs; visualize.py
--run draws the architecture weights of a search run as heatmaps, and its cell diagrams as one
image. Every file is written atomically (a temporary file, then a rename).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100
MARKERS = {"searched": "o", "random": "X", "other": "^"}


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write the figure as PNG through a temporary file in the same folder, then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def genotype_colours(names: list[str]) -> dict[str, tuple]:
    """One colour per genotype, the same in every figure of a study (tab10, tab20 beyond 10)."""
    ordered = sorted(set(names))
    cmap = matplotlib.colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(ordered)}


def accuracy_per_epoch(curves: dict[str, list[dict[int, float]]], path: Path) -> Path:
    """Thin lines: each run's test top-1 per epoch; thick line and band: the genotype's mean ± std
    over the runs that reached that epoch."""
    colours = genotype_colours(list(curves))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in sorted(curves):
        runs, colour = curves[name], colours[name]
        for run in runs:
            epochs = sorted(run)
            ax.plot(epochs, [run[e] for e in epochs], color=colour, alpha=0.35, linewidth=0.8)
        epochs = sorted({e for run in runs for e in run})
        values = [[run[e] for run in runs if e in run] for e in epochs]
        mean = np.array([np.mean(v) for v in values])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
        ax.plot(epochs, mean, color=colour, linewidth=2.2, marker="o" if len(epochs) < 3 else None,
                label=f"{name} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("test accuracy per epoch: runs, mean and mean ± std")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass(frozen=True)
class GenotypePoint:
    """One genotype of a study: its size and its mean ± std final test top-1."""
    name: str
    origin: str            # "searched", "random" or "other" (published or hand-made)
    params_m: float | None
    macs_m: float | None
    mean: float
    std: float | None


def accuracy_against_size(points: list[GenotypePoint], path: Path) -> Path:
    """Two panels: mean final test top-1 (error bar: std over runs) against params and against MACs."""
    colours = genotype_colours([p.name for p in points])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, attribute, label in ((axes[0], "params_m", "parameters (M)"), (axes[1], "macs_m", "MACs (M)")):
        for point in points:
            x = getattr(point, attribute)
            if x is None:
                continue
            ax.errorbar(x, point.mean, yerr=point.std or 0.0, fmt=MARKERS[point.origin], color=colours[point.name],
                        markersize=8, capsize=4)
            ax.annotate(point.name, (x, point.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.margins(x=0.15)     # room for the name beside the rightmost point
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("final test top-1 (%), mean ± std")
    handles = [plt.Line2D([], [], linestyle="", marker=MARKERS[k], color="gray", label=f"{k} genotype")
               for k in MARKERS if any(p.origin == k for p in points)]
    # below the panels: inside them it covered the points of a study whose genotypes sit low and right
    fig.legend(handles=handles, fontsize="small", loc="lower center", ncol=max(len(handles), 1), frameon=False)
    fig.suptitle("accuracy against size, one point per genotype")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path)


def weight_heatmaps(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], primitives: list[str],
                    edge_labels: list[str], path: Path) -> Path:
    """A grid of heatmaps, one row per (title, sets) entry (an epoch) and one column per weight
    set, edges down and ops across, on one colour scale from the smallest to the largest weight
    shown (early softmax weights differ little, and a 0-1 scale would hide it)."""
    n_rows, n_cols = len(rows), max(len(sets) for _, sets in rows)
    low = min(float(w.min()) for _, sets in rows for _, w in sets)
    high = max(float(w.max()) for _, sets in rows for _, w in sets)
    width = 0.26 * len(primitives) + 0.8
    height = 0.22 * len(edge_labels) + 0.6
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols + 2.2, height * n_rows + 1.6), squeeze=False,
                             layout="constrained")
    image = None
    for r, (title, sets) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c >= len(sets):
                ax.axis("off")
                continue
            name, w = sets[c]
            image = ax.imshow(w, vmin=low, vmax=max(high, low + 1e-12), cmap="viridis", aspect="auto")
            ax.set_title(f"{title}: {name}", fontsize=9)
            ax.set_xticks(range(len(primitives)))
            ax.set_xticklabels(primitives if r == n_rows - 1 else [], rotation=90, fontsize=7)
            ax.set_yticks(range(len(edge_labels)))
            ax.set_yticklabels(edge_labels if c == 0 else [], fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight the parse rule sees")
    return save_figure(fig, path)


def image_grid(rows: list[list[np.ndarray]], path: Path, gap: int = 16) -> Path:
    """Images (H, W, channels) placed unscaled, row by row, on a white page."""
    heights = [max(im.shape[0] for im in row) for row in rows]
    width = max(sum(im.shape[1] for im in row) + gap * (len(row) - 1) for row in rows)
    height = sum(heights) + gap * (len(rows) - 1)
    fig = plt.figure(figsize=(width / DPI, height / DPI), facecolor="white")
    top = height
    for row, row_height in zip(rows, heights):
        left = 0
        top -= row_height
        for im in row:
            fig.figimage(im, xo=left, yo=top + row_height - im.shape[0], origin="upper")
            left += im.shape[1] + gap
        top -= gap
    return save_figure(fig, path)
