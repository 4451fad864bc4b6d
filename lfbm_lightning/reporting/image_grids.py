"""Image grids as PNG files and tensors: the one place that draws figures of images.

Images are (N, C, H, W) in [-1, 1]. Images smaller than :data:`MIN_SIDE` pixels are enlarged
by an integer factor with nearest-neighbour sampling (each pixel a square), a grey line of
:data:`SEPARATOR` pixels separates the images, and figures that compare streams of images
(original | occluded | reconstruction) label each column (:func:`save_comparison`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

MIN_SIDE = 64
"""Smallest side, in screen pixels, of one image in a figure."""

SEPARATOR = 2
"""Pixels of the grey line between images."""

SEPARATOR_VALUE = 0.5
"""Grey level of the separator lines, on the [0, 1] scale."""

LABEL_HEIGHT = 20
"""Pixels of the header row that holds the column labels."""


def enlarge(images: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Images (N, C, H, W) enlarged by the integer factor ceil(min_side / min(H, W)) with
    nearest-neighbour sampling (unchanged when they are large enough)."""
    factor = math.ceil(min_side / min(images.shape[-2:]))
    if factor <= 1:
        return images
    return F.interpolate(images.detach().float(), scale_factor=factor, mode="nearest")


def to_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] to one enlarged, separated grid (C, H', W') in [0, 1].

    Args:
        images: the images, N >= 1.
        nrow: images per grid row (default: about sqrt(N)).
    """
    nrow = nrow or max(1, int(len(images) ** 0.5))
    unit = enlarge(images.detach().float().cpu()).add(1).div(2).clamp(0, 1)
    return make_grid(unit, nrow=nrow, padding=SEPARATOR, pad_value=SEPARATOR_VALUE)


def to_uint8(grid: torch.Tensor) -> np.ndarray:
    """A grid (C, H, W) in [0, 1] as an (H, W, 3) uint8 array (grey images repeated to RGB),
    the form image loggers (W&B, TensorBoard, MLflow) take."""
    grid = grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_array(array: np.ndarray, path: str | Path) -> Path:
    """Save an (H, W, 3) uint8 figure as a PNG (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid of ``nrow`` columns (see
    :func:`to_grid`); returns the path."""
    return save_array(to_uint8(to_grid(images, nrow)), path)


def with_hole(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Images for figures: observed pixels of x, missing ones (mask 0) set to ``fill`` (grey)."""
    return x * mask + fill * (1.0 - mask)


def comparison_grid(
    streams: Sequence[torch.Tensor], labels: Sequence[str], groups: int = 1
) -> np.ndarray:
    """Aligned streams of images side by side, each column headed by its label.

    Example i of every stream sits in one row: ``original | occluded | reconstruction``. The n
    examples are laid out in ``groups`` blocks of rows placed next to each other (so that 32
    pairs make a 8 x 8 figure rather than a 32 x 2 one); each block repeats the labels.

    Args:
        streams: k tensors (n, C, H, W) in [-1, 1], the same n, C, H, W.
        labels: k column labels.
        groups: blocks of examples side by side (clipped to n).

    Returns:
        The figure as an (H', W', 3) uint8 array.
    """
    if len(streams) != len(labels):
        raise ValueError(f"{len(streams)} image streams but {len(labels)} labels")
    n, k = streams[0].shape[0], len(streams)
    groups = max(1, min(groups, n))
    per_group = math.ceil(n / groups)
    # (n, k, C, H, W) -> groups of rows, each row the k streams of one example
    stacked = torch.stack([s.detach().float().cpu() for s in streams], dim=1)
    blank = torch.full_like(stacked[:1], -1.0)
    stacked = torch.cat([stacked, blank.expand(groups * per_group - n, *stacked.shape[1:])])
    blocks = stacked.view(groups, per_group, k, *stacked.shape[2:])
    # grid rows: example j of every group, each group's k columns in turn
    ordered = blocks.permute(1, 0, 2, 3, 4, 5).reshape(-1, *stacked.shape[2:])
    grid = to_uint8(to_grid(ordered, nrow=groups * k))
    return _with_header(grid, [label for _ in range(groups) for label in labels])


def _with_header(grid: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """``grid`` below a white header row holding one centred label per grid column."""
    height, width, _ = grid.shape
    figure = Image.new("RGB", (width, height + LABEL_HEIGHT), "white")
    figure.paste(Image.fromarray(grid), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(figure)
    column = (width - SEPARATOR) / len(labels)
    for j, label in enumerate(labels):
        draw.text(
            ((j + 0.5) * column + SEPARATOR / 2, LABEL_HEIGHT / 2),
            label,
            fill="black",
            font=_font_fitting(draw, label, column - 2 * SEPARATOR),
            anchor="mm",
        )
    return np.asarray(figure)


def _font_fitting(draw: ImageDraw.ImageDraw, text: str, width: float) -> ImageFont.ImageFont:
    """The largest default font, up to the header's height, in which ``text`` fits ``width``."""
    for size in range(LABEL_HEIGHT - 6, 6, -1):
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width:
            return font
    return font


def save_comparison(
    streams: Sequence[torch.Tensor], labels: Sequence[str], path: str | Path, groups: int = 1
) -> Path:
    """Save :func:`comparison_grid` of the streams as a PNG; returns the path."""
    return save_array(comparison_grid(streams, labels, groups), path)
