"""The posterior chains of the tasks: their starts, their settings and the fit of z.

A chain's start depends only on (seed, example index) (:func:`start_latents`), so the scores
do not depend on the number of ranks or the batch size.
"""

from __future__ import annotations

import torch

from lfbm_lightning.inference.fit import PassCount
from lfbm_lightning.models import LatentPriorModel


def start_latents(
    model: LatentPriorModel, indices: torch.Tensor, seed: int
) -> torch.Tensor | None:
    """Chain starts z0 (B, d) ~ N(0, I), row i drawn from a generator seeded with
    (``seed``, ``indices[i]``): the same start for an example whatever its batch or rank.

    None for a model with an encoder: its chains start at the encoder's mean. The inference
    method's :meth:`~lfbm_lightning.inference.PosteriorInference.seeded_start`.
    """
    return model.posterior.seeded_start(model, indices, seed)


def chain_settings(
    model: LatentPriorModel, n_steps: int | None, step_size: float | None
) -> tuple[int, float]:
    """Noise-free Langevin settings; null falls back to the checkpoint's evaluation chain
    (``inference.eval_steps`` = 20 x K, or ``eval_refine_steps`` from the encoder's mean for
    an amortised model) and ``inference.eval_step_size``: the inference method's
    :meth:`~lfbm_lightning.inference.PosteriorInference.eval_settings`."""
    return model.posterior.eval_settings(n_steps, step_size)


def reconstruct(
    model: LatentPriorModel,
    x: torch.Tensor,
    n_steps: int,
    step_size: float,
    mask: torch.Tensor | None = None,
    z0: torch.Tensor | None = None,
    *,
    fit: str = "protocol",
    count: PassCount | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit z on the posterior energy E(z) = ||m * (x - g(z))||^2 / (2 sigma^2) - log p(z), by
    noise-free Langevin (``fit="protocol"``: gradient descent with rate s^2 / 2, the paper's) or
    by the fast fit (``"fast"``: L-BFGS, per-image stopping; :mod:`lfbm_lightning.inference.fit`),
    then decode.

    Args:
        model: the trained model (its generator, prior and sigma).
        x: images (B, C, H, W).
        n_steps: number of steps.
        step_size: s.
        mask: optional (B, 1, H, W), 1 = observed: only observed pixels enter E.
        z0: initial z (B, d); None: the inference method's start (N(0, I) seeded with the
            model's seed and the position in the batch, or the encoder's mean).
        fit: ``protocol`` or ``fast``; ``n_steps`` caps the fast fit.
        count: adds the generator passes of the fit (a task's :class:`PassCount`).

    Returns:
        (g(z) (B, C, H, W), z (B, d)), from the one reconstruction path,
        :meth:`~lfbm_lightning.inference.PosteriorInference.reconstruct` (also ``val/mse``).
    """
    return model.posterior.reconstruct(
        model,
        x,
        mask,
        seed=model.seed,
        n_steps=n_steps,
        step_size=step_size,
        z0=z0,
        fit=fit,
        count=count,
    )
