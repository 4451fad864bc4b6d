"""The trainer config lists every Trainer argument, so none needs "+" to be set."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from lfbm_lightning import CONF_DIR

REPO = Path(__file__).resolve().parents[2]
NOT_IN_CONFIG = {"self", "logger", "callbacks", "plugins"}  # groups / training.py set these


def test_every_trainer_argument_is_in_the_trainer_config():
    listed = set(yaml.safe_load((CONF_DIR / "trainer" / "default.yaml").read_text()))
    arguments = set(inspect.signature(pl.Trainer.__init__).parameters) - NOT_IN_CONFIG
    assert arguments - listed == set(), "add these to conf/trainer/default.yaml"
    assert listed - arguments == {"_target_"}, "not Trainer arguments"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches must be 1"),
        ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val must be null"),
    ],
)
def test_arguments_manual_optimization_cannot_honour_are_refused_in_one_line(
    tmp_path, override, message
):
    run = subprocess.run(
        [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "checkpoints").exists()
