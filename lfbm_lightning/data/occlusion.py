"""Fixed occlusion masks for unsupervised recovery (training on occluded images).

A mask is float32 (1, H, W) with 1 = observed and 0 = missing, shared by all channels. Mask ``i``
is drawn from ``np.random.default_rng([seed, i])`` alone, so any subset can be regenerated and
every worker or rank sees the same mask for the same image.

Kinds (docs/paper.md, "Unsupervised recovery"):
    ``salt_pepper``: N random h x h square holes (h = ``hole_size``, 8 in the protocol; smaller
        for small images such as the 8 x 8 digits); N from the target coverage.
    ``single_region``: one square hole of side L at a uniformly random position.

Salt-and-pepper corners are drawn as ``rng.integers(0, H - h)``, i.e. 0..H-h-1 (H - h positions
per axis; "0..H-8" in docs/paper.md read as an exclusive ``randint(0, H - 8)``, which is what the
table fits; the reference code itself is not available here): with these the table's hole counts
give their target coverage within 0.6 points on every row, and the expected-coverage formula
gives back the table's counts within 1 hole up to 80% (266 rather than 250 for 90%, where one
hole adds 0.04 points). Corners over 0..H-8 inclusive would over-shoot the 90% row (92.0%) and
need 124 rather than 134 holes for 80%. A consequence: the last row and column are never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch

from lfbm_lightning.checks import check, in_interval

MASK_KINDS = ("salt_pepper", "single_region")
HOLE_SIDE = 8

# Number of 8 x 8 holes for each target coverage of a 64 x 64 image: the table of
# docs/paper.md#unsupervised-recovery.
SALT_PEPPER_HOLES_64 = {
    0.1: 7,
    0.2: 15,
    0.3: 24,
    0.4: 35,
    0.5: 48,
    0.6: 65,
    0.7: 90,
    0.8: 134,
    0.9: 250,
}


def _corner_positions(length: int, hole_size: int = HOLE_SIDE) -> int:
    """Number of possible salt-and-pepper corners along an axis of ``length`` pixels."""
    if length <= hole_size:
        raise ValueError(f"salt-and-pepper masks need images larger than {hole_size} pixels")
    return length - hole_size


def _cover_probability(length: int, hole_size: int = HOLE_SIDE) -> np.ndarray:
    """Probability that one hole covers each pixel along an axis, shape (length,).

    A hole with corner c covers pixels c..c+h-1; pixel r is covered by the corners
    max(0, r-h+1)..min(r, positions-1).
    """
    positions = _corner_positions(length, hole_size)
    r = np.arange(length)
    count = np.minimum(r, positions - 1) - np.maximum(0, r - hole_size + 1) + 1
    return np.clip(count, 0, None) / positions


def expected_coverage(n_holes: int, height: int, width: int, hole_size: int = HOLE_SIDE) -> float:
    """Expected missing fraction of a mask with ``n_holes`` independent h x h holes.

    A pixel stays observed only if no hole covers it, so the expected missing fraction is
    ``1 - mean over pixels of (1 - p_pixel) ** n_holes`` with ``p_pixel`` = P(one hole covers it)
    = P(row covered) * P(column covered).
    """
    p = np.outer(_cover_probability(height, hole_size), _cover_probability(width, hole_size))
    return float(1.0 - np.mean((1.0 - p) ** n_holes))


def _check_coverage(coverage: float | None) -> float:
    """Return ``coverage`` if it is a fraction in (0, 1) exclusive, else raise ConfigError."""
    ok = in_interval(coverage, 0, 1, open_low=True, open_high=True)
    allowed = "a missing fraction in (0, 1) exclusive (e.g. 0.3 for 30%)"
    check("dataset.occlusion.coverage", coverage, allowed, ok)
    return float(coverage)


def _check_hole_size(hole_size: int, height: int, width: int) -> int:
    """Return ``hole_size`` if it is an integer side in 1..min(height, width) - 1, else raise."""
    limit = min(height, width) - 1
    if isinstance(hole_size, bool) or not isinstance(hole_size, Integral) or hole_size < 1:
        raise ValueError(
            f"dataset.occlusion.hole_size must be an integer side length >= 1, got {hole_size!r}"
        )
    if hole_size > limit:
        raise ValueError(
            f"salt-and-pepper masks need images larger than {hole_size} pixels "
            f"(dataset.occlusion.hole_size must be at most {limit} for {height} x {width} images)"
        )
    return int(hole_size)


def holes_from_formula(
    coverage: float, height: int, width: int, hole_size: int = HOLE_SIDE
) -> int:
    """Number of h x h holes whose :func:`expected_coverage` is closest to ``coverage``.

    Found by bisection (the coverage grows with the number of holes); at least 1.
    """
    coverage = _check_coverage(coverage)

    def cover(n: int) -> float:
        return expected_coverage(n, height, width, hole_size)

    low, high = 0, 1  # invariant once bracketed: coverage(low) < target <= coverage(high)
    while cover(high) < coverage:
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if cover(mid) < coverage else (low, mid)
    below = coverage - cover(low)
    above = cover(high) - coverage
    return max(1, low if below < above else high)


def holes_for_coverage(
    coverage: float, height: int, width: int, hole_size: int = HOLE_SIDE
) -> int:
    """Number of h x h holes for a target coverage.

    The protocol's table for 8 x 8 holes in 64 x 64 images, :func:`holes_from_formula` for
    other sizes, hole sizes or coverages.
    """
    coverage = _check_coverage(coverage)
    on_table = (height, width, hole_size) == (64, 64, HOLE_SIDE)
    if on_table and round(coverage, 6) in SALT_PEPPER_HOLES_64:
        return SALT_PEPPER_HOLES_64[round(coverage, 6)]
    return holes_from_formula(coverage, height, width, hole_size)


def _check_size(size: int | None, height: int, width: int) -> int:
    """Return ``size`` if it is an integer side in 1..min(height, width), else raise."""
    limit = min(height, width)
    if isinstance(size, bool) or not isinstance(size, Integral) or not 1 <= size <= limit:
        raise ValueError(
            f"dataset.occlusion.size must be an integer side length in 1..{limit} "
            f"for {height} x {width} images, got {size!r}"
        )
    return int(size)


def salt_pepper_mask(
    rng: np.random.Generator, n_holes: int, height: int, width: int, hole_size: int = HOLE_SIDE
) -> np.ndarray:
    """One mask with ``n_holes`` h x h holes, corners uniform over 0..H-h-1 and 0..W-h-1.

    Returns:
        float32 (1, height, width), 1 = observed.
    """
    rows = rng.integers(0, _corner_positions(height, hole_size), size=n_holes)
    cols = rng.integers(0, _corner_positions(width, hole_size), size=n_holes)
    mask = np.ones((1, height, width), dtype=np.float32)
    for top, left in zip(rows.tolist(), cols.tolist(), strict=True):
        mask[:, top : top + hole_size, left : left + hole_size] = 0.0
    return mask


def single_region_mask(rng: np.random.Generator, size: int, height: int, width: int) -> np.ndarray:
    """One mask with a single ``size`` x ``size`` hole at a uniformly random position.

    Returns:
        float32 (1, height, width), 1 = observed; exactly size * size zeros.
    """
    top = rng.integers(0, height - size + 1)
    left = rng.integers(0, width - size + 1)
    mask = np.ones((1, height, width), dtype=np.float32)
    mask[:, top : top + size, left : left + size] = 0.0
    return mask


@dataclass(frozen=True)
class MaskMaker:
    """Validated occlusion settings; ``maker(i)`` is the mask of training image ``i``.

    The settings are checked (and the salt-and-pepper hole count found) once, so drawing a mask
    per item stays cheap; the object is picklable, for DataLoader workers.

    Args:
        kind: 'salt_pepper' (needs ``coverage``) or 'single_region' (needs ``size``).
        height: image height H.
        width: image width W.
        seed: occlusion seed (non-negative).
        coverage: target missing fraction in (0, 1), for salt_pepper.
        size: hole side length in 1..min(H, W), for single_region.
        hole_size: side of the salt-and-pepper holes (8 in the protocol).
    """

    kind: str
    height: int
    width: int
    seed: int
    coverage: float | None = None
    size: int | None = None
    hole_size: int = HOLE_SIDE
    n_holes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.kind == "salt_pepper":
            hole = _check_hole_size(self.hole_size, self.height, self.width)
            n_holes = holes_for_coverage(self.coverage, self.height, self.width, hole)
            object.__setattr__(self, "n_holes", n_holes)
        elif self.kind == "single_region":
            _check_size(self.size, self.height, self.width)
        else:
            raise ValueError(
                f"occlusion kind must be one of {list(MASK_KINDS)}, got {self.kind!r}"
            )

    def array(self, index: int) -> np.ndarray:
        """The mask of image ``index`` as a numpy float32 array (1, H, W), 1 = observed."""
        rng = np.random.default_rng([self.seed, index])
        if self.kind == "salt_pepper":
            return salt_pepper_mask(rng, self.n_holes, self.height, self.width, self.hole_size)
        return single_region_mask(rng, int(self.size), self.height, self.width)

    def __call__(self, index: int) -> torch.Tensor:
        """The mask of image ``index``: float32 (1, H, W), 1 = observed, 0 = missing."""
        return torch.from_numpy(self.array(index))
