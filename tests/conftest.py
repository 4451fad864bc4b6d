"""Shared test helpers: composing the real Hydra config and running the real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lfbm_lightning import CONF_DIR

# how the two xdist workers share the tests: a worker per file, one for all of tests/tasks
from tests.helpers.work_units import (  # noqa: F401
    pytest_collection_modifyitems,
    pytest_xdist_make_scheduler,
)

# The test models are tiny: one thread per process is as fast as two on an idle 2-core machine
# and up to 17x faster on a busy one (OpenMP threads spinning against each other), and DDP
# tests run two processes. Subprocesses (train.py, evaluate.py) inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONF = CONF_DIR

# Small settings that keep an end-to-end run on digits to seconds.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "inference.n_steps=3",
    "inference.eval_steps=5",
    "callbacks.image_grids.n_images=8",
]


def compose_config(overrides: list[str], output_dir: Path, config_name: str = "train"):
    """Compose ``conf/<config_name>.yaml`` with overrides, writing outputs under output_dir."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=[f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        return compose_config(overrides, tmp_path, config_name)

    return _compose


def run_entry_point(script: str, args: list[str], timeout: int = 600):
    """Run ``python <script> args...`` from the repo root like a user would; returns the
    CompletedProcess (stdout and stderr captured as text)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def sigma_zero_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``train.py model.sigma=0`` (a config error) into a fresh run directory, run once for the
    tests of its exit status, message and untouched directory: (CompletedProcess, run dir)."""
    run_dir = tmp_path_factory.mktemp("sigma_zero")
    return run_entry_point("train.py", [f"hydra.run.dir={run_dir}", "model.sigma=0"]), run_dir


ENTRY_POINTS = ("train.py", "evaluate.py", "lfbm-train", "lfbm-evaluate", "lfbm-gather")


@pytest.fixture(autouse=True)
def _entry_point_runs_are_marked_slow(request, monkeypatch):
    """Fail a test that runs an entry point as a subprocess without ``@pytest.mark.slow``, so
    that ``-m "not slow"`` skips every end-to-end run (as the README says)."""
    if request.node.get_closest_marker("slow"):
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *more, **kwargs):
        words = args if isinstance(args, list | tuple) else [args]
        if any(Path(str(word)).name in ENTRY_POINTS for word in words):
            raise AssertionError(f"{request.node.nodeid} runs {words}: mark it slow")
        original(self, args, *more, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
