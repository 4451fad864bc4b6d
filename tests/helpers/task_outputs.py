"""Readers of the files an evaluation writes."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from lfbm_lightning.reporting.image_grids import LABEL_HEIGHT, MIN_SIDE, SEPARATOR


def read_rows(path: Path) -> list[dict[str, float]]:
    """Rows of a per-example CSV with every value parsed as a float."""
    with open(path) as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def grid_shape(path: Path, side: int = MIN_SIDE, labelled: bool = False) -> tuple[int, int]:
    """(rows, columns) of a PNG grid of ``side``-pixel images separated by
    :data:`~lfbm_lightning.reporting.image_grids.SEPARATOR` pixels, under a label row when
    ``labelled``."""
    width, height = Image.open(path).size
    height -= LABEL_HEIGHT if labelled else 0
    cell = side + SEPARATOR
    assert (width - SEPARATOR) % cell == 0 and (height - SEPARATOR) % cell == 0, (width, height)
    return (height - SEPARATOR) // cell, (width - SEPARATOR) // cell
