"""The LightningModule and the energies it trains on."""

from lfbm_lightning.models.latent_prior_model import LatentPriorModel

__all__ = ["LatentPriorModel"]
