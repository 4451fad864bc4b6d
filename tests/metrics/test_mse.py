"""Per-image MSE: known values, masks, [0, 1] scale, averaging over images."""

from __future__ import annotations

import pytest
import torch

from lfbm_lightning.metrics.mse import per_image_mse


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 3x2x2 images of zeros and their reconstructions.

    Image 0: every value off by 0.5 -> squared error 0.25 everywhere.
    Image 1: one value (channel 0, pixel (0, 0)) is 2 instead of 0 -> squared error 4 there.
    """
    x = torch.zeros(2, 3, 2, 2)
    x_hat = torch.zeros(2, 3, 2, 2)
    x_hat[0] = 0.5
    x_hat[1, 0, 0, 0] = 2.0
    return x, x_hat


def test_unmasked_known_values(pair):
    x, x_hat = pair
    # image 1: 4 / 12 values
    torch.testing.assert_close(per_image_mse(x, x_hat), torch.tensor([0.25, 1 / 3]))


def test_unit_scale_is_exactly_a_quarter(pair):
    x, x_hat = pair
    unit = per_image_mse(x, x_hat, scale="[0,1]")
    torch.testing.assert_close(unit, torch.tensor([0.0625, 1 / 12]))
    # the same numbers computed on images mapped to [0, 1]
    direct = per_image_mse((x + 1) / 2, (x_hat + 1) / 2)
    torch.testing.assert_close(unit, direct)


def test_single_channel_mask_selects_pixels_over_all_channels(pair):
    x, x_hat = pair
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 1, 1] = 1  # image 0: one pixel, 3 values of 0.25
    mask[1, 0, 0, 0] = 1  # image 1: the bad pixel, values 4, 0, 0
    torch.testing.assert_close(per_image_mse(x, x_hat, mask), torch.tensor([0.25, 4 / 3]))


def test_per_channel_mask_and_empty_mask_gives_nan(pair):
    x, x_hat = pair
    mask = torch.zeros(2, 3, 2, 2)
    mask[1, 0, 0, 0] = 1  # image 1: only the bad value; image 0: nothing selected
    mse = per_image_mse(x, x_hat, mask.bool())
    assert torch.isnan(mse[0])
    assert mse[1].item() == pytest.approx(4.0)


def test_complementary_masks_recombine_to_the_full_mse(pair):
    x, x_hat = pair
    observed = torch.zeros(2, 1, 2, 2)
    observed[:, :, 0, :] = 1  # top row observed, bottom row missing
    on_observed = per_image_mse(x, x_hat, observed)
    on_missing = per_image_mse(x, x_hat, 1 - observed)
    torch.testing.assert_close((on_observed + on_missing) / 2, per_image_mse(x, x_hat))
    torch.testing.assert_close(on_missing, torch.tensor([0.25, 0.0]))


def test_shape_errors():
    with pytest.raises(ValueError, match="x_hat"):
        per_image_mse(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        per_image_mse(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(2, 2, 4, 4))
    with pytest.raises(ValueError, match="scale"):
        per_image_mse(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), scale="[0,255]")
