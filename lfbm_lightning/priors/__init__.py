"""Latent priors p(z) behind one interface (:class:`Prior`)."""

from lfbm_lightning.priors.base import Prior
from lfbm_lightning.priors.flow import FlowPrior
from lfbm_lightning.priors.gaussian import GaussianPrior

__all__ = ["FlowPrior", "GaussianPrior", "Prior"]
