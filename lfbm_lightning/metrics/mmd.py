"""Kernel maximum mean discrepancy between two sample sets (flattened images or latents).

With k(a, b) = exp(-|a - b|^2 / (2 h^2)), x (n, D) and y (m, D), the unbiased estimate of
MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) (Gretton et al., 2012, eq. 3) is

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
              - 2 sum_{i, j} k(x_i, y_j) / (n m),

zero in expectation when both sets come from one distribution (it can then be negative).
"""

from __future__ import annotations

import torch


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median heuristic h: the median pairwise distance within the pooled set (n + m, D)."""
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled)
    return float(distances[torch.triu_indices(len(pooled), len(pooled), 1).unbind()].median())


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 of samples x (n, D) and y (m, D), n, m >= 2, Gaussian kernel of
    bandwidth h = ``bandwidth`` > 0."""
    if len(x) < 2 or len(y) < 2 or bandwidth <= 0:
        raise ValueError(f"need n, m >= 2 and bandwidth > 0, got {len(x)}, {len(y)}, {bandwidth}")

    def mean_kernel(a: torch.Tensor, b: torch.Tensor, same: bool) -> float:
        k = torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))
        total = k.sum() - (k.diagonal().sum() if same else 0.0)
        pairs = len(a) * (len(a) - 1) if same else len(a) * len(b)
        return float(total) / pairs

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)
