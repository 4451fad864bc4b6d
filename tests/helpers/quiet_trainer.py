"""A Lightning Trainer for in-process tests: no logger, checkpoints, progress bar or summary,
and no validation; only what a test asks for (its limits, accelerator) differs."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def quiet_trainer(**settings: Any) -> pl.Trainer:
    """``pl.Trainer(**settings)`` that writes and prints nothing and skips validation."""
    quiet = {
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return pl.Trainer(**(quiet | settings))
