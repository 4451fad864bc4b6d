"""A run killed with SIGKILL resumes from last.ckpt and ends exactly where an uninterrupted
run ends (parameters, optimizer state, counters, RNG streams, data order)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lfbm_lightning.runtime.checkpoints import CheckpointError, check_resume_compatible
from tests.conftest import REPO, run_entry_point

# Three epochs of four batches: the kill lands after epoch 0 (or 1), so the resume replays at
# least one epoch with its validation (epoch 1), pictures and data order.
RUN = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.check_val_every_n_epoch=2",
    "trainer.limit_val_batches=1",
    "inference.eval_steps=5",
    "callbacks.image_grids.every_n_epochs=1",  # pictures every epoch must not perturb training
    "callbacks.progress_bar.refresh_rate=0",
]


def saved_epoch(path) -> int:
    """Epoch stored in a checkpoint (-1 while it does not exist yet)."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def kill_at_first_checkpoint(run_dir, args: list[str]) -> int:
    """Start ``train.py args`` into ``run_dir``, SIGKILL it as soon as its first
    ``last.ckpt`` is on disk; returns the epoch that checkpoint holds (-1: none)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while saved_epoch(last) < 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return saved_epoch(last)


def final_state(run_dir) -> dict:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run of :data:`RUN` (read only: both tests of this module use it)."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = run_entry_point("train.py", [f"hydra.run.dir={run_dir}", *RUN])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_kill_and_resume_equals_an_uninterrupted_run(straight, tmp_path):
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    killed_at = kill_at_first_checkpoint(killed, RUN)
    assert 0 <= killed_at < 2, f"the run was not killed mid-training (last epoch {killed_at})"

    resume = [f"hydra.run.dir={killed}", *RUN, f"ckpt_path={last}"]
    result = run_entry_point("train.py", resume)
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = final_state(straight), final_state(killed)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, state in opt_a["state"].items():
            assert torch.equal(state["exp_avg_sq"], opt_b["state"][pid]["exp_avg_sq"])
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert torch.equal(a["rng_states"][0]["langevin"], b["rng_states"][0]["langevin"])


@pytest.mark.slow
def test_resuming_under_another_config_is_refused(straight):
    last = straight / "checkpoints" / "last.ckpt"
    config = torch.load(last, weights_only=True)["hyper_parameters"]["config"]
    check_resume_compatible(config, last)  # same config: fine
    changed = {**config, "model": {**config["model"], "sigma": 0.5}}
    with pytest.raises(CheckpointError, match=r"model.sigma: 0.3 -> 0.5"):
        check_resume_compatible(changed, last)
    longer = {**config, "trainer": {**config["trainer"], "max_epochs": 5}}
    check_resume_compatible(longer, last)  # more epochs than the run's 3: a resume may extend
