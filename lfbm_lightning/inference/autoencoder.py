"""The regularised autoencoder (RAE, Ghosh et al. 2020): a deterministic encoder z = mu(x).

Per batch, the encoder and the generator minimise
    mean_i [ ||x_i - g(mu(x_i))||^2 / (2 sigma^2) + ||mu(x_i)||^2 / 2 ] + lambda sum_theta theta^2,
the reconstruction, the RAE's embedding penalty (beta = 1 on this scale: the N(0, I) term of the
energy under the prior's ``training_log_prob``) and RAE-L2's weight penalty on the decoder.
Sampling uses an ex-post density fitted to the codes (``prior=ex_post_gmm``).
"""

from __future__ import annotations

import torch
from torch import nn

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.amortized import AmortizedInference
from lfbm_lightning.inference.posterior import LatentModel, PosteriorInference, TrainingLatents
from lfbm_lightning.langevin import energy_grad


def decoder_weight_penalty(generator: nn.Module, weight: float) -> torch.Tensor:
    """RAE-L2's decoder penalty: ``weight`` * the sum of squares of every generator parameter."""
    return weight * sum(p.pow(2).sum() for p in generator.parameters())


class AutoencoderInference(AmortizedInference):
    """RAE: the encoder mean is the code; no noise, no entropy, no Langevin.

    Training: z = mu(x) (the encoder's ``log_var`` half is unused); the method's loss is the
    surrogate mean_i <grad_z E(z_i), z_i> (gradient to the encoder only, as in
    :func:`~lfbm_lightning.inference.amortized.amortized_elbo`) of
    E(z) = ||x - g(z)||^2 / (2 sigma^2) - training_log_prob(z), plus the decoder penalty; the
    generator's own loss is the reconstruction at z. Reconstruction in evaluation: g(mu(x))
    (or ``eval_refine_steps`` noise-free steps from mu(x), as for the VAE).

    Args:
        encoder, encoder_lr, eval_refine_steps, **chain: as :class:`AmortizedInference`.
        decoder_penalty: lambda >= 0 of the decoder's weight penalty.
        refine_steps, start, persistent: must stay 0, ``"mean"``, false (an RAE has no chain).
    """

    has_elbo = False  # a deterministic code: no q(z|x) to bound log p(x) with
    elbo = PosteriorInference.elbo

    def __init__(
        self,
        encoder: nn.Module,
        encoder_lr: float,
        decoder_penalty: float = 0.0,
        start: str = "mean",
        refine_steps: int = 0,
        eval_refine_steps: int = 0,
        persistent: bool = False,
        **chain,
    ) -> None:
        if refine_steps != 0 or start != "mean":
            raise ConfigError(
                "inference=autoencoder is deterministic: inference.refine_steps must be 0 and "
                f"inference.start 'mean', got {refine_steps!r} and {start!r}"
            )
        super().__init__(
            encoder, encoder_lr, start, refine_steps, eval_refine_steps, persistent, **chain
        )
        ok = isinstance(decoder_penalty, int | float) and not isinstance(decoder_penalty, bool)
        if not ok or decoder_penalty < 0:
            raise ConfigError(
                f"inference.decoder_penalty must be a number >= 0, got {decoder_penalty!r}"
            )
        self.decoder_penalty = float(decoder_penalty)

    def training_latents(
        self, model: LatentModel, batch: dict[str, torch.Tensor], rng: torch.Generator
    ) -> TrainingLatents:
        x, mask = batch["image"], batch.get("mask")
        z = self.encode(x, mask)[0]
        energy, grad = energy_grad(z, model.posterior_energy(x, mask, training=True))
        penalty = decoder_weight_penalty(model.generator, self.decoder_penalty)
        loss = (grad * z).sum(-1).mean() + penalty
        logs = {"train/autoencoder_energy": energy.mean(), "train/decoder_penalty": penalty}
        return TrainingLatents(z=z.detach(), energy=energy, loss=loss, logs=logs)
