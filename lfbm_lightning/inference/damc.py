"""Diffusion-amortised MCMC (DAMC, Yu et al. 2023): short posterior chains started by Q(z | x).

Training, per batch: a slowly updated (EMA) copy of the latent diffusion sampler Q draws the
chains' starts; ``n_steps`` Langevin steps of ``step_size`` refine them; the generator and
prior are trained on the chains' z; then Q takes ``updates`` AdamW steps on its denoising loss
on (x, z) (plus, with ``unconditional``, on z alone: the aggregate-posterior sampler that starts
an EBM prior's chains). Evaluation fits start at N(0, I) (the paper's protocol) or, with
``eval_start: q``, at a draw of Q(x) seeded by (seed, example) followed by
``eval_refine_steps`` noise-free steps. docs/damc.md.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist

from lfbm_lightning.checks import check_bool, check_choice, check_int, check_positive
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.diffusion_sampler import LatentDiffusion
from lfbm_lightning.inference.posterior import LatentModel, PosteriorInference, TrainingLatents
from lfbm_lightning.seeds import item_seed

EVAL_STARTS = ("normal", "q")


class DamcInference(PosteriorInference):
    """Langevin posterior chains started by an amortised diffusion sampler Q(z | x).

    Q is trained by its own AdamW (the model's third optimizer, :meth:`make_optimizer`),
    outside the model's backward: under DDP its gradients are averaged over the ranks by one
    all-reduce per update, and DDP itself ignores Q (:meth:`ddp_ignored`). Its learning rate
    is ``lr * lr_decay ** (iterations // lr_decay_every)``, at least ``lr_min``; the EMA copy
    moves ``ema <- (1 - ema_rate) ema + ema_rate Q`` every ``ema_every`` iterations. Q, its EMA
    copy and the iteration count are in the state dict; its optimizer state in the checkpoint.

    Args:
        sampler: Q, a :class:`LatentDiffusion`.
        lr: Q's learning rate (> 0).
        betas: Adam betas of Q's optimizer.
        weight_decay: AdamW weight decay of Q.
        updates: Q's optimizer steps per training iteration (>= 1).
        ema_rate: in (0, 1].
        ema_every: iterations between EMA updates (>= 1).
        lr_decay: factor in (0, 1] applied every ``lr_decay_every`` iterations (>= 1).
        lr_min: floor of the decayed learning rate (> 0).
        max_grad_norm: Q's gradients are clipped to this norm (> 0).
        unconditional: also train Q without the image (the prior-chain start).
        eval_start: ``normal`` (seeded N(0, I), ``eval_steps``) or ``q`` (a seeded draw of
            Q(x), ``eval_refine_steps``).
        eval_refine_steps: noise-free steps after Q(x) when ``eval_start: q`` (>= 0).
        persistent: must be false.
        **chain: the shared chain settings of :class:`PosteriorInference`.
    """

    has_sampler = True

    def __init__(
        self,
        sampler: LatentDiffusion,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 0.0,
        updates: int = 6,
        ema_rate: float = 0.005,
        ema_every: int = 10,
        lr_decay: float = 0.99,
        lr_decay_every: int = 1000,
        lr_min: float = 1e-5,
        max_grad_norm: float = 100.0,
        unconditional: bool = True,
        eval_start: str = "normal",
        eval_refine_steps: int = 10,
        persistent: bool = False,
        **chain,
    ) -> None:
        super().__init__(**chain)
        if persistent:
            raise ConfigError(
                "inference.persistent needs Langevin inference without a sampler: "
                "use inference=langevin or set inference.persistent=false"
            )
        self.sampler = sampler
        self.ema = copy.deepcopy(sampler).requires_grad_(False)
        self.lr = check_positive("inference.lr", lr)
        self.betas = tuple(float(b) for b in betas)
        self.weight_decay = float(weight_decay)
        self.updates = check_int("inference.updates", updates, 1)
        self.ema_rate = float(ema_rate)
        if not 0 < self.ema_rate <= 1:
            raise ConfigError(f"inference.ema_rate must be in (0, 1], got {ema_rate!r}")
        self.ema_every = check_int("inference.ema_every", ema_every, 1)
        self.lr_decay = float(lr_decay)
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"inference.lr_decay must be in (0, 1], got {lr_decay!r}")
        self.lr_decay_every = check_int("inference.lr_decay_every", lr_decay_every, 1)
        self.lr_min = check_positive("inference.lr_min", lr_min)
        self.max_grad_norm = check_positive("inference.max_grad_norm", max_grad_norm)
        self.unconditional = check_bool("inference.unconditional", unconditional)
        self.eval_start = check_choice("inference.eval_start", eval_start, EVAL_STARTS)
        self.eval_refine_steps = check_int("inference.eval_refine_steps", eval_refine_steps, 0)
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))

    @property
    def chain_steps(self) -> int:
        return self.n_steps

    @property
    def eval_chain_steps(self) -> int:
        return self.eval_steps if self.eval_start == "normal" else self.eval_refine_steps

    # ---------------------------------------------------------------- Q's draws
    def _noise(
        self, batch: int, rng: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """(T, batch, d) standard normal draws of one sampling pass, from ``rng``."""
        shape = (self.sampler.n_intervals, batch, self.sampler.latent_dim)
        return torch.randn(shape, generator=rng, device=device)

    def sampler_start(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor,
        seed: int,
    ) -> torch.Tensor:
        """A draw of Q(z | x) (B, d) per image whose noise is seeded by (seed, index[i]) alone,
        so that it depends on the example, not on its batch."""
        noise = [
            torch.randn(
                self.sampler.n_intervals,
                self.sampler.latent_dim,
                generator=torch.Generator().manual_seed(item_seed(seed, i)),
            )
            for i in index.tolist()
        ]
        stacked = torch.stack(noise, dim=1).to(x.device)  # (T, B, d)
        return self.sampler.sample(x, mask, stacked)

    def seeded_start(
        self, model: LatentModel, index: torch.Tensor, seed: int
    ) -> torch.Tensor | None:
        if self.eval_start == "q":
            return None  # the start depends on the image
        return super().seeded_start(model, index, seed)

    def start(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor | None,
        seed: int,
    ) -> torch.Tensor:
        """Seeded N(0, I) rows (``eval_start: normal``) or :meth:`sampler_start` (``q``)."""
        if index is None:
            index = torch.arange(x.shape[0])
        if self.eval_start == "q":
            return self.sampler_start(model, x, mask, index, seed)
        return super().start(model, x, mask, index, seed)

    def prior_chain_start(
        self, model: LatentModel, n: int, rng: torch.Generator
    ) -> torch.Tensor | None:
        """n unconditional draws (n, d) of the EMA sampler (with ``unconditional``), the starts
        of an EBM prior's chains; None otherwise."""
        if not self.unconditional:
            return None
        noise = self._noise(n, rng, model.device)
        return self.ema.sample(None, None, noise, conditional=False)

    # ---------------------------------------------------------------- training
    def training_latents(
        self, model: LatentModel, batch: dict[str, torch.Tensor], rng: torch.Generator
    ) -> TrainingLatents:
        x, mask = batch["image"], batch.get("mask")
        z0 = self.ema.sample(x, mask, self._noise(x.shape[0], rng, x.device))
        chain = self.chain(
            model, x, mask, z0, self.n_steps, self.step_size, rng=rng, training=True
        )
        logs = {
            "train/posterior_energy": chain.energy.mean(),
            "train/grad_z_abs": chain.grad_abs_mean,
            "train/q_start_shift": (chain.z - z0).pow(2).sum(1).mean(),
        }
        return TrainingLatents(z=chain.z, energy=chain.energy, logs=logs)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Q's AdamW (the model's third optimizer); kept here for :meth:`after_step`."""
        self.optimizer = torch.optim.AdamW(
            self.sampler.parameters(), lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
        )
        return self.optimizer

    def ddp_ignored(self) -> list[str]:
        """Names (relative to this module) of the parameters and buffers DDP leaves alone: Q's
        and its EMA copy's (Q is synchronised by :meth:`after_step` itself)."""
        names = [f"sampler.{n}" for n, _ in self.sampler.named_parameters()]
        names += [f"ema.{n}" for n, _ in self.ema.named_parameters()]
        return names + ["iterations"]

    def q_loss(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        z: torch.Tensor,
        rng: torch.Generator | None,
    ) -> torch.Tensor:
        """Q's loss on latents z (B, d) of images x: the conditional denoising loss, plus the
        unconditional one with ``unconditional``."""
        loss = self.sampler.loss(z, x, mask, rng=rng)
        if self.unconditional:
            loss = loss + self.sampler.loss(z, None, None, conditional=False, rng=rng)
        return loss

    def after_step(
        self, model: LatentModel, batch: dict[str, torch.Tensor], z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``updates`` steps of Q on the chains' z, then the EMA update when one is due."""
        if self.optimizer is None:
            raise RuntimeError("DamcInference.after_step needs make_optimizer to have run")
        x, mask = batch["image"], batch.get("mask")
        rng = model.langevin_rng()
        decays = int(self.iterations) // self.lr_decay_every
        for group in self.optimizer.param_groups:
            group["lr"] = max(self.lr * self.lr_decay**decays, self.lr_min)
        params = list(self.sampler.parameters())
        world = model.trainer.world_size if model.trainer is not None else 1
        losses = []
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            for _ in range(self.updates):
                loss = self.q_loss(x, mask, z.detach(), rng)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                flat = torch.cat(
                    [
                        (torch.zeros_like(p) if g is None else g).flatten()
                        for p, g in zip(params, grads, strict=True)
                    ]
                )
                if world > 1:
                    dist.all_reduce(flat)
                    flat /= world
                losses.append(loss.detach())
                if not bool(torch.isfinite(flat).all()):
                    continue  # the same verdict on every rank: the gradients are averaged
                for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
                    p.grad = g.view_as(p)
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.iterations += 1
        if int(self.iterations) % self.ema_every == 0:
            with torch.no_grad():
                for target, source in zip(self.ema.parameters(), params, strict=True):
                    target.lerp_(source, self.ema_rate)
        return {"train/q_loss": torch.stack(losses).mean()}
