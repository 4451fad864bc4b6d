"""Kernel MMD: a hand-computed case, the closed form for point masses, and its behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from lfbm_lightning.metrics.mmd import median_bandwidth, mmd2_unbiased


def test_hand_computed_one_dimensional_case():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0], [2.0]])
    h = 1.0
    k = lambda d: math.exp(-(d**2) / 2)  # noqa: E731
    expected = k(1) + k(2) - 2 * (k(0) + k(2) + k(1) + k(1)) / 4
    assert mmd2_unbiased(x, y, h) == pytest.approx(expected, rel=1e-6)


def test_two_point_masses_give_the_closed_form():
    # all x at a, all y at b: MMD^2 = 1 + 1 - 2 exp(-|a-b|^2 / (2 h^2))
    x = torch.zeros(5, 3)
    y = torch.full((7, 3), 0.5)
    h = 0.8
    expected = 2 - 2 * math.exp(-(3 * 0.25) / (2 * h**2))
    assert mmd2_unbiased(x, y, h) == pytest.approx(expected, rel=1e-6)


def test_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    h = median_bandwidth(x, y)
    same = mmd2_unbiased(x, y, h)
    shifted = mmd2_unbiased(x, y + 1.0, h)
    assert abs(same) < 0.01 < shifted


def test_median_bandwidth_of_three_points_on_a_line():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    assert median_bandwidth(x, y) == pytest.approx(2.0)  # distances 1, 2, 3


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2_unbiased(torch.zeros(3, 1), torch.zeros(3, 1), 0.0)
