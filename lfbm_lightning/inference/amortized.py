"""Amortised inference for LFBM-VAE: a ConvNet encoder q(z|x), its reparameterised ELBO, and
the inference method that trains it (alone, or starting short Langevin chains: the hybrid).

The design (there is no public code for LFBM-VAE) is described in ``docs/lfbm_vae.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lfbm_lightning.checks import check_choice, check_int, check_positive
from lfbm_lightning.densities import diag_gaussian_entropy
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.posterior import LatentModel, PosteriorInference, TrainingLatents
from lfbm_lightning.langevin import EnergyFn, energy_grad
from lfbm_lightning.seeds import item_seed

CHAIN_STARTS = ("mean", "sample")


class ConvEncoder(nn.Module):
    """q(z|x) = N(z; mu(x), diag exp(log_var(x))): the generator's ConvNet run backwards.

    ``layers`` is the generator's own list of (out_channels, kernel, stride, padding) blocks
    (``conf/generator/*.yaml``). The encoder visits it in reverse order and replaces each
    ConvTranspose2d by a Conv2d with the same kernel, stride and padding, which inverts the
    spatial size exactly: the image (C, H, W) is brought back to 1 x 1. Block j outputs the
    channel count of the generator block before it; the last block outputs 2 d channels,
    split into mu and log_var. Hidden blocks use LeakyReLU(0.2) like the generator; no
    BatchNorm, so q(z|x) of one image does not depend on the rest of the batch.

    Args:
        in_channels: C of the images.
        latent_dim: d.
        layers: the generator's blocks, first (nearest z) to last (nearest the image).
        image_size: H = W of the images; the stack must reduce it to 1 x 1.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        layers: Sequence[Sequence[int]],
        image_size: int,
    ) -> None:
        super().__init__()
        if len(layers) < 1:
            raise ValueError("an encoder needs at least one layer")
        self.latent_dim = int(latent_dim)
        out_channels = [2 * self.latent_dim] + [int(block[0]) for block in layers[:-1]]
        blocks: list[nn.Module] = []
        in_ch = in_channels
        for j in reversed(range(len(layers))):
            _, kernel, stride, pad = layers[j]
            blocks.append(nn.Conv2d(in_ch, out_channels[j], kernel, stride, pad))
            if j > 0:
                blocks.append(nn.LeakyReLU(0.2))
            in_ch = out_channels[j]
        self.net = nn.Sequential(*blocks)
        with torch.no_grad():
            out = self.net(torch.zeros(1, in_channels, image_size, image_size))
        if out.shape[2:] != (1, 1):
            raise ValueError(
                f"the mirrored generator layers map {image_size}x{image_size} images to "
                f"{tuple(out.shape[2:])}, not 1x1: set inference.encoder.layers to Conv2d "
                "blocks [channels, kernel, stride, padding] (listed from z to image) that do"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> (mu (B, d), log_var (B, d))."""
        mean, log_var = self.net(x).flatten(1).chunk(2, dim=1)
        return mean, log_var


@dataclass
class ElboResult:
    """A single-sample ELBO of q(z|x) and the encoder's loss.

    Attributes:
        z: the reparameterised sample z = mu + exp(log_var / 2) * eps, shape (B, d), detached.
        energy: E(z) at that sample, shape (B,), detached.
        elbo: -E(z) + H[q(z|x)] per example, shape (B,), detached: the ELBO
            E_q[log p(x, z) - log q(z|x)] up to the constant that E(z) omits.
        loss: a scalar whose gradient with respect to mu and log_var (so the encoder) is the
            reparameterised gradient of -mean(elbo), and which carries no gradient to the
            parameters inside E.
    """

    z: torch.Tensor
    energy: torch.Tensor
    elbo: torch.Tensor
    loss: torch.Tensor


def amortized_elbo(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    energy_fn: EnergyFn,
    rng: torch.Generator | None = None,
) -> ElboResult:
    """Single-sample reparameterised ELBO of q = N(mean, diag exp(log_var)) for E = -log p(x, z).

    ELBO = E_q[log p(x, z)] + H[q] is estimated with one z = mean + exp(log_var / 2) * eps and
    the entropy in closed form (same expectation, lower variance than -log q(z|x)). The
    gradient reaches the encoder only, through the surrogate

        loss = mean_i [ <grad_z E(z_i), z_i> - H[q_i] ],

    whose gradient with respect to (mean, log_var) is that of -mean(ELBO), because grad_z E is
    computed with ``torch.autograd.grad`` on a detached copy of z (one forward and backward of
    E, like a Langevin step) and enters as a constant. Parameters inside E (generator, prior)
    get no gradient here: the caller trains them on z with their own losses.

    Args:
        mean: mu(x), shape (B, d).
        log_var: log of the variances, shape (B, d).
        energy_fn: E(z) (B, d) -> (B,), e.g. ||x - g(z)||^2 / (2 sigma^2) - log p(z).
        rng: optional generator for eps.

    Returns:
        An :class:`ElboResult`.
    """
    eps = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=mean.dtype)
    z = mean + torch.exp(0.5 * log_var) * eps
    energy, grad = energy_grad(z, energy_fn)
    entropy = diag_gaussian_entropy(log_var)
    loss = ((grad * z).sum(-1) - entropy).mean()
    return ElboResult(z=z.detach(), energy=energy, elbo=(entropy - energy).detach(), loss=loss)


class AmortizedInference(PosteriorInference):
    """LFBM-VAE: an encoder q(z|x) trained on the ELBO, optionally refined by Langevin.

    Training: the encoder's ELBO (:func:`amortized_elbo`) is the method's own loss; its mean
    (``start: mean``) or reparameterised sample (``start: sample``) starts a chain of
    ``refine_steps`` steps of ``step_size``. With ``refine_steps: 0`` (LFBM-VAE) the generator
    and prior are trained on that sample, which makes the whole loss the -ELBO; otherwise on
    the chain's output (the hybrid, ``conf/inference/amortized_langevin.yaml``).
    Reconstruction: ``eval_refine_steps`` noise-free steps of ``eval_step_size`` from the
    encoder mean (0: g(mu(x)), the encoder's own reconstruction). The encoder is a second
    parameter group of the generator's optimizer, learning rate ``encoder_lr``.

    ``n_steps`` and ``eval_steps`` (set by dataset options) are not used by training or
    reconstruction; ``eval_steps`` stays the length of a full chain from N(0, I).

    Args:
        encoder: q(z|x), images (B, C, H, W) -> (mu (B, d), log_var (B, d)).
        encoder_lr: its learning rate (> 0).
        start: ``"mean"`` or ``"sample"``.
        refine_steps: Langevin steps after the encoder in training (>= 0).
        eval_refine_steps: noise-free steps after the encoder mean in reconstruction (>= 0).
        persistent: must be false (persistent chains are a Langevin option).
        **chain: the shared chain settings of :class:`PosteriorInference`.
    """

    has_elbo = True

    def __init__(
        self,
        encoder: nn.Module,
        encoder_lr: float,
        start: str = "sample",
        refine_steps: int = 0,
        eval_refine_steps: int = 0,
        persistent: bool = False,
        **chain,
    ) -> None:
        super().__init__(**chain)
        if persistent:
            raise ConfigError(
                "inference.persistent needs Langevin inference without encoder: "
                "use inference=langevin or set inference.persistent=false"
            )
        self.encoder = encoder
        self.encoder_lr = check_positive("inference.encoder_lr", encoder_lr)
        self.start_from = check_choice("inference.start", start, CHAIN_STARTS)
        self.refine_steps = check_int("inference.refine_steps", refine_steps, 0)
        self.eval_refine_steps = check_int("inference.eval_refine_steps", eval_refine_steps, 0)

    @property
    def chain_steps(self) -> int:
        return self.refine_steps

    @property
    def eval_chain_steps(self) -> int:
        return self.eval_refine_steps

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu (B, d), log_var (B, d)); missing pixels (mask 0) are zeroed."""
        return self.encoder(x if mask is None else x * mask)

    def seeded_start(
        self, model: LatentModel, index: torch.Tensor, seed: int
    ) -> torch.Tensor | None:
        return None  # the start is the encoder mean: it depends on the image

    def start(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor | None,
        seed: int,
    ) -> torch.Tensor:
        """The encoder mean mu(x) (B, d), whatever the index and seed."""
        with torch.no_grad():
            return self.encode(x, mask)[0]

    def training_latents(
        self, model: LatentModel, batch: dict[str, torch.Tensor], rng: torch.Generator
    ) -> TrainingLatents:
        x, mask = batch["image"], batch.get("mask")
        mean, log_var = self.encode(x, mask)
        energy = model.posterior_energy(x, mask, training=True)
        elbo = amortized_elbo(mean, log_var, energy, rng=rng)
        z0 = elbo.z if self.start_from == "sample" else mean.detach()
        chain = self.chain(
            model, x, mask, z0, self.refine_steps, self.step_size, rng=rng, training=True
        )
        logs = {"train/elbo": elbo.elbo.mean()}
        if self.refine_steps > 0:
            logs["train/posterior_energy"] = chain.energy.mean()
            logs["train/grad_z_abs"] = chain.grad_abs_mean
        return TrainingLatents(z=chain.z, energy=chain.energy, loss=elbo.loss, logs=logs)

    @torch.no_grad()
    def elbo(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor,
        seed: int,
        n_samples: int,
    ) -> torch.Tensor:
        """ELBO(x) = E_q[-E(z)] + H[q(z|x)], shape (B,), up to the constant of log p(x|z) that
        E omits: ``n_samples`` reparameterised draws per image, seeded by (seed, index[i]) so an
        image's value depends on it alone; the entropy in closed form."""
        mean, log_var = self.encode(x, mask)
        eps = torch.stack(
            [
                torch.randn(
                    n_samples,
                    mean.shape[1],
                    generator=torch.Generator().manual_seed(item_seed(seed, i)),
                )
                for i in index.tolist()
            ],
            dim=1,
        ).to(mean)  # (S, B, d)
        z = mean + torch.exp(0.5 * log_var) * eps
        energy = model.posterior_energy(
            x.repeat(n_samples, *[1] * (x.dim() - 1)),
            None if mask is None else mask.repeat(n_samples, *[1] * (mask.dim() - 1)),
        )
        energies = energy(z.flatten(0, 1)).view(n_samples, -1)
        return diag_gaussian_entropy(log_var) - energies.mean(0)

    def codes(
        self, model: LatentModel, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The encoder mean mu(x) (B, d)."""
        with torch.no_grad():
            return self.encode(x, mask)[0]

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.encoder.parameters()), "lr": self.encoder_lr}]
