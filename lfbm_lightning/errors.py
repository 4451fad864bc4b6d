"""The project's own errors: each message is one line naming the setting or file and the fix.

``train.py`` and ``evaluate.py`` print such an error as that one line and exit non-zero
(with ``HYDRA_FULL_ERROR=1`` the traceback too). Anything else is a bug and keeps its
traceback. This module imports nothing from the package, so every layer may raise these.
"""

from __future__ import annotations


class LfbmError(Exception):
    """Base of every error a user can fix by changing a setting or a file."""


class ConfigError(LfbmError, ValueError):
    """A config value outside its allowed range; the message names the key and the range."""


class CheckpointError(LfbmError, RuntimeError):
    """A checkpoint that is missing, unreadable, or not one of this project's models."""


class ResumeMismatch(ConfigError, CheckpointError):
    """A resume under a config that differs from its checkpoint's in the model, the data or the
    recipe: a refused setting (exit 2, like every other refusal) about a checkpoint."""


class DataError(LfbmError, ValueError):
    """A data file that is missing, truncated or malformed; the message names the file."""


class DatasetFilesMissing(LfbmError, FileNotFoundError):
    """A data set's files are not in the data directory."""


class InceptionWeightsMissing(LfbmError, FileNotFoundError):
    """No usable local copy of the Inception-v3 FID weights (and downloading is not allowed)."""


class DivergenceError(LfbmError, FloatingPointError):
    """NaN or Inf in z, the posterior energy, the loss or a gradient during training."""
