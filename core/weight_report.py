"""Architecture weights as people read them: named tables in the log, scalars in tensorboard, and a
heatmap image per epoch (a matrix of numbers is hard to read; a picture of it is not).

A supernet reports its weights as ``{set name: WeightTable}``: one 2-D array per set of
architecture weights, its rows (edges, or grid positions) and columns (ops) named.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textfiles import write_bytes_atomic


@dataclass(frozen=True)
class WeightTable:
    values: np.ndarray       # (rows, columns)
    rows: list[str]
    columns: list[str]


def log_tables(log: logging.Logger, tables: dict[str, WeightTable]) -> None:
    with np.printoptions(precision=3, suppress=True, linewidth=160):
        for name, table in tables.items():
            log.info("weights %s (rows: %s, columns: %s)\n%s", name, ", ".join(table.rows),
                     ", ".join(table.columns), table.values)


def tensorboard_tables(writer, tables: dict[str, WeightTable], epoch: int) -> None:
    """One scalar per weight: arch/<set>/<row>/<column>."""
    for name, table in tables.items():
        for row, values in zip(table.rows, table.values):
            for column, value in zip(table.columns, values):
                writer.add_scalar(f"arch/{name}/{row}/{column}", float(value), epoch)


# viridis at 0, 1/8, ..., 1: dark blue for low weights, yellow for high ones, readable in grey too
_VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                     (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float64)
CELL = (38, 17)      # pixels per weight (width, height)


def colour(value: float) -> tuple[int, int, int]:
    """viridis at `value` in [0, 1], linearly between its anchors."""
    x = min(max(value, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    return tuple(int(round(c)) for c in _VIRIDIS[i] + (x - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i]))


def heatmap_png(path: Path, tables: dict[str, WeightTable], title: str) -> None:
    """One heatmap per table side by side, each weight written in its cell, colours from 0 to the
    largest weight; drawn with Pillow (milliseconds, where matplotlib takes seconds) and written
    atomically (a reader never sees half an image)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    width_of = lambda text: int(measure.textlength(text, font=font))  # noqa: E731
    high = max(float(np.max(t.values)) for t in tables.values()) or 1.0
    label_height = max(width_of(c) for t in tables.values() for c in t.columns) + 6
    rows_width = {name: max(width_of(r) for r in t.rows) + 6 for name, t in tables.items()}
    top = 40 + label_height
    image = Image.new("RGB", (10 + sum(rows_width[n] + CELL[0] * len(t.columns) + 20 for n, t in tables.items()),
                              top + CELL[1] * max(len(t.rows) for t in tables.values()) + 10), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), f"{title} (colour: 0 to {high:.3g})", fill="black", font=font)
    x0 = 6
    for name, table in tables.items():
        grid_x = x0 + rows_width[name]
        draw.text((grid_x, 22), name, fill="black", font=font)
        for c, label in enumerate(table.columns):
            text = Image.new("L", (label_height, CELL[1]), 0)
            ImageDraw.Draw(text).text((2, 2), label, fill=255, font=font)
            image.paste((0, 0, 0), (grid_x + c * CELL[0] + 10, 40), text.rotate(90, expand=True))
        for r, label in enumerate(table.rows):
            draw.text((x0, top + r * CELL[1] + 2), label, fill="black", font=font)
        for (r, c), value in np.ndenumerate(table.values):
            box = (grid_x + c * CELL[0], top + r * CELL[1], grid_x + (c + 1) * CELL[0] - 1, top + (r + 1) * CELL[1] - 1)
            share = float(value) / high
            draw.rectangle(box, fill=colour(share))
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), f"{value:.2f}", anchor="mm", font=font,
                      fill="white" if share < 0.6 else "black")
        x0 = grid_x + CELL[0] * len(table.columns) + 20
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
