"""A joblib sweep that loses a job (SIGKILL) finishes the others, records the loss and says so
in its exit status; the same command with ``resume=true`` then finishes only that job."""

from __future__ import annotations

import json

import pytest
import torch

from lfbm_lightning.runtime.checkpoints import load_model
from tests.conftest import TINY
from tests.helpers.train_runs import run_train


def status(job) -> str:
    return json.loads((job / "metrics.json").read_text())["status"]


@pytest.mark.slow
def test_a_lost_joblib_job_costs_only_itself_and_the_sweep_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        *TINY,
        "trainer.max_epochs=2",
        "callbacks.progress_bar.refresh_rate=0",
        "extras.print_config=false",
        "+callbacks.test_kill._target_=run_callbacks.SigkillOnce",
        "+callbacks.test_kill.epoch=1,9",  # job 0 is killed in epoch 1, job 1 runs beside it
    ]
    result = run_train(args, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"error: 1 of 2 jobs did not complete (0: failed): add hydra.sweep.dir={sweep} "
        "resume=true" in result.stderr
    ), result.stderr[-3000:]
    jobs = [sweep / str(n) for n in range(2)]
    assert [status(job) for job in jobs] == ["failed", "completed"]
    lost = json.loads((jobs[0] / "metrics.json").read_text())
    assert "killed by SIGKILL" in lost["error"]
    last = jobs[0] / "checkpoints" / "last.ckpt"
    load_model(last)  # the epoch-0 checkpoint survived the kill
    assert torch.load(last, weights_only=True)["epoch"] == 0
    finished = {job: (job / "checkpoints" / "last.ckpt").stat().st_mtime_ns for job in jobs[1:]}

    result = run_train([*args, "resume=true"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [status(job) for job in jobs] == ["completed"] * 2
    record = json.loads((jobs[0] / "metrics.json").read_text())
    assert record["progress"]["epochs_completed"] == 2
    assert torch.load(last, weights_only=True)["epoch"] == 1
    for job, mtime in finished.items():  # completed jobs are skipped, not trained again
        assert (job / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
        assert "completed earlier, not run again" in (job / "train.log").read_text()
