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

from lfbm_lightning.generators.convt import ConvTransposeGenerator
from lfbm_lightning.priors.base import Prior

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


def _stem_is_a_matmul(conv: nn.Module) -> bool:
    """Whether ``conv`` applied to a 1 x 1 input is exactly the matmul of :func:`_stem`."""
    return (
        isinstance(conv, nn.ConvTranspose2d)
        and conv.groups == 1
        and conv.dilation == (1, 1)
        and conv.output_padding == (0, 0)
        and conv.padding[0] == conv.padding[1]
        and 2 * conv.padding[0] < min(conv.kernel_size)
    )


def _stem(conv: nn.ConvTranspose2d, z: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(d, C, k, s, p) of z (B, d) viewed as a 1 x 1 image, as one GEMM.

    On a 1 x 1 input, out[b, c, i, j] = bias[c] + sum_e z[b, e] W[e, c, p + i, p + j]
    (any stride). The output is laid out in the weight's memory format, so a channels_last
    generator gets NHWC activations without a copy.
    """
    p = conv.padding[0]
    w = conv.weight
    if p:
        w = w[:, :, p:-p, p:-p]
    d, channels, h, wd = w.shape
    if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        flat = w.permute(0, 2, 3, 1).reshape(d, h * wd * channels)
        bias = conv.bias.repeat(h * wd) if conv.bias is not None else None
        out = (z @ flat if bias is None else torch.addmm(bias, z, flat)).view(-1, h, wd, channels)
        return out.permute(0, 3, 1, 2)
    flat = w.reshape(d, channels * h * wd)
    bias = conv.bias.repeat_interleave(h * wd) if conv.bias is not None else None
    out = z @ flat if bias is None else torch.addmm(bias, z, flat)
    return out.view(-1, channels, h, wd)


def latent_decoder(generator: nn.Module) -> Decoder:
    """A function computing ``generator(z)`` with the same math, faster where it can.

    For a :class:`~lfbm_lightning.generators.ConvTransposeGenerator` the first block, a
    transposed convolution of z viewed as a 1 x 1 image, is computed as the GEMM it is
    (:func:`_stem`): the convolution kernels handle a 1 x 1 input poorly on CPU (see
    ``benchmarks/README.md``). The rest of the stack runs unchanged. Any other generator is
    returned as it is. Parameters are used, not copied: gradients reach them as usual.
    """
    if not isinstance(generator, ConvTransposeGenerator) or not _stem_is_a_matmul(
        generator.net[0]
    ):
        return generator
    stem, rest = generator.net[0], generator.net[1:]
    return lambda z: rest(_stem(stem, z))


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
    """
    decode = latent_decoder(generator) if fast_decoder else generator

    def energy(z: torch.Tensor) -> torch.Tensor:
        if autocast_dtype is None:
            x_hat = decode(z)
        else:
            with torch.autocast(z.device.type, dtype=autocast_dtype):
                x_hat = decode(z).to(x.dtype)
        return reconstruction_energy(x, x_hat, sigma, mask) - prior.log_prob(z)

    if not compile:
        return energy
    return torch.compile(energy, mode=compile if isinstance(compile, str) else None)
