"""Short-run Langevin dynamics as a pure function.

Used for the posterior p(z|x) during training and evaluation, for sampling an energy-based
prior, and for inpainting with a masked energy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LangevinResult:
    """Outcome of a Langevin chain.

    Attributes:
        z: final state, shape (B, d), detached from every graph.
        energy: E(z) per chain at the state before the last update, shape (B,), detached.
        grad_abs_mean: mean of |grad_z E| over all entries at the last update (a 0-d tensor).
    """

    z: torch.Tensor
    energy: torch.Tensor
    grad_abs_mean: torch.Tensor


def energy_grad(z: torch.Tensor, energy_fn: EnergyFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chain energy E(z), shape (B,), and its gradient dE/dz, shape like z.

    Only z is differentiated: ``torch.autograd.grad`` with ``inputs=z`` leaves every parameter's
    ``.grad`` untouched and skips the weight-gradient kernels.
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        energy = energy_fn(z)
        (grad,) = torch.autograd.grad(energy.sum(), z)
    return energy.detach(), grad


def langevin(
    z0: torch.Tensor,
    energy_fn: EnergyFn,
    n_steps: int,
    step_size: float,
    noise: bool = True,
    rng: torch.Generator | None = None,
) -> LangevinResult:
    """Run K steps of z <- z - (s^2 / 2) dE/dz + s * eps, eps ~ N(0, I).

    With ``noise=False`` this is gradient descent on E with learning rate s^2 / 2 (the
    noise-free chains of evaluation and inpainting).

    Args:
        z0: initial state, shape (B, d).
        energy_fn: maps z of shape (B, d) to per-chain energies of shape (B,), e.g.
            E(z) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) for the posterior.
        n_steps: K >= 0.
        step_size: s > 0.
        noise: add the Langevin noise s * eps.
        rng: optional generator for the noise (reproducible, e.g. one per DDP rank).

    Returns:
        A :class:`LangevinResult`; ``z`` is detached.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    z = z0.detach()
    energy = torch.full(z.shape[:1], float("nan"), device=z.device, dtype=z.dtype)
    grad_abs_mean = torch.zeros((), device=z.device, dtype=z.dtype)
    for _ in range(n_steps):
        energy, grad = energy_grad(z, energy_fn)
        z = z - 0.5 * step_size**2 * grad
        if noise:
            eps = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
            z = z + step_size * eps
        grad_abs_mean = grad.abs().mean()
    return LangevinResult(z=z.detach(), energy=energy, grad_abs_mean=grad_abs_mean)
