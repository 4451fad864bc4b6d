"""lfbm-lightning: latent-space flow priors (LFBM, Xie et al. AAAI 2023) and their baselines."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"
"""The Hydra configs of ``lfbm-train`` / ``lfbm-evaluate``, shipped inside the package."""
