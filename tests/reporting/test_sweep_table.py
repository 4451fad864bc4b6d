"""Gathering a sweep directory into a Markdown table (mean ± std over seeds per setting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfbm_lightning.reporting.jobs import parse_override, read_jobs
from lfbm_lightning.reporting.markdown import mean_std
from lfbm_lightning.reporting.sweep_table import default_metrics, main, markdown_table
from tests.conftest import REPO

COMMON = ["trainer.max_epochs=1", "dataset=digits"]


def write_job(sweep: Path, subdir: str, overrides: list[str], metrics: dict | None) -> Path:
    job = sweep / subdir
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


@pytest.fixture
def sweep(tmp_path):
    """Two priors x two seeds, one seed of flow without metrics (failed), plus job 10 to check
    the job order (10 after 2)."""
    sweep = tmp_path / "sweep"
    jobs = [
        ("0", ["prior=gaussian", "seed=1"], {"val/mse": 0.5, "train/loss": 10.0, "loss": 1}),
        ("1", ["prior=gaussian", "seed=2"], {"val/mse": 0.7, "train/loss": 12.0, "loss": 2}),
        ("2", ["prior=flow", "seed=1"], {"val/mse": 0.25, "train/loss_step": 3.0, "loss": 3}),
        ("10", ["prior=flow", "seed=2"], None),
    ]
    for subdir, overrides, metrics in jobs:
        write_job(sweep, subdir, [*overrides, *COMMON], metrics)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def test_overrides_are_split_into_key_and_value():
    assert parse_override("prior=flow") == ("prior", "flow")
    assert parse_override("+trainer.a=b=c") == ("trainer.a", "b=c")
    assert parse_override("~logger") == ("logger", "~")


def test_jobs_are_read_in_job_number_order(sweep):
    jobs = read_jobs(sweep)
    assert [job.path.name for job in jobs] == ["0", "1", "2", "10"]
    assert jobs[0].overrides["prior"] == "gaussian"
    assert jobs[3].metrics is None


def test_mean_and_sample_std():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))
    assert mean_std([3.0]) == (3.0, 0.0)


def test_table_has_one_row_per_setting_with_mean_and_std_over_seeds(sweep):
    table = markdown_table(read_jobs(sweep), ["val/mse", "train/loss"])
    lines = table.splitlines()
    # only the overrides that vary (prior; seed is averaged over, the rest is constant)
    assert lines[0] == "| prior | n | val/mse | train/loss |"
    assert lines[2] == "| gaussian | 2 | 0.6 ± 0.14 | 11 ± 1.4 |"
    assert lines[3] == "| flow | 1 | 0.25 | – |"
    assert "4 jobs; mean ± std (ddof 1) over seed" in table
    assert f"- no metrics: {sweep / '10'}" in table


def test_default_metrics_are_the_common_ones_without_step_and_epoch_twins(sweep):
    assert default_metrics(read_jobs(sweep)) == ["loss", "val/mse"]


def test_averaging_over_nothing_makes_the_seed_a_setting(sweep):
    table = markdown_table(read_jobs(sweep), ["val/mse"], over=())
    assert table.splitlines()[0] == "| prior | seed | n | val/mse |"
    assert "| gaussian | 2 | 1 | 0.7 |" in table


def test_command_line_prints_and_writes_the_table(sweep, tmp_path):
    out = tmp_path / "table.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lfbm_lightning.reporting.sweep_table",
            str(sweep),
            "--metrics",
            "val/mse",
        ]
        + ["--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == out.read_text()
    assert "| gaussian | 2 | 0.6 ± 0.14 |" in result.stdout


def test_a_directory_without_jobs_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
