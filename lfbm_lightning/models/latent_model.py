"""The LightningModule: a latent prior p(z), a generator g(z) and short-run Langevin inference.

Maximum-likelihood learning (Xie et al. 2023, Pang et al. 2020, Han et al. 2017): for a batch x,

1. infer z ~ p(z | x) with K Langevin steps from N(0, I) on E(z) = -log p(x, z) + const;
2. minimise L = mean_i ||x_i - g(z_i)||^2 / (2 sigma^2) + prior.loss(z) with one backward,
   then step the generator and the prior optimizers (Adam, betas (0.5, 0.999)).

The gradient of L is the Monte-Carlo estimate of -grad log p(x) (Fisher's identity).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lfbm_lightning.inference.langevin import LangevinResult, langevin
from lfbm_lightning.models.energy import posterior_energy_fn, reconstruction_energy
from lfbm_lightning.priors.base import Prior


class LatentPriorModel(pl.LightningModule):
    """Generator + latent prior + Langevin posterior, trained with manual optimization.

    The whole resolved run config is the only constructor argument and is stored in every
    checkpoint, so ``LatentPriorModel.load_from_checkpoint(path)`` rebuilds the model (and
    ``evaluate.py`` the data) from the checkpoint alone.

    Config keys read here: ``prior`` and ``generator`` (instantiated), ``latent_dim``, ``seed``,
    ``inference`` (``n_steps``, ``step_size``, ``eval_steps``, ``eval_step_size``) and
    ``model`` (``sigma``, ``prior_optimizer``, ``generator_optimizer``, ``lr_gamma``).

    Args:
        config: the resolved run config as a plain dict.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.prior: Prior = instantiate(config["prior"])
        self.generator: torch.nn.Module = instantiate(config["generator"])
        model_cfg = config["model"]
        self.sigma = float(model_cfg["sigma"])
        self.inference_cfg = config["inference"]
        self.automatic_optimization = False
        self._langevin_rng: torch.Generator | None = None

    # ------------------------------------------------------------------ inference
    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def langevin_rng(self) -> torch.Generator:
        """Noise generator of the posterior chains, seeded with (seed, global rank).

        Each DDP rank draws different noise, reproducibly; its state is checkpointed.
        """
        if self._langevin_rng is None or self._langevin_rng.device != self.device:
            rng = torch.Generator(device=self.device)
            rng.manual_seed(int(self.config.get("seed", 0)) * 1000 + self.global_rank)
            self._langevin_rng = rng
        return self._langevin_rng

    def infer(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        n_steps: int | None = None,
        step_size: float | None = None,
        noise: bool = True,
        z0: torch.Tensor | None = None,
    ) -> LangevinResult:
        """Sample (noise on) or fit (noise off) z for images x (B, C, H, W) by Langevin.

        Defaults to the training chain (``inference.n_steps`` steps of ``inference.step_size``)
        started from N(0, I).
        """
        n_steps = self.inference_cfg["n_steps"] if n_steps is None else n_steps
        step_size = self.inference_cfg["step_size"] if step_size is None else step_size
        rng = self.langevin_rng()
        if z0 is None:
            z0 = torch.randn(x.shape[0], self.latent_dim, generator=rng, device=x.device)
        energy = posterior_energy_fn(x, self.generator, self.prior, self.sigma, mask)
        return langevin(z0, energy, n_steps, step_size, noise=noise, rng=rng)

    def reconstruct(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, n_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-free Langevin (gradient descent on E) from N(0, I), then decode.

        Uses ``inference.eval_steps`` steps of ``inference.eval_step_size`` unless given.

        Returns:
            (x_hat (B, C, H, W), z (B, d)).
        """
        n_steps = self.inference_cfg["eval_steps"] if n_steps is None else n_steps
        result = self.infer(
            x, mask, n_steps=n_steps, step_size=self.inference_cfg["eval_step_size"], noise=False
        )
        with torch.no_grad():
            return self.generator(result.z), result.z

    @torch.no_grad()
    def sample_images(self, n: int) -> torch.Tensor:
        """Decode n prior samples: images (n, C, H, W) in [-1, 1]."""
        return self.generator(self.prior.sample(n))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, mask = batch["image"], batch.get("mask")
        chain = self.infer(x, mask)
        z = chain.z
        generator_loss = reconstruction_energy(x, self.generator(z), self.sigma, mask).mean()
        prior_loss = self.prior.loss(z)
        loss = generator_loss + prior_loss

        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        self.manual_backward(loss)
        for opt in optimizers:
            opt.step()

        self.log_dict(
            {
                "train/loss": loss.detach(),
                "train/loss_generator": generator_loss.detach(),
                "train/loss_prior": prior_loss.detach(),
                "train/posterior_energy": chain.energy.mean(),
                "train/grad_z_abs": chain.grad_abs_mean,
            },
            prog_bar=False,
            on_step=True,
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=True,
        )
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, logger=False)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, mask = batch["image"], batch.get("mask")
        x_hat, _ = self.reconstruct(x, mask)
        mse = (x - x_hat).pow(2).flatten(1).mean(1)
        self.log("val/mse", mse.mean(), prog_bar=True, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self) -> tuple[list, list]:
        """One Adam per network that has parameters (a fixed Gaussian prior has none).

        Returns ([prior optimizer,] generator optimizer) with one ExponentialLR each, stepped
        once per epoch.
        """
        model_cfg = self.config["model"]
        optimizers = []
        if any(p.requires_grad for p in self.prior.parameters()):
            optimizers.append(instantiate(model_cfg["prior_optimizer"])(self.prior.parameters()))
        optimizers.append(
            instantiate(model_cfg["generator_optimizer"])(self.generator.parameters())
        )
        gamma = float(model_cfg["lr_gamma"])
        schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma) for o in optimizers]
        return optimizers, schedulers

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["langevin_rng_state"] = self.langevin_rng().get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("langevin_rng_state")
        if state is not None:
            self._pending_rng_state = state

    def on_fit_start(self) -> None:
        state = getattr(self, "_pending_rng_state", None)
        if state is not None:
            self.langevin_rng().set_state(state)
            self._pending_rng_state = None
