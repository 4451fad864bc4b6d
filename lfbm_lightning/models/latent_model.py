"""The LightningModule: a latent prior p(z), a generator g(z) and posterior inference.

Maximum-likelihood learning (Xie et al. 2023, Pang et al. 2020, Han et al. 2017): for a batch x,

1. infer z ~ p(z | x) with K Langevin steps on E(z) = -log p(x, z) + const, started from
   N(0, I), from a persistent per-example chain (ABP), or from an encoder q(z|x) (LFBM-VAE);
2. minimise L = mean_i ||x_i - g(z_i)||^2 / (2 sigma^2) + prior.loss(z) [+ encoder loss] with
   one backward, then step the prior and the generator optimizers (Adam, betas (0.5, 0.999)).

The gradient of L is the Monte-Carlo estimate of -grad log p(x) (Fisher's identity); with an
encoder and no Langevin steps it is the reparameterised gradient of -ELBO (docs/lfbm_vae.md).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from lfbm_lightning.errors import DivergenceError
from lfbm_lightning.inference.amortized import amortized_elbo
from lfbm_lightning.inference.langevin import LangevinResult, langevin
from lfbm_lightning.models.energy import posterior_energy_fn, reconstruction_energy
from lfbm_lightning.priors.base import Prior

CHAIN_STARTS = ("mean", "sample")


class LatentPriorModel(pl.LightningModule):
    """Generator + latent prior + posterior inference, trained with manual optimization.

    The whole resolved run config is the only constructor argument and is stored in every
    checkpoint, so ``LatentPriorModel.load_from_checkpoint(path)`` rebuilds the model (and
    ``evaluate.py`` the data) from the checkpoint alone.

    Inference (the ``inference`` config node) is one of:

    - Langevin (``conf/inference/langevin.yaml``): chains of ``n_steps`` steps of
      ``step_size`` from N(0, I), or, with ``persistent: true``, from each training example's
      last chain state (ABP; the states live in a (N_train, d) buffer saved in checkpoints);
      reconstruction by ``eval_steps`` noise-free steps of ``eval_step_size`` from N(0, I).
    - amortised (an ``encoder`` node, ``conf/inference/amortized*.yaml``): the encoder
      q(z|x) is trained with the ELBO (:func:`~lfbm_lightning.inference.amortized_elbo`) and
      its mean (``start: mean``) or reparameterised sample (``start: sample``) starts chains
      of ``refine_steps`` steps; with ``refine_steps: 0`` (LFBM-VAE) the generator and prior
      are trained on that sample, which makes the whole loss the -ELBO, otherwise on the
      chains' output (the hybrid). Reconstruction: ``eval_refine_steps`` noise-free steps
      from the encoder mean. The encoder's parameters are a second param group of the
      generator's optimizer, with learning rate ``encoder_lr``. (Separate keys, because
      dataset options set ``n_steps`` and ``eval_steps`` to their K.)

    Config keys read here: ``prior``, ``generator`` and ``inference.encoder`` (instantiated),
    ``seed``, ``inference`` (above) and ``model`` (``sigma``, ``prior_optimizer``,
    ``generator_optimizer``, ``lr_gamma``).

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
        if self.inference_cfg.get("channels_last", False):  # benchmarks/README.md
            self.generator.to(memory_format=torch.channels_last)
        encoder_cfg = self.inference_cfg.get("encoder")
        self.encoder: torch.nn.Module | None = instantiate(encoder_cfg) if encoder_cfg else None
        self.persistent = bool(self.inference_cfg.get("persistent", False))
        if self.encoder is not None:
            if self.persistent:
                raise ValueError("inference.persistent needs Langevin inference without encoder")
            if self.inference_cfg["start"] not in CHAIN_STARTS:
                raise ValueError(
                    f"inference.start must be one of {CHAIN_STARTS}, "
                    f"got {self.inference_cfg['start']!r}"
                )
        self.automatic_optimization = False
        self._langevin_rng: torch.Generator | None = None
        self._chains: torch.Tensor | None = None  # (N_train, d) persistent chain states
        self._pending_chains: torch.Tensor | None = None  # from a checkpoint, until fit starts
        self._pending_rng_states: dict[str, torch.Tensor] = {}  # from a checkpoint
        self.skipped_batches = 0
        if model_cfg.get("on_divergence", "stop") not in ("stop", "skip"):
            raise ValueError(
                f"model.on_divergence must be 'stop' or 'skip', got {model_cfg['on_divergence']!r}"
            )

    # ------------------------------------------------------------------ inference
    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def chain_steps(self) -> int:
        """Langevin steps of a training chain (``refine_steps`` with an encoder, else
        ``n_steps``)."""
        key = "n_steps" if self.encoder is None else "refine_steps"
        return int(self.inference_cfg[key])

    @property
    def eval_chain_steps(self) -> int:
        """Noise-free steps of a reconstruction (``eval_refine_steps`` with an encoder, else
        ``eval_steps``)."""
        key = "eval_steps" if self.encoder is None else "eval_refine_steps"
        return int(self.inference_cfg[key])

    def langevin_rng(self) -> torch.Generator:
        """Noise generator of the posterior chains, seeded with (seed, global rank).

        Each DDP rank draws different noise, reproducibly; its state is checkpointed.
        """
        if self._langevin_rng is None or self._langevin_rng.device != self.device:
            rng = torch.Generator(device=self.device)
            rng.manual_seed(int(self.config.get("seed", 0)) * 1000 + self.global_rank)
            self._langevin_rng = rng
        return self._langevin_rng

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of the encoder: (mu (B, d), log_var (B, d)); missing pixels are zeroed."""
        if self.encoder is None:
            raise RuntimeError("this model has no encoder (inference without 'encoder' node)")
        return self.encoder(x if mask is None else x * mask)

    def infer(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        n_steps: int | None = None,
        step_size: float | None = None,
        noise: bool = True,
        z0: torch.Tensor | None = None,
        rng: torch.Generator | None = None,
    ) -> LangevinResult:
        """Sample (noise on) or fit (noise off) z for images x (B, C, H, W) by Langevin.

        Defaults to the training chain (:attr:`chain_steps` steps of ``inference.step_size``)
        started from the encoder's mean when the model has an encoder, else from N(0, I),
        drawing from the training noise stream :meth:`langevin_rng` unless ``rng`` is given.
        """
        n_steps = self.chain_steps if n_steps is None else n_steps
        step_size = self.inference_cfg["step_size"] if step_size is None else step_size
        rng = self.langevin_rng() if rng is None else rng
        if z0 is None and self.encoder is not None:
            with torch.no_grad():
                z0 = self.encode(x, mask)[0]
        elif z0 is None:
            z0 = torch.randn(x.shape[0], self.latent_dim, generator=rng, device=x.device)
        autocast = self.inference_cfg.get("autocast")  # fast-step options: benchmarks/README.md
        energy = posterior_energy_fn(
            x,
            self.generator,
            self.prior,
            self.sigma,
            mask,
            autocast_dtype=getattr(torch, autocast) if autocast else None,
            compile=self.inference_cfg.get("compile", False),
        )
        frozen = (self.generator, self.prior)
        return langevin(z0, energy, n_steps, step_size, noise=noise, rng=rng, frozen=frozen)

    def reconstruct(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, n_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-free Langevin (gradient descent on E), then decode.

        Starts from the encoder's mean when the model has one (``n_steps = 0``: the plain
        encoder reconstruction), else from N(0, I) drawn from a generator seeded afresh with
        ``seed``: a reconstruction is a deterministic function of (model, x) and never draws
        from the training noise stream (so evaluation cannot change a resumed run). Uses
        :attr:`eval_chain_steps` steps of ``inference.eval_step_size`` unless given.

        Returns:
            (x_hat (B, C, H, W), z (B, d)).
        """
        n_steps = self.eval_chain_steps if n_steps is None else n_steps
        rng = torch.Generator(device=x.device).manual_seed(int(self.config.get("seed", 0)))
        result = self.infer(
            x,
            mask,
            n_steps=n_steps,
            step_size=self.inference_cfg["eval_step_size"],
            noise=False,
            rng=rng,
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
        logs: dict[str, torch.Tensor] = {}
        z0, encoder_loss = None, None
        if self.encoder is not None:
            mean, log_var = self.encode(x, mask)
            energy = posterior_energy_fn(x, self.generator, self.prior, self.sigma, mask)
            elbo = amortized_elbo(mean, log_var, energy, rng=self.langevin_rng())
            z0 = elbo.z if self.inference_cfg["start"] == "sample" else mean.detach()
            encoder_loss = elbo.loss
            logs["train/elbo"] = elbo.elbo.mean()
        elif self._chains is not None:
            z0 = self._chains[batch["index"]]
        chain = self.infer(x, mask, z0=z0)
        z = chain.z
        generator_loss = reconstruction_energy(x, self.generator(z), self.sigma, mask).mean()
        prior_loss = self.prior.loss(z)
        loss = generator_loss + prior_loss  # logged; the encoder's surrogate has no useful value
        total = loss if encoder_loss is None else loss + encoder_loss

        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        diverged = self._first_non_finite(
            {"z": z, "posterior energy": chain.energy, "loss": total}, skip_nan_energy=True
        )
        if diverged is None:
            self.manual_backward(total)
            diverged = self._first_non_finite({"gradient": self._gradients()})
        if diverged is not None:
            return self._on_divergence(diverged, batch_idx)
        for opt in optimizers:
            opt.step()
        if self._chains is not None:
            self._store_chains(batch["index"], z)

        logs.update(
            {
                "train/loss": loss.detach(),
                "train/loss_generator": generator_loss.detach(),
                "train/loss_prior": prior_loss.detach(),
            }
        )
        if self.chain_steps > 0:
            logs["train/posterior_energy"] = chain.energy.mean()
            logs["train/grad_z_abs"] = chain.grad_abs_mean
        self.log_dict(
            logs,
            prog_bar=False,
            on_step=True,
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=True,
        )
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, logger=False, sync_dist=True)
        return loss.detach()

    def _gradients(self) -> torch.Tensor:
        """All parameter gradients flattened into one vector (empty when there are none)."""
        grads = [p.grad.flatten() for p in self.parameters() if p.grad is not None]
        return torch.cat(grads) if grads else torch.zeros(0, device=self.device)

    @staticmethod
    def _first_non_finite(
        tensors: dict[str, torch.Tensor], skip_nan_energy: bool = False
    ) -> str | None:
        """Name of the first tensor holding NaN or Inf, else None (one host sync per call).

        A zero-step chain reports its energy as NaN by construction; ``skip_nan_energy``
        ignores an all-NaN energy then.
        """
        for name, tensor in tensors.items():
            if skip_nan_energy and name == "posterior energy" and tensor.isnan().all():
                continue
            if not bool(torch.isfinite(tensor).all()):
                return name
        return None

    def _on_divergence(self, quantity: str, batch_idx: int) -> torch.Tensor:
        """Stop the run (``model.on_divergence: stop``) or skip the batch (``skip``).

        The optimizers have not stepped, so the parameters stay those of the last good step
        and no checkpoint with NaN weights is ever written. Skipped batches are counted in
        ``train/skipped_batches``.
        """
        policy = self.config["model"].get("on_divergence", "stop")
        where = f"epoch {self.current_epoch}, batch {batch_idx}, global step {self.global_step}"
        if policy != "skip":
            raise DivergenceError(
                f"non-finite {quantity} at {where}: training stopped before the optimizer "
                "step, the weights are those of the last good step (set "
                "model.on_divergence=skip to skip such batches)"
            )
        for opt in self.trainer.optimizers:
            opt.zero_grad()
        self.skipped_batches += 1
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True)
        return torch.tensor(float("nan"))

    def _store_chains(self, index: torch.Tensor, z: torch.Tensor) -> None:
        """Write the chains' final states back; under DDP every rank gets every rank's."""
        if self.trainer.world_size > 1:
            index = self.all_gather(index).flatten(0, 1)
            z = self.all_gather(z).flatten(0, 1)
        self._chains[index] = z

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
        once per epoch. The encoder, when there is one, is a second param group of the
        generator optimizer (learning rate ``inference.encoder_lr``), so the number of
        optimizers, and what ``global_step`` counts, do not depend on the inference method.
        """
        model_cfg = self.config["model"]
        optimizers = []
        if any(p.requires_grad for p in self.prior.parameters()):
            optimizers.append(instantiate(model_cfg["prior_optimizer"])(self.prior.parameters()))
        groups = [{"params": list(self.generator.parameters())}]
        if self.encoder is not None:
            groups.append(
                {
                    "params": list(self.encoder.parameters()),
                    "lr": float(self.inference_cfg["encoder_lr"]),
                }
            )
        optimizers.append(instantiate(model_cfg["generator_optimizer"])(groups))
        gamma = float(model_cfg["lr_gamma"])
        schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma) for o in optimizers]
        return optimizers, schedulers

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what an exact resume needs beyond Lightning's own state: the Langevin noise
        stream, the global torch RNG (EBM prior sampling), skipped-batch count, chains."""
        checkpoint["langevin_rng_state"] = self.langevin_rng().get_state()
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["skipped_batches"] = self.skipped_batches
        if self._chains is not None:
            checkpoint["persistent_chains"] = self._chains.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_rng_states = {
            key: checkpoint[key]
            for key in ("langevin_rng_state", "torch_rng_state")
            if key in checkpoint
        }
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
        self._pending_chains = checkpoint.get("persistent_chains")

    def on_fit_start(self) -> None:
        states, self._pending_rng_states = self._pending_rng_states, {}
        if "langevin_rng_state" in states:
            self.langevin_rng().set_state(states["langevin_rng_state"])
        if "torch_rng_state" in states:
            torch.set_rng_state(states["torch_rng_state"])
        if self.persistent:
            self._chains = self._initial_chains()

    def _initial_chains(self) -> torch.Tensor:
        """Chain states (N_train, d): from the checkpoint when resuming, else N(0, I) draws.

        N_train is the size of the data module's training split.
        """
        datamodule = self.trainer.datamodule
        if datamodule is None or "train" not in getattr(datamodule, "splits", {}):
            raise RuntimeError(
                "inference.persistent needs a data module with splits['train'] "
                "(trainer.fit(model, datamodule=...))"
            )
        shape = (len(datamodule.splits["train"]), self.latent_dim)
        chains, self._pending_chains = self._pending_chains, None
        if chains is None:
            return torch.randn(shape, generator=self.langevin_rng(), device=self.device)
        if tuple(chains.shape) != shape:
            raise ValueError(
                f"the checkpoint's persistent chains have shape {tuple(chains.shape)}, but "
                f"the training split needs {shape}"
            )
        return chains.to(self.device)
