"""A run directory holds one run: a fresh run never overwrites it, a resume appends to it, a
refused resume changes nothing, and two runs never use it at once."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import os

import pytest
import torch

from tests.helpers.train_runs import error_lines, run_train

RUN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "inference.n_steps=2",
    "inference.eval_steps=2",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
]


def snapshot(run_dir) -> dict[str, str]:
    """Hash of every file of the run but the lock, Hydra's files and log (written before the
    job starts)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.name != ".lock" and p.suffix != ".log"
    }


def csv_epochs(run_dir) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-epoch run (default callbacks: last.ckpt only)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    result = run_train([f"hydra.run.dir={run}", *RUN])
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.mark.slow
def test_default_run_keeps_last_ckpt_only(finished_run):
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_a_fresh_run_into_a_used_directory_is_refused_and_changes_nothing(finished_run):
    before = snapshot(finished_run)
    result = run_train([f"hydra.run.dir={finished_run}", *RUN])
    assert result.returncode == 2
    last = finished_run / "checkpoints" / "last.ckpt"
    [line] = error_lines(result.stderr)
    assert "already holds a run" in line and f"ckpt_path={last}" in line, line
    assert "hydra.run.dir=" in line and "paths.output_dir=" in line
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_a_resume_without_epochs_left_is_refused_and_changes_nothing(finished_run):
    before = snapshot(finished_run)
    last = finished_run / "checkpoints" / "last.ckpt"
    result = run_train([f"hydra.run.dir={finished_run}", *RUN, f"ckpt_path={last}"])
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert "trainer.max_epochs=2 but" in line and "has finished 2 epochs" in line, line
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_a_resume_under_another_config_is_refused_and_changes_nothing(finished_run):
    before = snapshot(finished_run)
    last = finished_run / "checkpoints" / "last.ckpt"
    args = [f"hydra.run.dir={finished_run}", *RUN, "model.sigma=0.5", f"ckpt_path={last}"]
    result = run_train([*args, "trainer.max_epochs=3"])
    assert result.returncode == 2  # a refused setting, like every other refusal
    [line] = error_lines(result.stderr)
    assert "model.sigma: 0.3 -> 0.5" in line, line
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_directory_is_locked(finished_run):
    before = snapshot(finished_run)
    lock = finished_run / ".lock"
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running train.py holds
    try:
        last = finished_run / "checkpoints" / "last.ckpt"
        args = [f"hydra.run.dir={finished_run}", *RUN, f"ckpt_path={last}"]
        result = run_train([*args, "trainer.max_epochs=3"], timeout=60)
    finally:
        os.close(fd)
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert f"its lock {lock} is held" in line, line
    assert snapshot(finished_run) == before


@pytest.mark.slow
def test_a_resume_appends_to_the_metrics_csv(finished_run):
    """Last of this module's tests: it changes the run."""
    assert csv_epochs(finished_run) == [0, 1]
    with open(finished_run / "csv" / "metrics.csv") as f:
        old_rows = f.read().splitlines()[1:]
    last = finished_run / "checkpoints" / "last.ckpt"
    args = [f"hydra.run.dir={finished_run}", *RUN, f"ckpt_path={last}", "trainer.max_epochs=3"]
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert csv_epochs(finished_run) == [0, 1, 2]
    with open(finished_run / "csv" / "metrics.csv") as f:
        assert f.read().splitlines()[1 : 1 + len(old_rows)] == old_rows
    assert torch.load(last, weights_only=True)["epoch"] == 2
