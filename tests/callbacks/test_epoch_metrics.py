"""Two DDP ranks make the same collectives in the same order with the FID callback and a
progress bar on (lfbm_lightning/callbacks/epoch_metrics.py): 2-process gloo runs of train.py;
and, in one process, the callbacks after EpochMetricsOnEveryRank find the epoch metrics computed.

A rank-0-only all-reduce (rank 0's bar reducing the epoch metrics) meets rank 1's FID
all-gather and stops the run at the end of epoch 0; ``ddp_timeout_min=1`` and the process
timeout make that fail within minutes instead of hanging.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lfbm_lightning.callbacks.epoch_metrics import EpochMetricsOnEveryRank
from tests.callbacks.test_fid_callback import fid_every_epoch
from tests.conftest import REPO, TINY
from tests.helpers.quiet_trainer import quiet_trainer

HELPERS = REPO / "tests" / "helpers"
# the default callbacks (tqdm's bar) with early stopping, and with rich's bar
BARS = {"tqdm": ["callbacks=early_stopping"], "rich": ["callbacks=rich"]}
# every callback acting at each epoch's end: rank 0's image grids between the collectives
EVERY_EPOCH = [
    "callbacks.image_grids.every_n_epochs=1",
    "callbacks.checkpoint.save_top_k=1",
    "callbacks.keep_last_epochs=1",
]


def two_rank_run(run_dir: Path, args: list[str]) -> subprocess.Popen:
    """Start a 2-process gloo ``train.py`` run in its own process group (killed as a whole on
    a timeout); :class:`ddp_probe.CollectiveLog` writes each rank's collectives to run_dir."""
    path = os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    args = [
        *TINY,
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "dataset.batch_size=50",
        "ddp_timeout_min=1",  # a mismatched collective fails after a minute instead of 30
        "extras.print_config=false",
        "+callbacks.collectives._target_=ddp_probe.CollectiveLog",
        f"+callbacks.collectives.out_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
        *args,
    ]
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdout=(run_dir.parent / f"{run_dir.name}.log").open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_all(processes: dict[str, subprocess.Popen], timeout: float) -> dict[str, int | None]:
    """Exit codes by name; a process still running after ``timeout`` seconds (all together)
    is killed with its process group and gets None."""
    deadline = time.monotonic() + timeout
    codes = {}
    for name, process in processes.items():
        try:
            codes[name] = process.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            codes[name] = None
    return codes


@pytest.fixture(scope="module")
def fid_runs(tmp_path_factory, inception_weights):
    """The two runs with the FID every epoch, side by side, one per progress bar: the root
    directory and each run's exit code (None: killed after 300 s)."""
    root = tmp_path_factory.mktemp("ddp_fid")
    fid = fid_every_epoch(inception_weights, root / "stats")
    started = {
        bar: two_rank_run(root / bar, [*fid, *EVERY_EPOCH, *extra]) for bar, extra in BARS.items()
    }
    return root, wait_all(started, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("bar", BARS)
def test_two_ranks_finish_with_the_fid_callback_and_a_progress_bar(fid_runs, bar):
    root, codes = fid_runs
    run = root / bar
    assert codes[bar] == 0, (root / f"{bar}.log").read_text()[-3000:]
    with open(run / "csv" / "metrics.csv") as handle:
        logged = {
            int(r["epoch"]): float(r["val/fid"]) for r in csv.DictReader(handle) if r["val/fid"]
        }
    assert sorted(logged) == [0, 1]
    assert all(math.isfinite(v) and v > 0 for v in logged.values())
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["val/fid"] == logged[1]
    assert record["val/fid_best"] == min(logged.values())
    checkpoints = {p.name for p in (run / "checkpoints").iterdir()}
    assert {"fid_best.ckpt", "last.ckpt", "epoch-0001.ckpt"} <= checkpoints, checkpoints
    assert any(name.startswith("best-epoch") for name in checkpoints), checkpoints
    grids = {p.name for p in (run / "images").glob("samples_e*.png")}
    assert grids == {"samples_e0001.png", "samples_e0002.png"}


@pytest.mark.slow
@pytest.mark.parametrize("bar", BARS)
def test_both_ranks_make_the_same_collectives_in_the_same_order(fid_runs, bar):
    """The epoch metrics' all-reduces, the FID's gathers, the checkpoints' barriers and
    broadcasts, early stopping's decisions: one sequence on both ranks."""
    root, codes = fid_runs
    assert codes[bar] == 0, (root / f"{bar}.log").read_text()[-3000:]
    ranks = [json.loads((root / bar / f"collectives-rank{r}.json").read_text()) for r in (0, 1)]
    names = {name for name, _ in ranks[0]}
    assert {"all_reduce", "all_gather_object", "barrier", "broadcast_object_list"} <= names
    assert ranks[0] == ranks[1]


class LogsAnEpochMean(pl.LightningModule):
    """Fits w to 1 by SGD and logs the epoch mean of its loss with ``sync_dist=True``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = (self.w - batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)


class ReducedAtEpochEnd(pl.Callback):
    """Records, in ``on_train_epoch_end``, whether each epoch metric was already computed
    (reduced over the ranks under DDP): a read now would then make no collective."""

    def __init__(self) -> None:
        self.computed: dict[str, bool] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = trainer._results.items()
        self.computed = {k: m._computed is not None for k, m in results if m.meta.on_epoch}


@pytest.mark.parametrize("first", [True, False], ids=["with", "without"])
def test_epoch_metrics_are_reduced_before_the_callbacks_after_it(first):
    """Lightning computes an epoch metric at its first read (the laziness that let rank 0's bar
    reduce alone); after :class:`EpochMetricsOnEveryRank` every later callback finds it done."""
    probe = ReducedAtEpochEnd()
    callbacks = [EpochMetricsOnEveryRank(), probe] if first else [probe]
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", devices=1, callbacks=callbacks)
    trainer.fit(LogsAnEpochMean())
    assert probe.computed == {"training_step.train/loss": first}
