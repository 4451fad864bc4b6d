"""DDP on CPU with gloo: sharded evaluation, ranks in sync, 1 vs 2 processes, SLURM tasks.

The training runs go through ``train.py`` in subprocesses (``strategy=ddp`` inside pytest
would re-launch pytest); :mod:`ddp_probe` reports what every rank held.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from pytorch_lightning.strategies import DDPStrategy

from lfbm_lightning.errors import ConfigError
from lfbm_lightning.runtime.distributed import ddp_strategy, gather_lists, shard_indices
from tests.conftest import REPO, TINY, run_entry_point

HELPERS = Path(__file__).resolve().parents[1] / "helpers"

# 4 steps of a global batch of 100 (1 x 100 or 2 x 50), logged every step, every rank probed
RUN = [
    *TINY,
    "trainer.limit_train_batches=4",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "trainer.strategy=ddp",
    "+callbacks.probe._target_=ddp_probe.RankProbe",
]
TWO_PROCESSES = ["trainer.devices=2", "dataset.batch_size=50"]
HOLDOUT = ["dataset.holdout_digit=1"]  # the anomaly task's split, in the runs of ddp_runs
EVALUATE_OVERRIDES = [
    "device=cpu",
    "progress=false",
    "++reconstruction.n_examples=20",  # ++: the anomaly task's config has no such node
    "++reconstruction.n_steps=5",
]
# anomaly fails (a bad anomaly.scores), then reconstruction runs: in the 2-process run
AFTER_FIT = [
    "evaluate_after_fit=[anomaly,reconstruction]",
    "evaluate_overrides=["
    + ",".join(f'"{o}"' for o in [*EVALUATE_OVERRIDES, "++anomaly.scores=[prior]"])
    + "]",
]
RUN_DIR_ENTRIES = {
    ".hydra",
    "checkpoints",
    "csv",
    "metrics.json",
    "samples.png",
    "reconstructions.png",
    "train.log",
    "curves.png",
    "config_tree.log",
    ".lock",
}


def start_train(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """Start ``python train.py args`` from the repo root, ``tests/`` importable, W&B offline."""
    environment = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": str(HELPERS),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def finish(process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def read_probe(probe_dir: Path, tag: str) -> dict:
    """The report and parameters (start, end) that rank probe ``tag`` wrote."""
    report = json.loads((probe_dir / f"{tag}.json").read_text())
    report.update(torch.load(probe_dir / f"{tag}.pt"))
    return report


def synced_metrics(report: dict) -> dict[str, float]:
    return {k: v for k, v in report["metrics"].items() if k.startswith(("train/", "val/"))}


def test_shards_partition_the_items_evenly():
    for n in (0, 1, 2, 7, 100):
        for world_size in (1, 2, 3, 8):
            shards = [shard_indices(n, r, world_size) for r in range(world_size)]
            assert sorted(i for shard in shards for i in shard) == list(range(n))
            sizes = [len(shard) for shard in shards]
            assert max(sizes) - min(sizes) <= 1
    assert shard_indices(5) == range(5)  # no process group: one process does everything
    with pytest.raises(ValueError):
        shard_indices(3, rank=2, world_size=2)


def test_gathering_in_one_process_returns_the_results():
    assert gather_lists(("a", "b")) == ["a", "b"]


@pytest.mark.slow
def test_two_processes_gather_every_rank_s_rows(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))  # spawned processes import gather_worker by name
    import gather_worker

    torch.multiprocessing.spawn(gather_worker.gather_worker, args=(2, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for n in gather_worker.GATHER_SIZES:
            assert results[n]["shard"] == list(range(rank, n, 2))
            # rank 0's rows (items 0, 2, ...), then rank 1's (1, 3, ...), on both ranks
            order = [*range(0, n, 2), *range(1, n, 2)]
            assert results[n]["rows"] == [gather_worker.item_result(i) for i in order]


@pytest.mark.slow
def test_a_task_failing_on_one_rank_after_fit_fails_on_every_rank(tmp_path, monkeypatch):
    """Two ranks run ``evaluate_after_fit``; ``anomaly`` raises on rank 1 alone: both ranks
    report it failed with rank 1's error and go on to ``reconstruction`` together, whose
    numbers are rank 0's on both; rank 0 alone writes metrics.json."""
    monkeypatch.syspath_prepend(str(HELPERS))  # spawned processes import ddp_probe by name
    import ddp_probe

    torch.multiprocessing.spawn(ddp_probe.after_fit_worker, args=(2, str(tmp_path)), nprocs=2)
    added = [json.loads((tmp_path / f"added{r}.json").read_text()) for r in (0, 1)]
    seconds = [a.pop("time/evaluate_after_fit_s") for a in added]  # each rank's own clock
    assert all(s > 0 for s in seconds)
    assert added[0] == added[1]
    assert added[0]["evaluation"] == {
        "anomaly": "failed (rank 1): RuntimeError: out of memory on rank 1",
        "reconstruction": "completed",
    }
    assert added[0]["reconstruction/mse"] == 0.5  # rank 0's number (rank 1's is 1.5)
    assert added[0]["reconstruction/on_device"] == 1.0
    assert "anomaly/mse" not in added[0]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        **added[0],
        "time/evaluate_after_fit_s": seconds[0],
    }


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """A 2-process run (2 x 50 images per step) and a 1-process run (1 x 100) of 4 steps, both
    with the ddp strategy (the same DistributedSampler order), run side by side; the 2-process
    run then evaluates (AFTER_FIT)."""
    root = tmp_path_factory.mktemp("ddp")
    probe = root / "probe"
    runs = {
        "two": [*TWO_PROCESSES, *HOLDOUT, *AFTER_FIT],
        "one": ["trainer.devices=1", "dataset.batch_size=100", *HOLDOUT],
    }
    started = {
        name: start_train(
            [*RUN, *extra, f"hydra.run.dir={root / name}", f"+callbacks.probe.out_dir={probe}"],
            root / f"{name}.log",
        )
        for name, extra in runs.items()
    }
    for name, process in started.items():
        finish(process, root / f"{name}.log")
    return root


@pytest.mark.slow
def test_two_ddp_processes_stay_in_sync_and_log_reduced_metrics(ddp_runs):
    ranks = [read_probe(ddp_runs / "probe", f"two-rank{r}") for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    # same parameters on both ranks, at the start and after 4 optimizer steps
    assert torch.equal(ranks[0]["start"], ranks[1]["start"])
    assert torch.equal(ranks[0]["end"], ranks[1]["end"])
    assert not torch.equal(ranks[0]["start"], ranks[0]["end"])
    # different, seeded Langevin noise per rank: seed * 1000 + rank (seed 1)
    assert [r["langevin_seed"] for r in ranks] == [1000, 1001]
    # different examples per rank, the local losses differ...
    assert not set(ranks[0]["indices"][0]) & set(ranks[1]["indices"][0])
    assert ranks[0]["losses"] != ranks[1]["losses"]
    # ...but the logged metrics are reduced over the ranks: equal everywhere, and each logged
    # step loss is the mean of the two ranks' local losses
    assert synced_metrics(ranks[0]) == synced_metrics(ranks[1])
    with open(ddp_runs / "two" / "csv" / "metrics.csv") as f:
        logged = [
            float(row["train/loss_step"]) for row in csv.DictReader(f) if row["train/loss_step"]
        ]
    local_means = [
        (a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"], strict=True)
    ]
    assert logged == pytest.approx(local_means, rel=1e-6)
    # files written once, by rank 0; rank 1 ran inside the run directory (its log is there)
    run_dir = ddp_runs / "two"
    assert {p.name for p in run_dir.iterdir()} == RUN_DIR_ENTRIES | {"train_rank1.log", "eval"}
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.ckpt"}


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_same_global_batch(ddp_runs):
    """Exact where the design allows it: the same initial parameters and the same 100 examples
    in every step. Not bit-exact after that: each rank draws its own Langevin noise stream, so
    the posterior samples z (and hence the gradients) differ by Monte-Carlo noise."""
    two = [read_probe(ddp_runs / "probe", f"two-rank{r}") for r in (0, 1)]
    one = read_probe(ddp_runs / "probe", "one-rank0")
    assert torch.equal(one["start"], two[0]["start"])
    for step, indices in enumerate(one["indices"]):
        assert sorted(indices) == sorted(two[0]["indices"][step] + two[1]["indices"][step])
    # first step, same parameters and examples: the losses differ only by the noise
    first = (two[0]["losses"][0] + two[1]["losses"][0]) / 2
    assert first == pytest.approx(one["losses"][0], rel=0.01)
    one_metrics, two_metrics = synced_metrics(one), synced_metrics(two[0])
    assert two_metrics["train/loss_epoch"] == pytest.approx(
        one_metrics["train/loss_epoch"], rel=0.02
    )
    assert two_metrics["val/mse"] == pytest.approx(one_metrics["val/mse"], rel=0.05)
    # the parameter updates point the same way
    update_one, update_two = one["end"] - one["start"], two[0]["end"] - two[0]["start"]
    cosine = torch.nn.functional.cosine_similarity(update_one, update_two, dim=0)
    assert cosine > 0.5, cosine


@pytest.mark.slow
def test_two_ranks_draw_different_ebm_prior_samples_and_stay_in_sync(tmp_path):
    """The EBM prior's loss draws its own Langevin samples from a generator seeded with
    (seed, rank): different on each rank (independent Monte-Carlo estimates that DDP averages),
    while the parameters stay identical on both ranks."""
    args = [*RUN, *TWO_PROCESSES, "prior=ebm", "trainer.limit_train_batches=2"]
    args += [f"hydra.run.dir={tmp_path / 'ebm'}", f"+callbacks.probe.out_dir={tmp_path}"]
    finish(start_train(args, tmp_path / "ebm.log"), tmp_path / "ebm.log")
    ranks = [read_probe(tmp_path, f"ebm-rank{r}") for r in (0, 1)]
    assert [r["prior"] for r in ranks] == ["EnergyPrior"] * 2
    assert [r["prior_seed"] for r in ranks] == [2**32 + 1000, 2**32 + 1001]
    samples = [r["prior_samples"] for r in ranks]
    assert len(samples[0]) == len(samples[1]) == 2  # one batch of prior samples per step
    for a, b in zip(*samples, strict=True):
        assert a.shape == b.shape == (50, 16) and torch.isfinite(a).all()
        assert not torch.allclose(a, b, atol=0.1)  # different draws, not the same chain
    assert torch.equal(ranks[0]["start"], ranks[1]["start"])
    assert torch.equal(ranks[0]["end"], ranks[1]["end"])
    assert not torch.equal(ranks[0]["start"], ranks[0]["end"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_slurm_tasks_are_the_ranks_and_reproduce_the_ddp_run(ddp_runs, tmp_path):
    """Two processes started like ``srun`` starts the tasks of a submitit job (one task per
    device): Lightning's SLURMEnvironment reads the ranks, nothing is re-launched, and the run
    reproduces the Lightning-launched 2-process run bit for bit (same seeds, same noise)."""
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "MASTER_PORT": str(free_port()),
    }
    args = [*RUN, *TWO_PROCESSES, *HOLDOUT, f"hydra.run.dir={tmp_path / 'two'}"]
    args.append(f"+callbacks.probe.out_dir={tmp_path / 'probe'}")
    tasks = [
        start_train(
            args, tmp_path / f"task{r}.log", SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **slurm
        )
        for r in (0, 1)
    ]
    for r, task in enumerate(tasks):
        finish(task, tmp_path / f"task{r}.log")
    for r in (0, 1):
        report = read_probe(tmp_path / "probe", f"two-rank{r}")
        assert (report["rank"], report["world_size"]) == (r, 2)
        reference = read_probe(ddp_runs / "probe", f"two-rank{r}")
        assert torch.equal(report["end"], reference["end"])
        assert report["losses"] == reference["losses"]
    assert {p.name for p in (tmp_path / "two").iterdir()} == RUN_DIR_ENTRIES


@pytest.mark.slow
def test_evaluation_after_fit_runs_in_both_ranks_and_matches_one_process(ddp_runs, tmp_path):
    """``evaluate_after_fit`` in a 2-process job: both ranks share the reconstruction out (the
    task's summary says ``processes: 2``) and the row's number is what ``evaluate.py
    devices=1`` gives for that run's checkpoint. ``anomaly`` fails on both ranks (a bad
    ``anomaly.scores``) without holding up the task after it."""
    run = ddp_runs / "two"
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["evaluation"]["reconstruction"] == "completed"
    anomaly = record["evaluation"]["anomaly"]
    assert anomaly.startswith("failed (rank 0): ") and "including joint" in anomaly
    task = json.loads((run / "eval" / "reconstruction" / "metrics.json").read_text())
    assert task["processes"] == 2 and task["n_images"] == 20
    assert record["reconstruction/mse"] == task["mse"]

    alone = tmp_path / "alone"
    ckpt = run / "checkpoints" / "last.ckpt"
    result = run_entry_point(
        "evaluate.py",
        [
            f"ckpt_path={ckpt}",
            "task=reconstruction",
            "devices=1",
            *EVALUATE_OVERRIDES,
            f"hydra.run.dir={alone}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one = json.loads((alone / "metrics.json").read_text())
    assert one["processes"] == 1 and one["n_images"] == 20
    assert record["reconstruction/mse"] == pytest.approx(one["mse"], rel=1e-5, abs=1e-8)
    assert record["reconstruction/mse_01"] == pytest.approx(one["mse_01"], rel=1e-5, abs=1e-8)


def test_ddp_strategy_waits_ddp_timeout_min_in_a_collective(compose_cfg):
    cfg = compose_cfg(["trainer=ddp_cpu", "ddp_timeout_min=5"])
    strategy = ddp_strategy(cfg.trainer.strategy, cfg.ddp_timeout_min)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._timeout == timedelta(minutes=5)
    assert compose_cfg([]).ddp_timeout_min == 30  # Lightning's own default
    assert ddp_strategy("auto", 5) == "auto"
    with pytest.raises(ConfigError, match=r"ddp_timeout_min must be a number of minutes > 0"):
        ddp_strategy("ddp", 0)
