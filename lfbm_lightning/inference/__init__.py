"""Posterior inference methods behind one interface (:class:`PosteriorInference`), the
amortised encoder, the amortised diffusion sampler (DAMC), importance sampling, and the
Langevin kernel's functions."""

from lfbm_lightning.inference.amortized import (
    AmortizedInference,
    ConvEncoder,
    ElboResult,
    amortized_elbo,
)
from lfbm_lightning.inference.autoencoder import AutoencoderInference
from lfbm_lightning.inference.damc import DamcInference
from lfbm_lightning.inference.diffusion_sampler import ImageEmbedding, LatentDiffusion
from lfbm_lightning.inference.langevin_posterior import LangevinInference
from lfbm_lightning.inference.posterior import (
    LatentModel,
    PosteriorInference,
    TrainingLatents,
    seeded_normal,
)
from lfbm_lightning.langevin import LangevinResult, energy_grad, langevin

__all__ = [
    "AmortizedInference",
    "AutoencoderInference",
    "ConvEncoder",
    "DamcInference",
    "ElboResult",
    "ImageEmbedding",
    "LangevinInference",
    "LangevinResult",
    "LatentDiffusion",
    "LatentModel",
    "PosteriorInference",
    "TrainingLatents",
    "amortized_elbo",
    "energy_grad",
    "langevin",
    "seeded_normal",
]
