"""The posterior energy of a latent-variable generator model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lfbm_lightning.priors.base import Prior


def reconstruction_energy(
    x: torch.Tensor, x_hat: torch.Tensor, sigma: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-log p(x | z) up to a constant: sum over pixels of mask * (x - g(z))^2 / (2 sigma^2).

    Args:
        x: images (B, C, H, W) in [-1, 1].
        x_hat: decoded images g(z), same shape.
        sigma: observation noise std on the [-1, 1] scale (0.3 in the paper).
        mask: optional (B, 1, H, W) or (B, C, H, W), 1 = observed. Missing pixels contribute
            nothing, so they never enter the likelihood.

    Returns:
        Per-image energies, shape (B,).
    """
    sq = (x - x_hat).pow(2)
    if mask is not None:
        sq = sq * mask
    return sq.flatten(1).sum(1) / (2.0 * sigma**2)


def posterior_energy_fn(
    x: torch.Tensor,
    generator: nn.Module,
    prior: Prior,
    sigma: float,
    mask: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """E(z) = ||mask * (x - g(z))||^2 / (2 sigma^2) - log p(z): -log p(x, z) + const, shape (B,).

    For an energy-based prior, log p(z) is unnormalised; the constant does not affect grad_z.
    """

    def energy(z: torch.Tensor) -> torch.Tensor:
        return reconstruction_energy(x, generator(z), sigma, mask) - prior.log_prob(z)

    return energy
