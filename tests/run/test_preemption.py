"""SIGTERM (a scheduler's preemption) mid-epoch: last.ckpt saved, metrics.json says
"interrupted", exit status 143, and resuming from that checkpoint runs to the end."""

from __future__ import annotations

import json

import pytest
import torch

from lfbm_lightning.runtime.checkpoints import load_model
from tests.helpers.train_runs import callback, error_lines, run_train

RUN = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=0",
    "inference.n_steps=2",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.mark.slow
def test_sigterm_saves_marks_the_run_interrupted_and_the_resume_finishes(tmp_path):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    result = run_train([f"hydra.run.dir={run}", *RUN, *callback("SigtermAt", epoch=1, batch=2)])
    assert result.returncode == 143, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert "stopped by SIGTERM at epoch 1" in line and f"ckpt_path={last}" in line, line
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    assert record["progress"]["epoch"] == 1
    assert record["progress"]["epochs_completed"] == 1
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 1  # saved mid-epoch 1, not the end-of-epoch-0 file
    assert checkpoint["global_step"] == record["progress"]["global_step"] > 4 * 2
    load_model(last)

    result = run_train([f"hydra.run.dir={run}", *RUN, f"ckpt_path={last}"])
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["progress"]["epochs_completed"] == 3
    assert torch.load(last, weights_only=True)["epoch"] == 2
