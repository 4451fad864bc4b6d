"""Hydra multirun through train.py: the basic launcher, DDP jobs, joblib, the SLURM config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from lfbm_lightning.reporting.sweep_table import format_cell
from lfbm_lightning.reporting.sweep_table import gather as gather_main
from tests.conftest import CONF, TINY, run_entry_point
from tests.run.test_wandb import wandb_records

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
PROBE = ["+callbacks.probe._target_=ddp_probe.RankProbe"]
PRIOR_CLASSES = {"gaussian": "GaussianPrior", "ebm": "EnergyPrior", "flow": "FlowPrior"}


def job_overrides(job_dir: Path) -> dict[str, str]:
    lines = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


def check_ddp_jobs(sweep: Path, priors: list[str], probe: Path) -> None:
    """One directory per job with its checkpoint; both ranks of each job trained that job's
    prior in that job's directory, in sync; no other process reported."""
    assert {p.name for p in sweep.iterdir()} == {"multirun.yaml", *map(str, range(len(priors)))}
    reports = {p.stem: json.loads(p.read_text()) for p in probe.glob("*.json")}
    assert len(reports) == 2 * len(priors), sorted(reports)
    for job, prior in enumerate(priors):
        job_dir = sweep / str(job)
        assert job_overrides(job_dir)["prior"] == prior
        assert {p.name for p in (job_dir / "checkpoints").iterdir()} == {"last.ckpt"}
        assert (job_dir / "metrics.json").is_file()
        assert (job_dir / "train_rank1.log").is_file()  # rank 1 ran in this job's directory
        ranks = [reports[f"{job}-rank{r}"] for r in (0, 1)]
        for rank, report in enumerate(ranks):
            assert (report["rank"], report["world_size"]) == (rank, 2)
            assert Path(report["root_dir"]) == job_dir
            assert report["prior"] == PRIOR_CLASSES[prior]
        assert ranks[0]["metrics"]["val/mse"] == ranks[1]["metrics"]["val/mse"]


@pytest.mark.slow
def test_six_job_sweep_runs_every_job_and_gathers_into_one_table(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "prior=gaussian,ebm,flow", "seed=1,2", f"hydra.sweep.dir={sweep}", *TINY]
    args += ["trainer.accelerator=cpu", "logger=csv_wandb"]
    result = run_entry_point("train.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Launching 6 jobs locally" in result.stdout + result.stderr

    jobs = {
        (o["prior"], o["seed"]): sweep / str(n)
        for n in range(6)
        for o in [job_overrides(sweep / str(n))]
    }
    assert set(jobs) == {(p, s) for p in PRIOR_CLASSES for s in ("1", "2")}
    for job_dir in jobs.values():
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        assert (job_dir / "metrics.json").is_file()

    # every job its own W&B run, all in the sweep's group
    runs = [wandb_records(job_dir)["run"][0].run for job_dir in jobs.values()]
    assert len({run.run_id for run in runs}) == 6
    assert {run.run_group for run in runs} == {str(sweep)}

    table = gather_main([str(sweep), "--metrics", "val/mse", "train/loss"])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:5]}
    assert table.splitlines()[0] == "| prior | n | val/mse | train/loss |"
    assert set(rows) == set(PRIOR_CLASSES)
    for prior, line in rows.items():
        values = [json.loads((jobs[prior, s] / "metrics.json").read_text()) for s in ("1", "2")]
        expected = [
            prior,
            "2",
            *(format_cell([v[m] for v in values]) for m in ("val/mse", "train/loss")),
        ]
        assert line == "| " + " | ".join(expected) + " |"
        assert "±" in line


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_each_job_its_ranks_and_one_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HELPERS))  # the ranks import ddp_probe
    sweep, probe, unused = tmp_path / "sweep", tmp_path / "probe", tmp_path / "run_dir"
    args = ["-m", "prior=gaussian,flow", "trainer.devices=2", "trainer.strategy=ddp"]
    args += [f"hydra.sweep.dir={sweep}", f"hydra.run.dir={unused}", *TINY, *PROBE]
    args += ["trainer.accelerator=cpu", f"+callbacks.probe.out_dir={probe}"]
    result = run_entry_point("train.py", args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # the ranks did not replay the sweep (they used to print this again and start more jobs)
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1
    assert not unused.exists()  # nor create run directories of their own
    check_ddp_jobs(sweep, ["gaussian", "flow"], probe)


@pytest.mark.slow
def test_joblib_launcher_runs_ddp_jobs_in_parallel_workers(tmp_path, monkeypatch):
    """Under joblib the job runs in a loky worker whose ``__main__`` is not train.py, so the
    ranks must be started from the job's own overrides, not from the worker's command line."""
    monkeypatch.setenv("PYTHONPATH", str(HELPERS))
    sweep, probe = tmp_path / "sweep", tmp_path / "probe"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "prior=gaussian,flow"]
    args += ["trainer=ddp_cpu", f"hydra.sweep.dir={sweep}", *TINY, *PROBE]
    args.append(f"+callbacks.probe.out_dir={probe}")
    result = run_entry_point("train.py", args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    check_ddp_jobs(sweep, ["gaussian", "flow"], probe)


def test_slurm_launcher_asks_one_task_per_device(tmp_path):
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.output_dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.strategy == "ddp"
