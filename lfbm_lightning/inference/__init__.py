"""Posterior inference: Langevin dynamics (pure functions) and the amortised encoder."""

from lfbm_lightning.inference.amortized import (
    ConvEncoder,
    ElboResult,
    amortized_elbo,
)
from lfbm_lightning.inference.langevin import LangevinResult, energy_grad, langevin

__all__ = [
    "ConvEncoder",
    "ElboResult",
    "LangevinResult",
    "amortized_elbo",
    "energy_grad",
    "langevin",
]
