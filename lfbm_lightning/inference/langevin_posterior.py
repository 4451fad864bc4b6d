"""Short-run Langevin inference (the paper's recipe), with persistent chains as an option.

Training: K = ``n_steps`` steps of z <- z - (s^2 / 2) dE/dz + s eps (s = ``step_size``) from
fresh N(0, I) noise, or, with ``persistent: true`` (original ABP), from each training example's
last chain state. Reconstruction: ``eval_steps`` noise-free steps of ``eval_step_size`` from
per-example seeded N(0, I) starts.
"""

from __future__ import annotations

import torch

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.posterior import LatentModel, PosteriorInference, TrainingLatents

__all__ = ["LangevinInference", "first_occurrences"]


def first_occurrences(index: torch.Tensor) -> torch.Tensor:
    """Positions (U,) of the first occurrence of each of the U distinct values of ``index`` (N,),
    in increasing order of value; deterministic on every device (an integer scatter-min)."""
    unique, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(index.numel(), device=index.device)
    first = torch.full_like(unique, index.numel())
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")


class LangevinInference(PosteriorInference):
    """z ~ p(z | x) by short-run Langevin from N(0, I) or from persistent chains.

    With ``persistent``, the chain states live in a (N_train, d) tensor sized from the data
    module's training split at fit start, drawn from N(0, I) (the same draw on every rank),
    written back after every step
    (under DDP every rank gets every rank's) and saved in checkpoints.

    Args:
        persistent: one warm-started chain per training example.
        **chain: the shared chain settings of :class:`PosteriorInference` (``n_steps``,
            ``step_size``, ``eval_steps``, ``eval_step_size``, step options).
    """

    def __init__(self, persistent: bool = False, **chain) -> None:
        super().__init__(**chain)
        self.persistent = bool(persistent)
        self.chains: torch.Tensor | None = None  # (N_train, d) once fitting starts
        self._pending: torch.Tensor | None = None  # from a checkpoint, until fit starts

    @property
    def chain_steps(self) -> int:
        return self.n_steps

    @property
    def eval_chain_steps(self) -> int:
        return self.eval_steps

    def training_latents(
        self, model: LatentModel, batch: dict[str, torch.Tensor], rng: torch.Generator
    ) -> TrainingLatents:
        x, mask = batch["image"], batch.get("mask")
        if self.chains is not None:
            z0 = self.chains[batch["index"]]
        else:
            z0 = torch.randn(x.shape[0], model.latent_dim, generator=rng, device=x.device)
        chain = self.chain(
            model, x, mask, z0, self.n_steps, self.step_size, rng=rng, training=True
        )
        logs = {
            "train/posterior_energy": chain.energy.mean(),
            "train/grad_z_abs": chain.grad_abs_mean,
        }
        return TrainingLatents(z=chain.z, energy=chain.energy, logs=logs)

    def after_step(
        self, model: LatentModel, batch: dict[str, torch.Tensor], z: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Write the chains' final states back; under DDP every rank gets every rank's.

        An example that appears twice (``DistributedSampler`` repeats examples so that every
        rank gets as many) is written once, from its first occurrence (the lowest rank's):
        writing duplicate indices at once keeps an arbitrary one on CUDA.
        """
        if self.chains is None:
            return {}
        index = batch["index"]
        if model.trainer.world_size > 1:
            index = model.all_gather(index).flatten(0, 1)
            z = model.all_gather(z).flatten(0, 1)
        first = first_occurrences(index)  # the sampler pads ranks by repeating examples
        self.chains[index[first]] = z[first]
        return {}

    def setup(self, model: LatentModel) -> None:
        """Persistent chains (N_train, d): from the checkpoint when resuming, else N(0, I)
        drawn from a generator seeded with the run's seed, the same on every rank (rank 0's
        chains are the ones a checkpoint keeps)."""
        if not self.persistent:
            return
        datamodule = model.trainer.datamodule
        if datamodule is None or "train" not in getattr(datamodule, "splits", {}):
            raise ConfigError(
                "inference.persistent needs a data module with splits['train'] "
                "(trainer.fit(model, datamodule=...))"
            )
        shape = (len(datamodule.splits["train"]), model.latent_dim)
        chains, self._pending = self._pending, None
        if chains is None:
            rng = torch.Generator(device=model.device).manual_seed(model.seed)
            chains = torch.randn(shape, generator=rng, device=model.device)
        elif tuple(chains.shape) != shape:
            raise ConfigError(
                f"the checkpoint's persistent chains have shape {tuple(chains.shape)}, but "
                f"the training split needs {shape}: resume with the same dataset settings or "
                "set inference.persistent=false"
            )
        self.chains = chains.to(model.device)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        chains = self._pending if self.chains is None else self.chains
        return {} if chains is None else {"persistent_chains": chains.cpu()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self._pending = state.get("persistent_chains")
