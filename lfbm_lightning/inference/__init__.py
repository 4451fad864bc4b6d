"""Posterior inference: Langevin dynamics (pure functions) and samplers built on it."""

from lfbm_lightning.inference.langevin import LangevinResult, energy_grad, langevin

__all__ = ["LangevinResult", "energy_grad", "langevin"]
