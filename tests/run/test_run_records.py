"""A run directory's record survives later commands: a refused train.py or evaluate.py leaves
every file (``.hydra/`` included) byte for byte, an evaluation never replaces results, and
lfbm-gather files a job's numbers under the settings its training run recorded."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import yaml

from lfbm_lightning.reporting.jobs import read_jobs
from tests.conftest import TINY, run_entry_point
from tests.helpers.train_runs import error_lines

EVAL_FAST = ["reconstruction.n_examples=8", "reconstruction.n_steps=2", "progress=false"]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` and its bytes; not the logs, which runs append to, nor
    ``.lock``, which holds the pid of the last process that took the lock."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.suffix != ".log" and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """One tiny training run, ``seed=3``, as job 0 of a sweep directory."""
    run = tmp_path_factory.mktemp("sweep") / "0"
    args = [*TINY, "seed=3", "extras.print_config=false", f"hydra.run.dir={run}"]
    result = run_entry_point("train.py", args)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.mark.slow
def test_the_run_records_its_settings_beside_its_numbers(job):
    settings = json.loads((job / "metrics.json").read_text())["settings"]
    assert "seed=3" in settings["overrides"]
    assert settings["choices"]["prior"] == "flow" and settings["config"]["seed"] == 3
    assert "seed=3" in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    assert yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["seed"] == 3


@pytest.fixture
def locked(job):
    """The job's run directory locked as a running train.py holds it."""
    fd = os.open(job / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield
    os.close(fd)


REFUSED = {
    "fresh run into it": (["prior=gaussian", "seed=4"], "already holds a run"),
    "config error": (["model.sigma=0", "seed=4"], "model.sigma must be"),
    "locked": (["prior=gaussian", "seed=4"], "another run (pid"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_train_leaves_every_file_of_the_run(job, case, request):
    if case == "locked":
        request.getfixturevalue("locked")
    args, message = REFUSED[case]
    before = snapshot(job)
    result = run_entry_point("train.py", [*args, f"hydra.run.dir={job}"])
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert message in line
    assert snapshot(job) == before


@pytest.mark.slow
def test_evaluate_into_a_training_run_is_refused_and_changes_nothing(job):
    before = snapshot(job)
    ckpt = job / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "task=reconstruction", *EVAL_FAST, f"hydra.run.dir={job}"]
    result = run_entry_point("evaluate.py", args)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert f"the output directory {job} already holds" in line and "hydra.run.dir" in line
    assert snapshot(job) == before


@pytest.mark.slow
def test_a_second_evaluation_never_replaces_the_first(job, tmp_path):
    out = tmp_path / "eval"
    ckpt = job / "checkpoints" / "last.ckpt"
    first = run_entry_point(
        "evaluate.py",
        [f"ckpt_path={ckpt}", "task=reconstruction", *EVAL_FAST, f"hydra.run.dir={out}"],
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["task"] == "reconstruction"
    overrides = yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())
    assert "task=reconstruction" in overrides
    before = snapshot(out)
    for task in ("reconstruction", "likelihood"):
        again = run_entry_point(
            "evaluate.py", [f"ckpt_path={ckpt}", f"task={task}", f"hydra.run.dir={out}"]
        )
        assert again.returncode == 2, again.stderr[-2000:]
        [line] = error_lines(again.stderr)
        assert "already holds" in line and "metrics.json" in line
        assert snapshot(out) == before


@pytest.mark.slow
def test_gather_reads_the_settings_the_run_recorded_not_hydra_files(job):
    # what a later command into the directory could write: other overrides and choices
    hydra_dir = job / ".hydra"
    saved = {p: p.read_bytes() for p in hydra_dir.iterdir()}
    try:
        (hydra_dir / "overrides.yaml").write_text("- prior=gaussian\n- seed=9\n")
        hydra_cfg = yaml.safe_load((hydra_dir / "hydra.yaml").read_text())
        hydra_cfg["hydra"]["runtime"]["choices"]["prior"] = "gaussian"
        (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(hydra_cfg))
        [found] = read_jobs(job.parent)
    finally:
        for path, content in saved.items():
            path.write_bytes(content)
    assert found.path == job and found.overrides["seed"] == "3" and "prior" not in found.overrides
    assert found.choices["prior"] == "flow" and found.config["seed"] == 3
    assert found.metrics["val/mse"] > 0
