"""Image grids as PNG files and tensors: the one place that draws figures of images.

A leaf module (it imports nothing from the package): training callbacks, evaluation tasks and
benchmarks all draw their grids here. Images are (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image


def to_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] to one grid (C, H', W') in [0, 1]."""
    nrow = nrow or max(1, int(len(images) ** 0.5))
    return make_grid(images.detach().float().cpu().add(1).div(2).clamp(0, 1), nrow=nrow, padding=1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_grid(images, nrow), path)
    return path


def with_hole(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Images for figures: observed pixels of x, missing ones (mask 0) set to ``fill`` (grey)."""
    return x * mask + fill * (1.0 - mask)


FIGURE_MIN_SIDE = 32
"""Images smaller than this (e.g. 8 x 8 digits) are enlarged in figures, nearest-neighbour."""


def save_images(images: torch.Tensor, path: Path, nrow: int) -> Path:
    """Save images (N, C, H, W) in [-1, 1] as one PNG grid of ``nrow`` columns; images
    smaller than :data:`FIGURE_MIN_SIDE` are enlarged by an integer factor."""
    factor = max(1, FIGURE_MIN_SIDE // images.shape[-1])
    images = F.interpolate(images, scale_factor=factor, mode="nearest")
    return save_grid(images, path, nrow=nrow)


def save_rows(rows: Sequence[torch.Tensor], path: Path) -> Path:
    """Save equally long rows of images (each (n, C, H, W) in [-1, 1]) as one PNG grid."""
    return save_images(torch.cat(list(rows)), path, nrow=rows[0].shape[0])
