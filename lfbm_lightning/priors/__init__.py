"""Latent priors p(z) behind one interface (:class:`Prior`)."""

from lfbm_lightning.priors.ebm import EnergyMLP, EnergyPrior
from lfbm_lightning.priors.ex_post_mixture import ExPostMixturePrior
from lfbm_lightning.priors.flow import FlowPrior
from lfbm_lightning.priors.gaussian import GaussianPrior
from lfbm_lightning.priors.learnable_gaussian import LearnableGaussianPrior
from lfbm_lightning.priors.mixture import MixturePrior
from lfbm_lightning.priors.prior import Prior
from lfbm_lightning.priors.two_stage_vae import TwoStageVAEPrior

__all__ = [
    "EnergyMLP",
    "EnergyPrior",
    "ExPostMixturePrior",
    "FlowPrior",
    "GaussianPrior",
    "LearnableGaussianPrior",
    "MixturePrior",
    "Prior",
    "TwoStageVAEPrior",
]
