"""Gaussian log densities and log-mean-exp: the closed forms every layer shares.

A leaf module (it imports nothing from the package): priors, inference, data sets with a known
density and the likelihood task all use these.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)
"""log 2 pi, a Python float: no tensor op or host read-back (``.item()``) in the chain."""


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: -(|z|^2 + d log 2 pi) / 2, shape (B,)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)


def gaussian_log_normalizer(dimension: int, sigma: float) -> float:
    """-(D / 2) log(2 pi sigma^2): the normaliser of N(x; mean, sigma^2 I_D)."""
    return -0.5 * dimension * math.log(2 * math.pi * sigma**2)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x; mean, sigma^2 I_D) with its normaliser, summed over the last dimension (D).

    Shapes broadcast: x and mean (..., D) give (...).
    """
    sq = (x - mean).pow(2).sum(-1)
    return -sq / (2 * sigma**2) + gaussian_log_normalizer(x.shape[-1], sigma)


def diag_gaussian_entropy(log_var: torch.Tensor) -> torch.Tensor:
    """Entropy of N(mu, diag exp(log_var)): (1/2) sum_j (log_var_j + 1 + log 2 pi), shape (B,)."""
    return 0.5 * (log_var + 1.0 + LOG_2PI).sum(-1)


def log_mean_exp(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log (1/K) sum_k exp(v_k) along ``dim`` (K = its size), computed stably."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])
