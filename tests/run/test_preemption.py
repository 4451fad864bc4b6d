"""SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) in every phase of a run: it stops
at once (after the batch in training), last.ckpt is saved or kept, metrics.json says
"interrupted" and where, exit status 143 / 130, and resuming from that checkpoint runs to the
end."""

from __future__ import annotations

import json

import pytest
import torch

from lfbm_lightning.runtime.checkpoints import load_model
from tests.conftest import TINY
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
    assert "stopped by SIGTERM during training at epoch 1" in line, line
    assert f"ckpt_path={last}" in line, line
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


EVALUATE = [
    "evaluate_after_fit=[reconstruction,likelihood]",
    'evaluate_overrides=["device=cpu","progress=false","++reconstruction.n_examples=40",'
    '"++likelihood.n_examples=10","++likelihood.n_samples=4"]',
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "signal", "code"),
    [
        ("sanity_check", "TERM", 143),
        ("training", "INT", 130),
        ("validation", "TERM", 143),
        ("end_figures", "INT", 130),
        ("evaluation_after_fit", "TERM", 143),
    ],
)
def test_a_signal_in_any_phase_stops_at_once_keeps_a_checkpoint_and_resumes(
    tmp_path, phase, signal, code
):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    args = [
        f"hydra.run.dir={run}",
        *TINY,
        "trainer.limit_train_batches=3",
        "callbacks.progress_bar.refresh_rate=0",
        "extras.print_config=false",
        *(EVALUATE if phase == "evaluation_after_fit" else []),
    ]
    signal_in = callback("SignalInPhase", phase=phase, signal=signal, task=1)
    result = run_train([*args, *signal_in])
    assert result.returncode == code, result.stderr[-3000:]
    assert not (run / "phase_went_on").exists()  # the phase did not run on after the signal
    [line] = error_lines(result.stderr)
    assert f"stopped by SIG{signal} during {phase}" in line and f"ckpt_path={last}" in line, line
    record = json.loads((run / "metrics.json").read_text())
    assert (record["status"], record["phase"], record["signal"]) == (
        "interrupted",
        phase,
        f"SIG{signal}",
    )
    load_model(last)
    if phase == "evaluation_after_fit":  # the first task's numbers are kept
        assert record["evaluation"] == {"reconstruction": "completed"}
        reconstruction_mse = record["reconstruction/mse"]
        # what the stopped task left: the resumed run re-scores into eval/<task>/ all the same
        # (evaluate.py alone refuses a directory that holds files)
        partial = run / "eval" / "likelihood"
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "per_example.csv").write_text("index\n")

    result = run_train([*args, f"ckpt_path={last}"])
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed" and "phase" not in record
    assert record["progress"]["epochs_completed"] == 1
    assert torch.load(last, weights_only=True)["epoch"] == 0
    if phase == "evaluation_after_fit":  # only the task not completed ran again
        assert record["evaluation"] == {"reconstruction": "completed", "likelihood": "completed"}
        assert record["reconstruction/mse"] == reconstruction_mse
        assert "task reconstruction completed earlier, skipped" in (run / "train.log").read_text()
