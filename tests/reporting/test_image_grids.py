"""Figures: enlarged nearest-neighbour images, separators, labelled comparison columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lfbm_lightning.reporting.image_grids import (
    LABEL_HEIGHT,
    MIN_SIDE,
    SEPARATOR,
    comparison_grid,
    enlarge,
    save_grid,
)


def test_small_images_are_enlarged_pixel_by_pixel():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    big = enlarge(x)
    assert big.shape == (1, 1, 64, 64)
    # every source pixel becomes an 8 x 8 block of the same value (no interpolation)
    blocks = big.view(8, 8, 8, 8).permute(0, 2, 1, 3)  # (row, col, 8, 8)
    assert torch.equal(blocks.amin((-1, -2)), x.view(8, 8))
    assert torch.equal(blocks.amax((-1, -2)), x.view(8, 8))
    assert enlarge(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)  # already large enough
    assert enlarge(torch.zeros(1, 1, 28, 28)).shape[-1] == 84  # factor ceil(64 / 28) = 3


def test_saved_grid_has_readable_images_and_grey_separators(tmp_path):
    x = torch.full((6, 1, 8, 8), 1.0)  # white images
    path = save_grid(x, tmp_path / "g.png", nrow=3)
    picture = np.asarray(Image.open(path))
    cell = MIN_SIDE + SEPARATOR
    assert picture.shape == (2 * cell + SEPARATOR, 3 * cell + SEPARATOR, 3)
    assert (
        picture[SEPARATOR : SEPARATOR + MIN_SIDE, SEPARATOR : SEPARATOR + MIN_SIDE] == 255
    ).all()
    assert (picture[:SEPARATOR] == 128).all() and (
        picture[:, cell : cell + SEPARATOR] == 128
    ).all()


def test_comparison_puts_each_example_in_one_row_under_labelled_columns():
    n, k, groups = 5, 3, 2
    # stream s, example i: a constant image of value level(s, i)
    levels = torch.linspace(-1, 1, n * k).view(k, n)
    streams = [levels[s].view(n, 1, 1, 1).expand(n, 1, 8, 8) for s in range(k)]
    figure = comparison_grid(streams, ["original", "occluded", "recon"], groups=groups)
    per_group = 3  # ceil(5 / 2)
    cell = MIN_SIDE + SEPARATOR
    assert figure.shape == (LABEL_HEIGHT + per_group * cell + SEPARATOR, groups * k * cell + 2, 3)
    for i in range(n):
        group, row = divmod(i, per_group)
        for s in range(k):
            top = LABEL_HEIGHT + SEPARATOR + row * cell
            left = SEPARATOR + (group * k + s) * cell
            expected = round((levels[s, i].item() + 1) / 2 * 255)
            assert figure[top + MIN_SIDE // 2, left + MIN_SIDE // 2, 0] == expected
    header = figure[:LABEL_HEIGHT]
    for column in range(groups * k):  # some dark text pixels above every column
        assert (header[:, SEPARATOR + column * cell : (column + 1) * cell] < 128).any()


def test_comparison_needs_one_label_per_stream():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="2 image streams but 1 labels"):
        comparison_grid([x, x], ["original"])
