"""Short-run Langevin dynamics as pure functions: the kernel every chain runs.

Used for the posterior p(z|x) in training and evaluation (:mod:`lfbm_lightning.inference`),
for sampling an energy-based prior (:mod:`lfbm_lightning.priors.ebm`) and for inpainting with a
masked energy. A step is one forward and one backward of E to z: no parameter gradient is
computed (``frozen`` modules take no part in autograd), no value is read back to the host
inside the chain, and the update allocates nothing but the noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

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


@contextmanager
def frozen_parameters(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Within the block, the modules' parameters do not require gradients.

    The autograd graph of E then has z as its only leaf: nothing is saved or computed for the
    parameters, cached values that only need to be fresh when a gradient flows to the
    parameters (the flow's log|det W|) can be reused, and a compiled energy's backward computes
    grad_z alone. The previous ``requires_grad`` flags are restored on exit, also on error.
    """
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def langevin(
    z0: torch.Tensor,
    energy_fn: EnergyFn,
    n_steps: int,
    step_size: float,
    noise: bool = True,
    rng: torch.Generator | None = None,
    *,
    frozen: Sequence[nn.Module] = (),
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
        frozen: modules whose parameters E uses (e.g. the generator and the prior): they are
            held with ``requires_grad=False`` during the chain (:func:`frozen_parameters`).
            Same result; parameter gradients are never touched and cached parameter terms
            are reused.

    Returns:
        A :class:`LangevinResult`; ``z`` is detached.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    z = z0.detach()
    energy = torch.full(z.shape[:1], float("nan"), device=z.device, dtype=z.dtype)
    grad = torch.zeros_like(z)
    with frozen_parameters(frozen):
        for _ in range(n_steps):
            energy, grad = energy_grad(z, energy_fn)
            z = torch.add(z, grad, alpha=-0.5 * step_size**2)
            if noise:
                eps = torch.randn(z.shape, generator=rng, device=z.device, dtype=z.dtype)
                z.add_(eps, alpha=step_size)
    return LangevinResult(z=z.detach(), energy=energy, grad_abs_mean=grad.abs().mean())
