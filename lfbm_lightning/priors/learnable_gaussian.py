"""A Gaussian prior with learnable mean and diagonal covariance (the slides' prior form 2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lfbm_lightning.priors.prior import Prior


def diag_normal_log_prob(
    z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """log N(z; mean, diag exp(2 log_std)) summed over the last dimension.

    Shapes broadcast: z (..., d) against mean and log_std (..., d); returns (...).
    """
    standardized = (z - mean) * torch.exp(-log_std)
    return (-0.5 * standardized.pow(2) - log_std).sum(-1) - 0.5 * z.shape[-1] * math.log(
        2 * math.pi
    )


class LearnableGaussianPrior(Prior):
    """p(z) = N(z; mu, diag sigma^2) with mu and log sigma learned by maximum likelihood.

    log p(z) = sum_j [-(z_j - mu_j)^2 / (2 sigma_j^2) - log sigma_j] - (d/2) log 2 pi.
    Sampling is exact: z = mu + sigma * eps, eps ~ N(0, I). Starts at N(0, I).

    Args:
        latent_dim: d.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.mean = nn.Parameter(torch.zeros(self.latent_dim))
        self.log_std = nn.Parameter(torch.zeros(self.latent_dim))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return diag_normal_log_prob(z, self.mean, self.log_std)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(
            n, self.latent_dim, generator=rng, device=self.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(self.log_std) * eps
