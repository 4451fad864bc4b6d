"""The interface of a posterior inference method, and what it needs of the model.

An inference method (``conf/inference/*.yaml``, built with ``_target_``) owns everything that
differs between ways of drawing z ~ p(z | x): where chains start, the training chain, the
evaluation chain (reconstruction), any extra loss and parameter group (an encoder's), and its
checkpoint state (persistent chains). The LightningModule only wires a prior, a generator and
one of these.

A new method is one module with a subclass of :class:`PosteriorInference` and one yaml; the
contract test ``tests/inference/test_inference_contract.py`` runs on every yaml.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from lfbm_lightning.checks import check_choice
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.fit import FitResult, PassCount, fast_fit, protocol_fit
from lfbm_lightning.langevin import EnergyFn, LangevinResult, frozen_parameters, langevin
from lfbm_lightning.priors.prior import Prior
from lfbm_lightning.seeds import item_seed

AUTOCAST_DTYPES = (None, "bfloat16", "float16")


class LatentModel(Protocol):
    """What an inference method uses of the model p(x, z) = p(x | z) p(z) (the
    :class:`~lfbm_lightning.models.LatentPriorModel` is one)."""

    generator: nn.Module
    prior: Prior
    latent_dim: int
    seed: int
    device: torch.device
    trainer: Any  # the Lightning trainer while fitting (data module, world size)

    def posterior_energy(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        autocast_dtype: torch.dtype | None = None,
        compile: bool | str = False,
        training: bool = False,
    ) -> EnergyFn:
        """E(z) = ||mask * (x - g(z))||^2 / (2 sigma^2) - log p(z), (B, d) -> (B,); ``training``:
        with the prior's ``training_log_prob``."""

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor``, stacked on a new first dimension."""

    def langevin_rng(self) -> torch.Generator:
        """The run's per-rank training noise stream (checkpointed)."""


def seeded_normal(
    index: torch.Tensor, seed: int, latent_dim: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Rows z0_i ~ N(0, I_d), row i drawn from a generator seeded with (seed, index[i]).

    A row depends on the example alone, not on its batch, its rank or the batch size.

    Args:
        index: example indices (B,).
        seed: the run's or evaluation's seed.
        latent_dim: d.
        device: where the rows go (they are drawn on the CPU).

    Returns:
        (B, d).
    """
    rows = [
        torch.randn(latent_dim, generator=torch.Generator().manual_seed(item_seed(seed, i)))
        for i in index.tolist()
    ]
    if not rows:
        return torch.zeros(0, latent_dim, device=device)
    return torch.stack(rows).to(device)


@dataclass
class TrainingLatents:
    """What a method's training chain hands to the losses of the generator and the prior.

    Attributes:
        z: latents (B, d), detached, on which g and p(z) are trained.
        energy: the posterior energy per chain at the last step (B,), detached; NaN when the
            chain has no step.
        loss: the method's own loss (e.g. the encoder's -ELBO surrogate) added to the model's
            before the single backward, or None.
        logs: scalars to log, named ``train/...``.
    """

    z: torch.Tensor
    energy: torch.Tensor
    loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class PosteriorInference(nn.Module, ABC):
    """Base of the inference methods: shared chain settings and the interface.

    Every method accepts the Langevin keys of ``conf/inference/langevin.yaml``, because
    dataset options set ``n_steps`` and ``eval_steps`` to their K whatever the method; each
    method says which it uses. These four shared settings are checked with the run config
    (:mod:`lfbm_lightning.run.config_checks`); a method checks its own options.

    Args:
        n_steps: K, Langevin steps of a training chain from N(0, I).
        step_size: s of training chains.
        eval_steps: noise-free steps of a full evaluation chain from N(0, I) (20 K).
        eval_step_size: s of evaluation chains.
        channels_last: generator weights and activations in NHWC memory format.
        autocast: None, ``"bfloat16"`` or ``"float16"``: the generator runs under
            ``torch.autocast`` in that dtype inside training chains (None: in float32, whatever
            ``trainer.precision`` says).
        eval_autocast: the same for evaluation fits (:meth:`fit`: ``val/mse`` and every
            ``evaluate.py`` task). Default None, float32: bf16 rounding of g(z) moves E by
            about 0.1 nats, above the fast fit's stopping tolerance (:mod:`~.fit`).
        compile: True or a ``torch.compile`` mode: the chains' energy is compiled.
    """

    def __init__(
        self,
        n_steps: int,
        step_size: float,
        eval_steps: int,
        eval_step_size: float,
        channels_last: bool = False,
        autocast: str | None = None,
        eval_autocast: str | None = None,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)
        self.eval_steps = int(eval_steps)
        self.eval_step_size = float(eval_step_size)
        check_choice("inference.autocast", autocast, AUTOCAST_DTYPES)
        check_choice("inference.eval_autocast", eval_autocast, AUTOCAST_DTYPES)
        self.channels_last = bool(channels_last)
        self.autocast_dtype = getattr(torch, autocast) if autocast else None
        self.eval_autocast_dtype = getattr(torch, eval_autocast) if eval_autocast else None
        self.compile = compile

    # ---------------------------------------------------------------- chains
    @property
    @abstractmethod
    def chain_steps(self) -> int:
        """Langevin steps of this method's training chain."""

    @property
    @abstractmethod
    def eval_chain_steps(self) -> int:
        """Noise-free steps of this method's reconstruction."""

    def prepare_generator(self, generator: nn.Module) -> None:
        """Apply the step options that live on the generator (its memory format)."""
        if self.channels_last:
            generator.to(memory_format=torch.channels_last)

    def chain(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        z0: torch.Tensor,
        n_steps: int,
        step_size: float,
        noise: bool = True,
        rng: torch.Generator | None = None,
        *,
        training: bool = False,
    ) -> LangevinResult:
        """``n_steps`` Langevin steps of ``step_size`` on the model's posterior energy of
        images x (B, C, H, W) from z0 (B, d), noise from ``rng``; generator and prior frozen.
        ``training``: a training chain, on the prior's ``training_log_prob``."""
        energy = model.posterior_energy(
            x, mask, autocast_dtype=self.autocast_dtype, compile=self.compile, training=training
        )
        frozen = (model.generator, model.prior)
        return langevin(z0, energy, n_steps, step_size, noise=noise, rng=rng, frozen=frozen)

    # ---------------------------------------------------------------- starts
    def seeded_start(
        self, model: LatentModel, index: torch.Tensor, seed: int
    ) -> torch.Tensor | None:
        """Evaluation starts that depend on (seed, example index) alone: N(0, I) rows of
        :func:`seeded_normal` (B, d); None for a method whose start depends on the image."""
        return seeded_normal(index, seed, model.latent_dim, model.device)

    def start(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor | None,
        seed: int,
    ) -> torch.Tensor:
        """Start (B, d) of the evaluation chains of images x; ``index`` (B,) names the
        examples (None: their positions 0..B-1). Default: :meth:`seeded_start`."""
        if index is None:
            index = torch.arange(x.shape[0])
        return self.seeded_start(model, index, seed)

    # ---------------------------------------------------------------- training
    @abstractmethod
    def training_latents(
        self, model: LatentModel, batch: dict[str, torch.Tensor], rng: torch.Generator
    ) -> TrainingLatents:
        """The latents of a training batch (``image``, optional ``mask``, ``index``), drawing
        every random number from ``rng`` (the run's per-rank training stream)."""

    def after_step(
        self, model: LatentModel, batch: dict[str, torch.Tensor], z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Called after the optimizers stepped on ``z``; returns scalars to log (``train/...``).
        Nothing by default."""
        return {}

    def param_groups(self) -> list[dict[str, Any]]:
        """Extra parameter groups of the generator's optimizer (an encoder's); none here."""
        return []

    optimizer: torch.optim.Optimizer | None = None  # the method's own, once made

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        """The method's own optimizer (the model's third, kept as :attr:`optimizer` and stepped
        by the method itself in :meth:`after_step`, so it does not count in ``global_step``),
        or None."""
        return None

    def ddp_ignored(self) -> list[str]:
        """Names of this module's parameters and buffers that DDP must leave alone (ones the
        method synchronises itself); none here."""
        return []

    def sampler_start(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor,
        seed: int,
    ) -> torch.Tensor:
        """Starts (B, d) of evaluation fits drawn from the method's amortised sampler Q(z | x)
        (``has_sampler``; a task's ``start: q``), seeded by (seed, index[i]); none here."""
        raise ConfigError(f"{type(self).__name__} has no amortised sampler Q(z|x)")

    def prior_chain_start(
        self, model: LatentModel, n: int, rng: torch.Generator
    ) -> torch.Tensor | None:
        """Starts (n, d) of the prior's own training chains (an EBM's), drawn from ``rng``;
        None: the prior's default, N(0, I)."""
        return None

    def setup(self, model: LatentModel) -> None:
        """Called at fit start (the trainer and data module are attached); nothing here."""

    has_elbo = False  # True: :meth:`elbo` has an encoder q(z|x) to bound log p(x) with
    has_sampler = False  # True: :meth:`sampler_start` draws from an amortised sampler Q(z|x)

    def elbo(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        index: torch.Tensor,
        seed: int,
        n_samples: int,
    ) -> torch.Tensor:
        """ELBO (B,) of images x under an encoder q(z|x) (``has_elbo``); none here."""
        raise ConfigError(f"{type(self).__name__} has no encoder q(z|x): no ELBO")

    def codes(
        self, model: LatentModel, x: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The codes (B, d) of images x that an ex-post prior is fitted to (an encoder's mean);
        a method without an encoder has none."""
        raise ConfigError(
            f"prior {type(model.prior).__name__} is fitted to an encoder's codes: use "
            "inference=amortized or inference=autoencoder"
        )

    # ---------------------------------------------------------------- evaluation
    def eval_settings(self, n_steps: int | None, step_size: float | None) -> tuple[int, float]:
        """(steps, step size) of a reconstruction; None falls back to :attr:`eval_chain_steps`
        and ``eval_step_size``."""
        n_steps = self.eval_chain_steps if n_steps is None else int(n_steps)
        step_size = self.eval_step_size if step_size is None else float(step_size)
        return n_steps, step_size

    def fit(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        z0: torch.Tensor,
        n_steps: int,
        step_size: float,
        fit: str = "protocol",
    ) -> FitResult:
        """Fit z to images x (B, C, H, W) from z0 (B, d) by ``fit`` (:mod:`~.fit`):
        ``protocol``, ``n_steps`` noise-free Langevin steps of ``step_size``; ``fast``, L-BFGS
        per image with a stopping rule, at most ``n_steps`` generator passes per image.
        Generator and prior frozen; the generator runs in ``eval_autocast``'s dtype (float32
        by default), not ``autocast``'s.
        """

        def energy_of(rows: torch.Tensor) -> EnergyFn:
            if rows.numel() == x.shape[0]:
                return model.posterior_energy(x, mask, **options)
            return model.posterior_energy(x[rows], None if mask is None else mask[rows], **options)

        options = {"autocast_dtype": self.eval_autocast_dtype, "compile": self.compile}
        # an outer autocast (trainer.precision) stops here, around the fit's own arithmetic too
        with (
            frozen_parameters((model.generator, model.prior)),
            torch.autocast(x.device.type, enabled=False),
        ):
            if fit == "fast":
                return fast_fit(z0, energy_of, n_steps)
            return protocol_fit(z0, energy_of, n_steps, step_size)

    def reconstruct(
        self,
        model: LatentModel,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
        seed: int = 0,
        n_steps: int | None = None,
        step_size: float | None = None,
        z0: torch.Tensor | None = None,
        fit: str = "protocol",
        count: PassCount | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit z to images x (B, C, H, W) from z0 (default :meth:`start` of (x, index, seed))
        by :meth:`fit` (default: the paper's noise-free Langevin, gradient descent on E with
        rate s^2 / 2), then decode; the generator passes are added to ``count``.

        The one reconstruction of the project: ``val/mse`` and every evaluation task use it.
        Deterministic given (model, x, index, seed): it draws from no shared stream.

        Returns:
            (g(z) (B, C, H, W), z (B, d)).
        """
        n_steps, step_size = self.eval_settings(n_steps, step_size)
        if z0 is None:
            z0 = self.start(model, x, mask, index, seed)
        result = self.fit(model, x, mask, z0, n_steps, step_size, fit)
        if count is not None:
            count.add(result)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return model.generator(result.z), result.z

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the state dict that an exact resume needs; none here."""
        return {}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what :meth:`checkpoint_state` returned; nothing here."""
