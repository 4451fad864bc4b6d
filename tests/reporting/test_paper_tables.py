"""The paper's tables from a sweep: evaluate_after_fit fills each job's row, lfbm-gather
renders the published layout with ours beside the paper's numbers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lfbm_lightning.cli.plan import job_cost, job_overrides, plan
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.reporting.jobs import read_jobs
from lfbm_lightning.reporting.paper_tables import published_results, render, table_ids
from lfbm_lightning.reporting.sweep_table import gather as gather_main
from lfbm_lightning.run.training import train
from tests.conftest import CONF, TINY, compose_config, run_entry_point

PAPER_EXPERIMENTS = [
    p.relative_to(CONF / "experiment").with_suffix("").as_posix()
    for p in sorted((CONF / "experiment" / "paper").glob("*.yaml"))
]


@pytest.mark.parametrize("experiment", PAPER_EXPERIMENTS)
def test_paper_experiments_compose_and_name_published_tables(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params, experiment
    table_ids(list(cfg.paper_tables))  # every id is a published table or group
    assert cfg.paper_tables or experiment == "paper/inpainting_celeba"  # a figure, no table
    assert (CONF / "experiment" / f"{experiment}.yaml").read_text().count("Cost") == 1


def test_every_published_row_with_overrides_names_a_prior():
    for table in published_results()["tables"]:
        for row in table["rows"]:
            if row.get("overrides"):
                assert any(o.startswith("prior=") for o in row["overrides"]), row


@pytest.mark.slow
def test_digits_anomaly_sweep_table_matches_per_job_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_entry_point(
        "train.py",
        [
            "-m",
            "experiment=paper/anomaly_digits",
            "dataset.holdout_digit=9",
            "+experiment/paper/method=lfbm,abp",
            *[o for o in TINY if not o.startswith("trainer.max_epochs")],
            "trainer.max_epochs=2",
            "callbacks.keep_last_epochs=2",
            'evaluate_overrides=["device=cpu","progress=false","anomaly.n_steps=5"]',
            "extras.print_config=false",
            f"hydra.sweep.dir={sweep}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_job = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    assert set(per_job) == {"0_flow_langevin_digit9", "1_gaussian_langevin_digit9"}
    for metrics in per_job.values():
        assert metrics["evaluation"] == {"anomaly": "completed"}
        assert metrics["anomaly/n_checkpoints"] == 2

    out = gather_main([str(sweep), "--csv", str(tmp_path / "cells.csv")])
    assert "## MNIST anomaly detection" in out
    script = subprocess.run(
        [str(Path(sys.executable).parent / "lfbm-gather"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (script.returncode, script.stdout) == (0, out), script.stderr[-2000:]
    cells = {
        (r["row"], r["column"]): r
        for r in csv.DictReader(io.StringIO((tmp_path / "cells.csv").read_text()))
    }
    for row, label, job in (
        ("lfbm", "LFBM", "0_flow_langevin_digit9"),
        ("abp", "ABP", "1_gaussian_langevin_digit9"),
    ):
        cell = cells[row, "digit_9"]
        metrics = per_job[job]
        assert float(cell["ours"]) == pytest.approx(metrics["anomaly/auprc"])
        assert float(cell["spread"]) == pytest.approx(metrics["anomaly/auprc_sd"])
        assert int(cell["n"]) == 2
        assert cell["jobs"] == str(sweep / job)
        epochs = [
            json.loads(p.read_text())["auprc"]
            for p in sorted((sweep / job / "eval" / "anomaly").glob("epoch-*/metrics.json"))
        ]
        assert float(cell["ours"]) == pytest.approx(sum(epochs) / len(epochs))
        line = next(li for li in out.splitlines() if li.startswith(f"| {label} |"))
        assert f"{metrics['anomaly/auprc']:.3f} ± " in line and "(n 2)" in line
    assert float(cells["lfbm", "digit_9"]["published"]) == 0.514
    assert float(cells["lfbm", "digit_9"]["published_error"]) == 0.008
    assert cells["lfbm", "digit_1"]["ours"] == "" and cells["lebm", "digit_9"]["ours"] == ""
    chance = per_job["0_flow_langevin_digit9"]["anomaly/chance_level"]
    assert float(cells["chance", "digit_9"]["ours"]) == pytest.approx(chance)
    assert cells["vae", "digit_9"]["jobs"] == ""  # a row built here, not in this sweep
    assert cells["meg", "digit_9"]["jobs"] == ""  # a quoted baseline: no model here
    meg = next(li for li in out.splitlines() if li.startswith("| MEG |"))
    assert "not built / 0.342 ± 0.034" in meg
    assert "- MEG not built: an energy-based model on images" in out


def test_failed_task_is_reported_in_the_row(tmp_path):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- prior=flow\n")
    record = {"evaluation": {"anomaly": "failed: ConfigError: bad"}, "status": "completed"}
    (job / "metrics.json").write_text(json.dumps(record))
    text, _ = render(read_jobs(tmp_path), ["anomaly_mnist"])
    assert f"- {job}: anomaly failed: ConfigError: bad" in text


@pytest.mark.parametrize(
    ("experiment", "n_jobs"),
    [
        ("paper/anomaly_digits", 20),
        ("paper/anomaly_mnist", 20),
        ("paper/generation_svhn", 8),
        ("paper/generation_cifar10", 8),
        ("paper/generation_celeba", 8),
        ("paper/recovery_celeba", 18),
        ("paper/recovery_digits", 18),
        ("paper/inpainting_celeba", 2),
        ("paper/methods_digits", 8),
    ],
)
def test_plan_counts_every_job_of_the_sweep(experiment, n_jobs):
    jobs = job_overrides([f"experiment={experiment}"])
    assert len(jobs) == n_jobs
    assert len({tuple(j) for j in jobs}) == n_jobs


def test_plan_arithmetic_and_hours_from_the_benchmark(tmp_path):
    argv = ["experiment=paper/generation_svhn", "trainer.max_epochs=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*argv, "+experiment/paper/method=lebm"], return_hydra_config=True
        )
    cost = job_cost(cfg)
    passes = cost.pop("passes")
    assert cost == {
        "dataset": "svhn",
        "epochs": 2,
        "batches": 733,
        "k": 20,
        "steps": 2 * 733 * 20,
        "batch_size": 100,
    }
    # 73,257 images x (K + 1) an epoch; no validation in 2 epochs (every 5), the sanity batch
    assert (passes.train, passes.validation) == (2 * 73257 * 21, 100 * 2)
    # evaluate_after_fit: 26,032 test images x (400 steps + the decode); 50,000 samples
    assert passes.evaluation == {"reconstruction": 26032 * 401, "synthesis": 50000}
    assert passes.fid_samples == 50000
    (tmp_path / "langevin_speed_cpu_b100.csv").write_text(
        "setting,unit,seconds,machine\nsvhn,floor,9.0,\nsvhn,ours,0.36,AMD EPYC (shared)\n"
    )
    text = plan([*argv, "+experiment/paper/method=lebm,abp"], tmp_path)
    assert "jobs: 2\n" in text
    assert f"Langevin steps (training chains): {2 * 2 * 733 * 20:,}" in text
    job_passes = 2 * 73257 * 21 + 200 + 26032 * 401 + 50000
    expected = 2 * job_passes / 100 * 0.36 / 3600
    assert f"CPU-hours (wall, 2 cores): {expected:.3g}, assuming svhn: AMD EPYC (shared)\n" in text
    assert f"validation 200 ({100 * 200 / (2 * 73257 * 21):.1f}% of training)" in text
    assert "GPU-hours: ? " in text


@pytest.mark.slow
def test_an_unknown_task_after_fit_fails_before_training(tmp_path):
    cfg = compose_config([*TINY, "evaluate_after_fit=[no_such_task]"], tmp_path)
    with pytest.raises(ConfigError, match="evaluate_after_fit names task 'no_such_task'"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_evaluate_after_fit_reports_a_failed_task_and_runs_the_others(tmp_path):
    """No held-out digit: task=anomaly cannot run; reconstruction still fills the row."""
    cfg = compose_config(
        [
            *TINY,
            "evaluate_after_fit=[anomaly,reconstruction]",
            'evaluate_overrides=["device=cpu","progress=false"]',
            "extras.print_config=false",
        ],
        tmp_path,
    )
    _, metrics = train(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"
    status = record["evaluation"]
    assert status["reconstruction"] == "completed"
    assert status["anomaly"].startswith("failed: ") and "holdout_digit" in status["anomaly"]
    own = json.loads((tmp_path / "eval" / "reconstruction" / "metrics.json").read_text())
    assert record["reconstruction/mse"] == own["mse"] == metrics["reconstruction/mse"]
    assert record["reconstruction/n_checkpoints"] == 1 and record["reconstruction/mse_sd"] == 0
    assert "anomaly/auprc" not in record
