"""lfbm-lightning: latent-space flow priors (LFBM, Xie et al. AAAI 2023) and their baselines."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
"""The Hydra configs of ``lfbm-train`` / ``lfbm-evaluate``: ``conf/`` beside the package in a
checkout or an editable install, ``lfbm_lightning/conf`` inside an installed wheel."""
