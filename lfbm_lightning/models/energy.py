"""The posterior energy of a latent-variable generator model, and a faster way to decode.

The posterior chains evaluate E(z) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) and its gradient
thousands of times per epoch, so this is where a step gets cheaper (``benchmarks/README.md``):
:func:`latent_decoder` computes g(z) with the same math in fewer, faster kernels, and
:func:`posterior_energy_fn` optionally runs the generator under reduced-precision autocast or
through ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lfbm_lightning.priors.prior import Prior

Decoder = Callable[[torch.Tensor], torch.Tensor]


def reconstruction_energy(
    x: torch.Tensor, x_hat: torch.Tensor, sigma: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """-log p(x | z) up to a constant: sum over pixels of mask * (x - g(z))^2 / (2 sigma^2).

    Args:
        x: images (B, C, H, W) in [-1, 1].
        x_hat: decoded images g(z), same shape (any memory format).
        sigma: observation noise std on the [-1, 1] scale (0.3 in the paper).
        mask: optional (B, 1, H, W) or (B, C, H, W), 1 = observed. Missing pixels contribute
            nothing, so they never enter the likelihood.

    Returns:
        Per-image energies, shape (B,).
    """
    sq = (x - x_hat).pow(2)
    if mask is not None:
        sq = sq * mask
    # a sum over dims, not flatten(1).sum(1): no copy when x_hat is channels_last
    return sq.sum(dim=tuple(range(1, sq.dim()))) / (2.0 * sigma**2)


def latent_decoder(generator: nn.Module) -> Decoder:
    """A function computing ``generator(z)`` with the same math, faster where it can.

    A generator that owns a faster path with the same math offers it as ``fast_forward``
    (:meth:`~lfbm_lightning.generators.ConvTransposeGenerator.fast_forward` computes its
    1 x 1 transposed-convolution stem as the GEMM it is: ``benchmarks/README.md``); any other
    generator is returned as it is. Parameters are used, not copied: gradients reach them.
    """
    return getattr(generator, "fast_forward", generator)


def posterior_energy_fn(
    x: torch.Tensor,
    generator: nn.Module,
    prior: Prior,
    sigma: float,
    mask: torch.Tensor | None = None,
    *,
    fast_decoder: bool = True,
    autocast_dtype: torch.dtype | None = None,
    compile: bool | str = False,
    training: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """E(z) = ||mask * (x - g(z))||^2 / (2 sigma^2) - log p(z): -log p(x, z) + const, shape (B,).

    For an energy-based prior, log p(z) is unnormalised; the constant does not affect grad_z.

    Args:
        x, generator, prior, sigma, mask: the terms of E, as in :func:`reconstruction_energy`.
        fast_decoder: decode with :func:`latent_decoder` (same math, faster on CPU).
        autocast_dtype: run the generator under ``torch.autocast`` in this dtype (e.g.
            ``torch.bfloat16``); its output is cast back to x's dtype before the residual, and
            the prior stays in full precision.
        compile: wrap E in ``torch.compile`` (compiled once per model and input shape; closures
            for new batches reuse the compiled graph); a string is the compile mode, e.g.
            ``"reduce-overhead"`` (CUDA graphs). Freeze the parameters during the chain
            (``langevin(..., frozen=...)``), or the compiled backward also computes their
            gradients.
        training: use the prior's ``training_log_prob`` (the density the first stage of a
            two-stage model is trained under) instead of ``log_prob``.
    """
    log_prior = prior.training_log_prob if training else prior.log_prob
    decode = latent_decoder(generator) if fast_decoder else generator

    def energy(z: torch.Tensor) -> torch.Tensor:
        if autocast_dtype is None:
            x_hat = decode(z)
        else:
            with torch.autocast(z.device.type, dtype=autocast_dtype):
                x_hat = decode(z).to(x.dtype)
        return reconstruction_energy(x, x_hat, sigma, mask) - log_prior(z)

    if not compile:
        return energy
    return torch.compile(energy, mode=compile if isinstance(compile, str) else None)
