"""The LightningModule: a latent prior p(z), a generator g(z) and a posterior inference method.

Maximum-likelihood learning (docs/paper.md, "Learning gradient"), for a batch x:
1. infer z ~ p(z | x) with the inference method (``conf/inference/*.yaml``): short-run Langevin
   on E(z) = -log p(x, z) + const, or an encoder q(z|x) with optional Langevin refinement;
2. minimise L = mean_i ||x_i - g(z_i)||^2 / (2 sigma^2) + prior.loss(z) [+ the method's own
   loss, e.g. the encoder's -ELBO] with one backward, then step the prior and the generator
   optimizers (Adam, betas (0.5, 0.999)).
grad L is the Monte-Carlo estimate of -grad log p(x) (Fisher's identity); with an encoder and
no Langevin steps it is the reparameterised gradient of -ELBO (docs/lfbm_vae.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from lfbm_lightning.errors import DivergenceError, LfbmError
from lfbm_lightning.inference.fit import PassCount
from lfbm_lightning.inference.posterior import PosteriorInference
from lfbm_lightning.langevin import EnergyFn, LangevinResult
from lfbm_lightning.models.energy import posterior_energy_fn, reconstruction_energy
from lfbm_lightning.priors.prior import Prior
from lfbm_lightning.seeds import item_seed

log = logging.getLogger(__name__)

DEFAULT_INFERENCE = "lfbm_lightning.inference.LangevinInference"
PRIOR_SEED_OFFSET = 2**32  # prior-sampler seeds never collide with Langevin seeds
CHECKED_BEFORE_BACKWARD = ("z", "posterior energy", "loss")
RNG_NAMES = ("langevin", "prior", "torch")  # the per-rank random streams of a checkpoint


def validation_fit(
    validation: Mapping[str, Any] | None, eval_steps: int, sanity: bool = False
) -> tuple[str, int]:
    """(fit, steps) of the ``val/mse`` reconstruction from ``model.validation``.

    ``fit: fast`` (the default): L-BFGS on z (:mod:`~lfbm_lightning.inference.fit`) with at
    most min(``max_passes``, eval_steps) passes per image; ``fit: protocol``: the paper's
    ``eval_steps`` noise-free steps (the protocol-exact monitor). The sanity check before the
    first epoch fits min(``sanity_steps``, eval_steps) steps: it only exercises the code path.
    Without a ``model.validation`` node (configs of older runs): the protocol.

    Args:
        validation: the ``model.validation`` node (``fit``, ``max_passes``, ``sanity_steps``).
        eval_steps: the inference method's reconstruction steps (``eval_chain_steps``).
        sanity: whether this is Lightning's sanity check.
    """
    validation = validation or {}
    fit = str(validation.get("fit", "protocol"))
    if sanity:
        return fit, min(int(validation.get("sanity_steps", eval_steps)), eval_steps)
    cap = validation.get("max_passes")
    if fit == "protocol" or cap is None:
        return fit, eval_steps
    return fit, min(int(cap), eval_steps)


def build_posterior(inference: dict[str, Any]) -> PosteriorInference:
    """The inference method of an ``inference`` config node (``_target_`` absent: Langevin).

    A method's own config error (:class:`~lfbm_lightning.errors.ConfigError`) is raised as it
    is, not wrapped in Hydra's InstantiationException, so the user sees its one line.
    """
    try:
        return instantiate({"_target_": DEFAULT_INFERENCE, **inference})
    except InstantiationException as err:
        if isinstance(err.__cause__, LfbmError):
            raise err.__cause__ from None
        raise


class LatentPriorModel(pl.LightningModule):
    """Generator + latent prior + posterior inference, trained with manual optimization.

    The whole resolved run config is the only constructor argument and is stored in every
    checkpoint, so ``LatentPriorModel.load_from_checkpoint(path)`` rebuilds the model (and
    ``evaluate.py`` the data) from the checkpoint alone.

    Config keys read here: ``prior``, ``generator`` and ``inference`` (instantiated; an
    ``inference`` node without ``_target_`` is short-run Langevin), ``seed`` and ``model``
    (``sigma``, ``prior_optimizer``, ``generator_optimizer``, ``lr_gamma``, ``on_divergence``).

    Randomness in training comes from two generators per rank, both checkpointed: the
    posterior chains' (:meth:`langevin_rng`, seed * 1000 + rank) and the prior sampler's
    (:meth:`prior_rng`, 2^32 + seed * 1000 + rank: an EBM prior's Langevin samples). A
    checkpoint holds every rank's states (``rng_states[rank]``), and each rank restores its own.

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
        self.seed = int(config.get("seed", 0))
        self.inference_cfg = config["inference"]
        self.posterior = build_posterior(self.inference_cfg)
        self.posterior.prepare_generator(self.generator)
        # read by DDP: parameters the inference method synchronises itself (DAMC's sampler)
        self._ddp_params_and_buffers_to_ignore = [
            f"posterior.{name}" for name in self.posterior.ddp_ignored()
        ]
        self.automatic_optimization = False
        self._rngs: dict[str, torch.Generator] = {}
        self._pending_rng_states: dict[int, dict[str, torch.Tensor]] = {}  # by rank
        self._resumed_step = 0  # the global step of the checkpoint resumed from
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
        """Langevin steps of a training chain (the inference method's)."""
        return self.posterior.chain_steps

    @property
    def eval_chain_steps(self) -> int:
        """Noise-free steps of a reconstruction (the inference method's)."""
        return self.posterior.eval_chain_steps

    @property
    def encoder(self) -> torch.nn.Module | None:
        """The inference method's encoder q(z|x) when it has one (amortised), else None."""
        return getattr(self.posterior, "encoder", None)

    def _rank_rng(self, name: str, seed: int) -> torch.Generator:
        rng = self._rngs.get(name)
        if rng is None or rng.device != self.device:
            rng = torch.Generator(device=self.device)
            rng.manual_seed(seed + self.global_rank)
            self._rngs[name] = rng
        return rng

    def langevin_rng(self) -> torch.Generator:
        """Noise generator of the posterior chains, seeded with seed * 1000 + global rank.

        Each DDP rank draws different noise, reproducibly; its state is checkpointed.
        """
        return self._rank_rng("langevin", self.seed * 1000)

    def prior_rng(self) -> torch.Generator:
        """Generator of the prior's own samples in training (an EBM's Langevin starts and
        noise), seeded with 2^32 + seed * 1000 + global rank; checkpointed."""
        return self._rank_rng("prior", PRIOR_SEED_OFFSET + self.seed * 1000)

    def posterior_energy(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        autocast_dtype: torch.dtype | None = None,
        compile: bool | str = False,
        training: bool = False,
    ) -> EnergyFn:
        """E(z) = ||mask * (x - g(z))||^2 / (2 sigma^2) - log p(z) of images x
        (:func:`~lfbm_lightning.models.energy.posterior_energy_fn`); ``training``: with the
        prior's ``training_log_prob``."""
        return posterior_energy_fn(
            x,
            self.generator,
            self.prior,
            self.sigma,
            mask,
            autocast_dtype=autocast_dtype,
            compile=compile,
            training=training,
        )

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of the encoder: (mu (B, d), log_var (B, d)); missing pixels are zeroed."""
        if self.encoder is None:
            raise RuntimeError("this model has no encoder (inference without 'encoder' node)")
        return self.posterior.encode(x, mask)

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

        Defaults: :attr:`chain_steps` steps of ``inference.step_size``, started from the
        inference method's evaluation start of x (:meth:`PosteriorInference.start`, examples
        numbered by position), noise from :meth:`langevin_rng` unless ``rng`` is given.
        """
        n_steps = self.chain_steps if n_steps is None else n_steps
        step_size = self.posterior.step_size if step_size is None else step_size
        rng = self.langevin_rng() if rng is None else rng
        if z0 is None:
            z0 = self.posterior.start(self, x, mask, None, self.seed)
        return self.posterior.chain(self, x, mask, z0, n_steps, step_size, noise, rng)

    def reconstruct(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        n_steps: int | None = None,
        *,
        step_size: float | None = None,
        index: torch.Tensor | None = None,
        seed: int | None = None,
        z0: torch.Tensor | None = None,
        fit: str = "protocol",
        count: PassCount | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The one reconstruction entry point (``val/mse``, the image grids and every task):
        the inference method's :meth:`PosteriorInference.reconstruct` of images x (B, C, H, W).

        A deterministic function of (model, x, index, seed) that never draws from the training
        noise stream (so evaluation cannot change a resumed run).

        Args:
            x: images (B, C, H, W).
            mask: optional (B, 1, H, W), 1 = observed: only observed pixels enter the energy.
            n_steps, step_size: the fit's steps and s (None: the method's evaluation chain,
                ``inference.eval_steps`` = 20 K, and ``inference.eval_step_size``).
            index: example indices (B,) that seed each chain's start (None: positions).
            seed: the starts' seed (None: the run's ``seed``).
            z0: the start (B, d) instead (None: the method's start of (x, index, seed)).
            fit: ``protocol`` (noise-free Langevin) or ``fast`` (L-BFGS, :mod:`~.fit`).
            count: adds the fit's generator passes.

        Returns:
            (x_hat (B, C, H, W), z (B, d)).
        """
        return self.posterior.reconstruct(
            self,
            x,
            mask,
            index=index,
            seed=self.seed if seed is None else seed,
            n_steps=n_steps,
            step_size=step_size,
            z0=z0,
            fit=fit,
            count=count,
        )

    @torch.no_grad()
    def sample_images(self, n: int) -> torch.Tensor:
        """Decode n prior samples: images (n, C, H, W) in [-1, 1]."""
        return self.generator(self.prior.sample(n))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, mask = batch["image"], batch.get("mask")
        latents = self.posterior.training_latents(self, batch, self.langevin_rng())
        z = latents.z
        generator_loss = reconstruction_energy(x, self.generator(z), self.sigma, mask).mean()
        prior_loss = self._prior_loss(z)
        loss = generator_loss + prior_loss  # logged; a method's own loss has no useful value
        total = loss if latents.loss is None else loss + latents.loss

        optimizers = self._model_optimizers()
        for opt in optimizers:
            opt.zero_grad()
        diverged = self._first_non_finite(
            dict(zip(CHECKED_BEFORE_BACKWARD, (z, latents.energy, total), strict=True)),
            skip_nan_energy=True,
        )
        diverged = self._divergence_on_any_rank(diverged)  # all ranks back up, or none
        if diverged is None:
            self.manual_backward(total)
            # the gradients are averaged over the ranks: the same verdict on every rank
            diverged = self._first_non_finite({"gradient": self._gradients()})
        if diverged is not None:
            return self._on_divergence(diverged, batch_idx)
        for opt in optimizers:
            opt.step()
        method_logs = self.posterior.after_step(self, batch, z)

        logs = {
            **latents.logs,
            **method_logs,
            "train/loss": loss.detach(),
            "train/loss_generator": generator_loss.detach(),
            "train/loss_prior": prior_loss.detach(),
        }
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

    def _prior_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The prior's loss on the posterior samples z (B, d); a prior that runs its own chains
        in its loss (an EBM) starts them where the inference method says (DAMC: its sampler's
        unconditional draws), else at N(0, I)."""
        rng = self.prior_rng()
        start = None
        if self.prior.chains_in_loss:
            start = self.posterior.prior_chain_start(self, z.shape[0], rng)
        return self.prior.loss(z, rng=rng, start=start)

    def _model_optimizers(self) -> list:
        """The prior's and the generator's optimizers (Lightning's wrappers), without the
        inference method's own (:meth:`PosteriorInference.make_optimizer`), which it steps."""
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        own = self.posterior.optimizer
        return [opt for opt in optimizers if own is None or opt.optimizer is not own]

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

    def _divergence_on_any_rank(self, local: str | None) -> str | None:
        """This rank's non-finite quantity (or None), agreed on by every DDP rank.

        Under DDP each rank's ``manual_backward`` all-reduces gradient buckets, so every rank
        must take the same branch: if any rank found a non-finite quantity, all skip the batch
        (or all stop). One all-gather of a code per rank; the first diverged rank is named,
        e.g. ``"z on rank 1"``. Without a process group: ``local`` unchanged.
        """
        if self.trainer.world_size == 1:
            return local
        code = 0 if local is None else CHECKED_BEFORE_BACKWARD.index(local) + 1
        codes = self.all_gather(torch.tensor(code, device=self.device)).flatten().tolist()
        for rank, found in enumerate(codes):
            if found:
                return f"{CHECKED_BEFORE_BACKWARD[found - 1]} on rank {rank}"
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

    def on_train_epoch_end(self) -> None:
        """Fit an ex-post prior to the training codes (before the epoch's checkpoints are
        written), then step the learning-rate schedulers."""
        if self.prior.ex_post:
            self.prior.fit_codes(self.training_codes())
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    @torch.no_grad()
    def training_codes(self, batch_size: int = 256) -> torch.Tensor:
        """The inference method's codes (:meth:`PosteriorInference.codes`) of every image of
        the training split, in split order: (N_train, d). Every DDP rank encodes the whole
        split, so a deterministic fit gives every rank the same prior."""
        datamodule = self.trainer.datamodule
        split = datamodule.splits["train"]
        codes = []
        for batch in torch.utils.data.DataLoader(split, batch_size=batch_size):
            mask = batch.get("mask")
            codes.append(
                self.posterior.codes(
                    self,
                    batch["image"].to(self.device),
                    None if mask is None else mask.to(self.device),
                )
            )
        return torch.cat(codes)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, mask = batch["image"], batch.get("mask")
        sanity = self.trainer.sanity_checking
        fit, steps = validation_fit(
            self.config["model"].get("validation"), self.eval_chain_steps, sanity
        )
        x_hat, _ = self.reconstruct(x, mask, steps, index=batch["index"], fit=fit)
        mse = (x - x_hat).pow(2).flatten(1).mean(1)
        self.log("val/mse", mse.mean(), prog_bar=True, batch_size=x.shape[0], sync_dist=True)

    def configure_optimizers(self) -> tuple[list, list]:
        """One Adam per network that has parameters (a fixed Gaussian prior has none).

        Returns ([prior optimizer,] generator optimizer [, the method's own]) with one
        ExponentialLR for each of the first two, stepped once per epoch. An encoder's
        parameters are further param groups of the generator optimizer
        (:meth:`PosteriorInference.param_groups`); a method with its own optimizer and schedule
        (DAMC's sampler, :meth:`PosteriorInference.make_optimizer`) steps it itself, outside
        Lightning's count, so ``global_step`` counts the same steps for every method. Its state
        is saved and restored with the others.
        """
        model_cfg = self.config["model"]
        optimizers = []
        if any(p.requires_grad for p in self.prior.parameters()):
            optimizers.append(instantiate(model_cfg["prior_optimizer"])(self.prior.parameters()))
        groups = [{"params": list(self.generator.parameters())}, *self.posterior.param_groups()]
        optimizers.append(instantiate(model_cfg["generator_optimizer"])(groups))
        gamma = float(model_cfg["lr_gamma"])
        schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma) for o in optimizers]
        own = self.posterior.make_optimizer()
        return optimizers + ([] if own is None else [own]), schedulers

    # ------------------------------------------------------------------ checkpoints
    def _rng_states(self) -> dict[str, torch.Tensor]:
        """This rank's random streams: name -> state (uint8 CPU tensor)."""
        return {
            "langevin": self.langevin_rng().get_state(),
            "prior": self.prior_rng().get_state(),
            "torch": torch.get_rng_state(),
        }

    def _gather_rng_states(self) -> dict[int, dict[str, torch.Tensor]]:
        """Every rank's :meth:`_rng_states`, keyed by global rank (a collective under DDP:
        Lightning builds a checkpoint on every rank and rank 0 writes it). The states of one
        device type have one size, so each stream is one all-gather of (world size, n) bytes."""
        local = self._rng_states()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return {self.global_rank: local}
        gathered = {
            name: self.all_gather(state.to(self.device)).cpu() for name, state in local.items()
        }
        return {
            rank: {name: states[rank].clone() for name, states in gathered.items()}
            for rank in range(trainer.world_size)
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what an exact resume needs beyond Lightning's own state: every rank's chain
        and prior-sampler noise streams and global torch RNG (``rng_states[rank]``), the
        skipped-batch count and the inference method's state (persistent chains)."""
        checkpoint["rng_states"] = self._gather_rng_states()
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["posterior"] = self.posterior.checkpoint_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is None:  # a checkpoint of an earlier version: rank 0's streams only
            old = {name: checkpoint.get(f"{name}_rng_state") for name in RNG_NAMES}
            states = {0: {name: s for name, s in old.items() if s is not None}}
        self._pending_rng_states = states
        self._resumed_step = int(checkpoint.get("global_step", 0))
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
        self.posterior.load_checkpoint_state(checkpoint.get("posterior", {}))

    def _restore_rng(self, name: str, rng: torch.Generator, state: torch.Tensor) -> None:
        """Set ``rng`` to a checkpointed ``state``; a state of another device type (a CUDA
        generator's is 16 bytes, a CPU one's 5056) reseeds it instead, from its seed and the
        checkpoint's global step, with a one-line warning: the resume goes on, not bit-exact."""
        if state.numel() == rng.get_state().numel():
            rng.set_state(state)
            return
        rng.manual_seed(item_seed(rng.initial_seed(), self._resumed_step))
        log.warning(
            "the checkpoint's %s noise state (%d bytes) is not for a %s generator: reseeded "
            "from seed and global step %d (the resume is not exact)",
            name,
            state.numel(),
            rng.device.type,
            self._resumed_step,
        )

    def on_fit_start(self) -> None:
        """Create the per-rank generators on the model's device (restoring this rank's states
        when resuming) and let the inference method set up (persistent chains). A rank the
        checkpoint has no states for (more ranks than when it was saved) keeps its fresh seeds,
        with a warning."""
        by_rank, self._pending_rng_states = self._pending_rng_states, {}
        states = by_rank.get(self.global_rank)
        if by_rank and states is None:
            log.warning(
                "the checkpoint has no random streams for rank %d (saved with ranks %s): it "
                "starts from fresh seeds (the resume is not exact)",
                self.global_rank,
                sorted(by_rank),
            )
        states = states or {}
        for name, rng in (("langevin", self.langevin_rng()), ("prior", self.prior_rng())):
            if name in states:
                self._restore_rng(name, rng, states[name])
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        self.posterior.setup(self)
