"""Latent priors p(z) behind one interface (:class:`Prior`)."""

from lfbm_lightning.priors.ebm import EnergyMLP, EnergyPrior
from lfbm_lightning.priors.flow import FlowPrior
from lfbm_lightning.priors.gaussian import GaussianPrior
from lfbm_lightning.priors.learnable_gaussian import LearnableGaussianPrior
from lfbm_lightning.priors.mixture import MixturePrior
from lfbm_lightning.priors.prior import Prior

__all__ = [
    "EnergyMLP",
    "EnergyPrior",
    "FlowPrior",
    "GaussianPrior",
    "LearnableGaussianPrior",
    "MixturePrior",
    "Prior",
]
