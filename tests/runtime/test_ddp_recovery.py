"""DDP over gloo when a run goes wrong or is resumed: a divergence seen by one rank is decided
by all (skip together, or stop together with the truthful status), and a stopped 2-rank run
resumes with each rank's own random streams, ending where an uninterrupted run ends.

Four 2-rank ``train.py`` runs of 2 epochs x 2 batches, shared by the tests: a clean reference,
NaN on rank 1 under ``on_divergence=stop`` (stops after epoch 0) and ``skip``, and the resume of
the stopped run's ``last.ckpt``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from lfbm_lightning.runtime.checkpoints import load_model
from tests.conftest import TINY
from tests.helpers.train_runs import callback, error_lines
from tests.runtime.test_ddp import read_probe, start_train

RUN = [
    *TINY,
    "trainer=ddp_cpu",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=0",
    "dataset.batch_size=50",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
    "extras.print_config=false",
]
NAN_ON_RANK_1 = callback("NaNOnRank", rank=1, epoch=1, batch=0)
TIMEOUT = 900  # a desynchronised job hangs in a collective: fail instead of waiting


def probed(root: Path, name: str, *extra: str) -> list[str]:
    return [
        *RUN,
        *extra,
        f"hydra.run.dir={root / name}",
        "+callbacks.probe._target_=ddp_probe.RankProbe",
        f"+callbacks.probe.out_dir={root / 'probe'}",
    ]


def wait(process: subprocess.Popen, log: Path) -> int:
    try:
        return process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the job hung for {TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The four runs (module docstring); the stopped run's outputs are copied aside before its
    checkpoint is resumed, and each run's exit status is in ``<root>/<name>.rc``."""
    root = tmp_path_factory.mktemp("ddp_recovery")
    jobs = {
        "reference": probed(root, "reference"),
        "stop": [*RUN, *NAN_ON_RANK_1, f"hydra.run.dir={root / 'stop'}"],
        "skip": probed(root, "skip", *NAN_ON_RANK_1, "model.on_divergence=skip")
        + ["model.max_skipped_fraction=0.5"],
    }
    started = {name: start_train(args, root / f"{name}.log") for name, args in jobs.items()}
    for name, process in started.items():
        (root / f"{name}.rc").write_text(str(wait(process, root / f"{name}.log")))
    stopped = root / "stop" / "checkpoints" / "last.ckpt"
    resume = probed(root, "resumed", f"ckpt_path={stopped}")
    log = root / "resumed.log"
    (root / "resumed.rc").write_text(str(wait(start_train(resume, log), log)))
    return root


def exit_status(root: Path, name: str) -> int:
    return int((root / f"{name}.rc").read_text())


def finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_with_the_diverged_status(runs):
    log = (runs / "stop.log").read_text()
    assert exit_status(runs, "stop") == 1, log[-3000:]
    lines = error_lines(log)
    assert lines, log[-3000:]
    last = runs / "stop" / "checkpoints" / "last.ckpt"
    for line in lines:  # rank 0's, and rank 1's when it got to print before being stopped
        assert "non-finite z on rank 1 at epoch 1, batch 0" in line, line
    assert any(f"the last good checkpoint is {last} (epoch 0)" in line for line in lines)
    assert "Traceback" not in log
    record = json.loads((runs / "stop" / "metrics.json").read_text())
    assert record["status"] == "diverged"
    assert record["progress"]["epochs_completed"] == 1
    assert finite(load_model(last))


@pytest.mark.slow
def test_a_nan_on_one_rank_is_skipped_by_every_rank(runs):
    assert exit_status(runs, "skip") == 0, (runs / "skip.log").read_text()[-3000:]
    record = json.loads((runs / "skip" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["progress"]["skipped_batches"] == 1
    ranks = [read_probe(runs / "probe", f"skip-rank{r}") for r in (0, 1)]
    assert torch.equal(ranks[0]["end"], ranks[1]["end"])  # both ranks took the same steps
    assert torch.isfinite(ranks[0]["end"]).all()
    # the skipped step is the reference's first step of epoch 1 not taken: 3 steps, not 4
    reference = read_probe(runs / "probe", "reference-rank0")
    assert len(ranks[0]["losses"]) == len(reference["losses"]) == 4
    assert not torch.equal(ranks[0]["end"], reference["end"])


@pytest.mark.slow
def test_a_resumed_two_rank_run_ends_like_an_uninterrupted_one(runs):
    assert exit_status(runs, "resumed") == 0, (runs / "resumed.log").read_text()[-3000:]
    ends = {
        name: [read_probe(runs / "probe", f"{name}-rank{r}")["end"] for r in (0, 1)]
        for name in ("reference", "resumed")
    }
    for rank in (0, 1):
        assert torch.equal(ends["resumed"][rank], ends["reference"][rank])
    a, b = (
        torch.load(runs / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("reference", "resumed")
    )
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert sorted(a["rng_states"]) == sorted(b["rng_states"]) == [0, 1]
    for rank in (0, 1):
        for name, state in a["rng_states"][rank].items():
            assert torch.equal(state, b["rng_states"][rank][name]), (rank, name)
    # each rank checkpoints its own streams: chains and noise differ between ranks
    for name in ("langevin", "prior"):
        assert not torch.equal(a["rng_states"][0][name], a["rng_states"][1][name]), name
