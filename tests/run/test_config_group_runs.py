"""Each option of the debug, callbacks, logger and hparams_search groups, run once through the
installed commands from a directory outside the checkout, as a user would."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY

BIN = Path(sys.executable).parent
# The checks below count training steps: two-step chains (the validation chain too) suffice.
SHORT_CHAINS = ["inference.n_steps=2", "inference.eval_steps=2"]


def command(name: str, args: list[str], cwd: Path, timeout: int = 600):
    """Run the console script ``name`` (lfbm-train, ...) with ``args`` from ``cwd``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    return subprocess.run(
        [str(BIN / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / "run"
    result = command("lfbm-train", [*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, run_dir


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_help_pages_from_another_directory(tmp_path):
    page = command("lfbm-train", ["--help"], cwd=tmp_path)
    assert page.returncode == 0
    for group in ("dataset ", "prior ", "debug ", "callbacks ", "hparams_search "):
        assert f"\n  {group}" in page.stdout, group
    assert "fdr" in page.stdout and "digits_optuna" in page.stdout
    page = command("lfbm-evaluate", ["--help"], cwd=tmp_path)
    assert page.returncode == 0
    for task in ("anomaly", "inpainting", "likelihood", "reconstruction", "recovery", "synthesis"):
        assert f"\n  {task} " in page.stdout, task
    assert "chain=sample" in page.stdout  # a task's own option, with its value
    assert "\n  prior " not in page.stdout  # no training groups
    page = command("lfbm-gather", ["--help"], cwd=tmp_path)
    assert page.returncode == 0 and "sweep_dir" in page.stdout


@pytest.mark.slow
def test_debug_fdr_runs_one_batch_and_saves_no_checkpoint(tmp_path):
    _, run_dir = train(tmp_path, "debug=fdr", "inference.n_steps=2", "inference.eval_steps=2")
    assert status(run_dir)["status"] == "completed"
    assert status(run_dir)["progress"]["global_step"] == 2  # one batch, two optimizers
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_debug_limit_trains_a_fraction_of_the_batches(tmp_path):
    _, run_dir = train(tmp_path, "debug=limit", "trainer.max_epochs=2", *SHORT_CHAINS)
    progress = status(run_dir)["progress"]
    # digits: 1,437 training images, batch 100 -> 15 batches; 0.2 of them is 3, per epoch
    assert (progress["epochs_completed"], progress["global_step"]) == (2, 2 * 3 * 2)


@pytest.mark.slow
def test_debug_overfit_reuses_the_same_batches(tmp_path):
    _, run_dir = train(tmp_path, "debug=overfit", "trainer.max_epochs=2", *SHORT_CHAINS)
    assert status(run_dir)["progress"]["global_step"] == 2 * 3 * 2  # 3 batches per epoch


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "expected", "absent"),
    [
        ("none", set(), {"checkpoints", "curves.png", "samples.png"}),
        ("early_stopping", {"checkpoints", "curves.png"}, set()),
    ],
)
def test_callbacks_options(tmp_path, option, expected, absent):
    # TINY without its callbacks.image_grids override: callbacks=none has no such callback
    _, run_dir = train(tmp_path, f"callbacks={option}", *TINY[:6])
    names = {p.name for p in run_dir.iterdir()}
    assert expected <= names and not absent & names, names
    assert status(run_dir)["status"] == "completed"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.slow
def test_rich_callbacks_profiler_and_several_loggers_in_one_run(tmp_path):
    """callbacks=rich, debug=profiler and logger=[csv,tensorboard,mlflow] touch different parts
    of a run (progress bar and summary, trainer.profiler, trainer.logger), so one run checks all
    three; loggers whose package is not installed are left out of the list."""
    tensorboard, mlflow = installed("tensorboard"), installed("mlflow")
    loggers = ["csv"] + ["tensorboard"] * tensorboard + ["mlflow"] * mlflow
    options = ["callbacks=rich", "debug=profiler", f"logger=[{','.join(loggers)}]"]
    result, run_dir = train(tmp_path, *options, *TINY)
    assert status(run_dir)["status"] == "completed"

    # callbacks=rich: the default callbacks' files, and RichModelSummary's table
    names = {p.name for p in run_dir.iterdir()}
    assert {"checkpoints", "curves.png", "samples.png"} <= names, names
    assert "┃" in result.stdout

    # debug=profiler: the simple profile
    assert "run_training_batch" in (run_dir / "fit-profile.txt").read_text()

    # every logger got the metrics and the figures
    assert (run_dir / "csv" / "metrics.csv").is_file()
    if tensorboard:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run_dir / "tensorboard"))
        events.Reload()
        assert {"images/samples", "images/reconstructions", "curves"} <= set(
            events.Tags()["images"]
        )
        assert "val/mse" in events.Tags()["scalars"]
    if mlflow:
        artifacts = {p.name for p in (run_dir / "mlflow-artifacts").rglob("*.png")}
        assert any(name.startswith("curves_step") for name in artifacts), artifacts
        assert (run_dir / "mlflow.db").is_file()


@pytest.mark.slow
def test_optuna_search_with_two_trials_reports_the_best_trial(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    args = ["-m", "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2"]
    args += [*TINY, f"hydra.sweep.dir={sweep}"]
    result = command("lfbm-train", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(t["val/mse"] for t in trials))
    assert set(best["best_params"]) == {
        "model.lr_generator",
        "model.lr_prior",
        "inference.step_size",
    }
