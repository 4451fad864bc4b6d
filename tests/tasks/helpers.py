"""Readers of the files an evaluation writes."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image


def read_rows(path: Path) -> list[dict[str, float]]:
    """Rows of a per-example CSV with every value parsed as a float."""
    with open(path) as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def grid_shape(path: Path, side: int) -> tuple[int, int]:
    """(rows, columns) of a PNG grid of ``side``-pixel images with 1-pixel padding."""
    width, height = Image.open(path).size
    assert (width - 1) % (side + 1) == 0 and (height - 1) % (side + 1) == 0, (width, height)
    return (height - 1) // (side + 1), (width - 1) // (side + 1)
