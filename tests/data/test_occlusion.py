"""Occlusion masks: coverage against the protocol's table, hole shapes, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfbm_lightning.data.occlusion import (
    SALT_PEPPER_HOLES_64,
    MaskMaker,
    expected_coverage,
    holes_for_coverage,
    holes_from_formula,
    salt_pepper_mask,
)


def first_masks(maker: MaskMaker, n: int) -> torch.Tensor:
    """The masks of training images 0..n-1, (n, 1, H, W)."""
    return torch.stack([maker(i) for i in range(n)])


@pytest.mark.parametrize(("coverage", "n_holes"), sorted(SALT_PEPPER_HOLES_64.items()))
def test_salt_pepper_coverage_matches_the_protocol_table(coverage, n_holes):
    assert holes_for_coverage(coverage, 64, 64) == n_holes
    masks = first_masks(MaskMaker("salt_pepper", 64, 64, seed=0, coverage=coverage), 1000)
    measured = 1.0 - masks.mean().item()
    assert abs(measured - coverage) < 0.02
    assert abs(measured - expected_coverage(n_holes, 64, 64)) < 0.005  # sampler == formula


@pytest.mark.parametrize(("coverage", "n_holes"), sorted(SALT_PEPPER_HOLES_64.items()))
def test_coverage_formula_reproduces_the_table(coverage, n_holes):
    assert abs(expected_coverage(n_holes, 64, 64) - coverage) < 0.01
    tolerance = 2 if coverage <= 0.8 else 20  # at 90% one hole adds only 0.04 points
    assert abs(holes_from_formula(coverage, 64, 64) - n_holes) <= tolerance


@pytest.mark.parametrize(
    ("coverage", "height", "width"), [(0.3, 32, 32), (0.25, 64, 64), (0.5, 48, 96)]
)
def test_coverage_off_the_table_comes_from_the_formula(coverage, height, width):
    n_holes = holes_for_coverage(coverage, height, width)
    assert abs(expected_coverage(n_holes, height, width) - coverage) <= (
        expected_coverage(n_holes + 1, height, width) - expected_coverage(n_holes, height, width)
    )
    masks = first_masks(MaskMaker("salt_pepper", height, width, seed=1, coverage=coverage), 1000)
    assert abs(1.0 - masks.mean().item() - coverage) < 0.02


def test_salt_pepper_holes_are_8x8_squares_with_corners_0_to_h_minus_9():
    corners, union = [], np.zeros((64, 64), dtype=bool)
    for i in range(2000):
        missing = salt_pepper_mask(np.random.default_rng([5, i]), 1, 64, 64)[0] == 0
        rows, cols = np.nonzero(missing)
        assert missing.sum() == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        corners.append((rows.min(), cols.min()))
        union |= missing
    assert np.min(corners, axis=0).tolist() == [0, 0]
    assert np.max(corners, axis=0).tolist() == [55, 55]
    assert not union[63].any() and not union[:, 63].any()


@pytest.mark.parametrize("size", [20, 30, 40])
def test_single_region_hides_exactly_one_square(size):
    masks = first_masks(MaskMaker("single_region", 64, 64, seed=2, size=size), 200)
    tops = []
    for mask in masks:
        rows, cols = torch.nonzero(mask[0] == 0, as_tuple=True)
        assert len(rows) == size * size
        assert rows.max() - rows.min() == size - 1 and cols.max() - cols.min() == size - 1
        tops.append(rows.min().item())
    assert min(tops) >= 0 and max(tops) <= 64 - size
    assert len(set(tops)) > 10  # positions vary


def test_single_region_may_span_the_shorter_side():
    masks = first_masks(MaskMaker("single_region", 48, 64, seed=0, size=48), 20)
    assert (masks.sum(dim=(1, 2, 3)) == 48 * 16).all()
    assert (masks[:, 0, :, :].amin(dim=1) == 0).sum(dim=1).eq(48).all()


@pytest.mark.parametrize(
    ("kind", "setting"), [("salt_pepper", {"coverage": 0.5}), ("single_region", {"size": 30})]
)
def test_masks_are_regenerable_from_seed_and_index(kind, setting):
    masks = first_masks(MaskMaker(kind, 64, 64, seed=7, **setting), 12)
    assert masks.dtype == torch.float32 and masks.shape == (12, 1, 64, 64)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(masks, first_masks(MaskMaker(kind, 64, 64, seed=7, **setting), 12))
    assert torch.equal(masks[:5], first_masks(MaskMaker(kind, 64, 64, seed=7, **setting), 5))
    assert torch.equal(masks[9], MaskMaker(kind, 64, 64, seed=7, **setting)(9))
    flat = masks.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(12) for j in range(i))
    assert not torch.equal(masks, first_masks(MaskMaker(kind, 64, 64, seed=8, **setting), 12))


@pytest.mark.parametrize("coverage", [0, 1, -0.1, 1.5, 30, None, True])
def test_bad_coverage_is_rejected(coverage):
    with pytest.raises(ValueError, match=r"dataset\.occlusion\.coverage.*\(0, 1\)"):
        first_masks(MaskMaker("salt_pepper", 64, 64, seed=0, coverage=coverage), 2)


@pytest.mark.parametrize("size", [0, 65, -3, 20.5, None])
def test_bad_size_is_rejected(size):
    with pytest.raises(ValueError, match=r"dataset\.occlusion\.size.*1\.\.64"):
        first_masks(MaskMaker("single_region", 64, 64, seed=0, size=size), 2)


def test_unknown_kind_and_tiny_images_are_rejected():
    with pytest.raises(ValueError, match="'salt_pepper', 'single_region'"):
        first_masks(MaskMaker("gaussian", 64, 64, seed=0, coverage=0.3), 2)
    with pytest.raises(ValueError, match="larger than 8"):
        first_masks(MaskMaker("salt_pepper", 8, 8, seed=0, coverage=0.3), 2)
