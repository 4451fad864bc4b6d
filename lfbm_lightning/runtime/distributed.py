"""Evaluation work sharded over DDP ranks and gathered back on every rank.

Item ``i`` of ``n`` belongs to rank ``i % world_size`` (the interleaving of
``DistributedSampler``, so shard sizes differ by at most one). Each rank computes its items and
:func:`gather_lists` brings every rank's results to every rank::

    idx = shard_indices(len(dataset))                       # this rank's items
    rows = gather_lists([score(dataset[i]) for i in idx])   # all results, rank by rank
    if rank_and_world_size()[0] == 0:
        write(sorted(rows, key=item_index))

Outside an initialised ``torch.distributed`` process group (one process) the shard is every
item and gathering returns its input.

**Ranks inside a Hydra job.** Lightning's ``ddp`` strategy (``Trainer`` and ``Fabric``) starts
ranks 1..N-1 by re-running the entry script with the parent's command line
(``_hydra_subprocess_cmd``). Under ``--multirun`` that line is the whole sweep, so the ranks
would replay the sweep instead of joining their job; under the joblib launcher it is not even
the entry script (the worker's ``__main__`` is loky's). :func:`ddp_job_scope` (around
``trainer.fit`` in training, around ``fabric.launch()`` in evaluation) has them started by
:func:`job_rank_command` instead: a single run of exactly the current job's overrides in
exactly its output directory. It also undoes what the launcher leaves behind, so the next job
of a sweep run in the same process starts clean. On SLURM (one task per device) or under
``torchrun`` the ranks are started outside and nothing is re-run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher
from pytorch_lightning.utilities import rank_zero_only

from lfbm_lightning.errors import ConfigError

log = logging.getLogger(__name__)

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
"""Variables Lightning's launcher sets in the launching process (and never unsets)."""

CHILD_EXIT_TIMEOUT = 120.0
"""Seconds a finished job waits for its DDP rank processes to exit."""

SWEEP_ONLY_OVERRIDES = (
    "hydra.mode",
    "hydra.run",
    "hydra.sweep",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.output_subdir",
    "hydra.job.name",
)
"""Hydra overrides of the sweep that a rank's single run must not repeat."""


def rank_and_world_size() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_first_process() -> bool:
    """Whether this process will be global rank 0 of its job, known before any process group.

    Lightning's ``rank_zero_only.rank`` is read from ``RANK``, ``LOCAL_RANK`` or
    ``SLURM_PROCID`` until the strategy is set up; the process a user starts on node n > 0 of a
    multi-node job (``NODE_RANK=n``, docs/scaling.md) has none of them, so it also reads 0.
    Rank 0 is the first process of node 0: ``NODE_RANK`` (or torchrun's ``GROUP_RANK``) 0.
    """
    node_rank = os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or "0"
    return rank_zero_only.rank == 0 and int(node_rank) == 0


def ddp_strategy(strategy: Any, timeout_min: float) -> Any:
    """``trainer.strategy`` with the process group's timeout (``ddp_timeout_min``): the name
    ``ddp`` becomes ``DDPStrategy(timeout=...)``, anything else is returned as it is.

    A rank waits at most this long in a collective (for a rank that crashed, or for work that
    one rank does alone) before the job fails; Lightning's default is 30 minutes.
    """
    if strategy != "ddp":
        return strategy
    if not timeout_min > 0:
        raise ConfigError(f"ddp_timeout_min must be a number of minutes > 0, got {timeout_min}")
    return DDPStrategy(timeout=timedelta(minutes=timeout_min))


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The items of ``range(n)`` that ``rank`` handles: ``rank, rank + W, rank + 2W, ...``.

    Args:
        n: number of items (>= 0).
        rank: this process's rank (default: from the process group, else 0).
        world_size: W, the number of processes (default: from the process group, else 1).

    Returns:
        A range of ``ceil((n - rank) / W)`` indices; the shards of all ranks partition
        ``range(n)``.
    """
    if rank is None or world_size is None:
        rank, world_size = rank_and_world_size()
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need n >= 0 and 0 <= rank < world_size, got {n}, {rank}, {world_size}")
    return range(rank, n, world_size)


def gather_lists(local: Sequence[Any]) -> list[Any]:
    """Every rank's list of picklable results, concatenated in rank order, on every rank.

    For results whose count per rank is not fixed by :func:`shard_indices` (e.g. one row per
    image and restart); callers that need item order sort the result by their own key.
    """
    if rank_and_world_size()[1] == 1:
        return list(local)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(local))
    return [item for part in parts for item in part]


def is_sweep_only(override: str) -> bool:
    """Whether a ``hydra`` override only concerns the sweep (``hydra/launcher=joblib``, ...)."""
    key = override.split("=", 1)[0].lstrip("+~")
    return any(key == p or key.startswith(p + ".") for p in SWEEP_ONLY_OVERRIDES)


def job_rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory that start DDP rank ``local_rank`` of the current
    Hydra job.

    A single run (no ``--multirun``, no sweep) of the entry script with the job's own overrides,
    ``hydra.run.dir`` = the job's output directory and ``hydra.output_subdir=null``: the rank
    creates no directory, leaves the job's ``.hydra/`` files alone and logs to
    ``<job dir>/<job name>_rank<local_rank>.log``. It runs from the directory the sweep was
    started in, like the job itself.
    """
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.hydra if not is_sweep_only(o)]
    command = [
        sys.executable,
        to_absolute_path(sys.argv[0]),
        *hydra_cfg.overrides.task,
        *overrides,
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, hydra_cfg.runtime.cwd


def _launched_children(strategy: Any) -> list[subprocess.Popen]:
    """The rank processes this process started (Lightning's ``ddp`` launcher), if any."""
    return list(getattr(getattr(strategy, "launcher", None), "procs", None) or [])


@contextmanager
def ddp_job_scope(strategy: Any) -> Iterator[None]:
    """Start (``trainer.fit`` or ``fabric.launch()``) and run the ranks of a Lightning
    ``strategy`` inside this scope so that DDP ranks join the current Hydra job, the job ends
    only when its ranks have, and nothing leaks into the next job.

    Inside a Hydra job, Lightning starts the ranks with :func:`job_rank_command`. On exit the
    environment is restored: the launcher leaves ``LOCAL_RANK=0`` and ``MASTER_PORT`` set,
    which would make the next job of a sweep in the same process believe its ranks were
    started externally and wait for them forever. The process group and the torch thread count
    the launcher changed are reset too. The ranks are waited for (up to
    :data:`CHILD_EXIT_TIMEOUT` s), or killed when the work raised, so that none is left waiting
    in a collective.

    Args:
        strategy: ``trainer.strategy`` or ``fabric.strategy``.
    """
    saved = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", *LAUNCH_ENV)}
    threads = torch.get_num_threads()
    had_group = dist.is_available() and dist.is_initialized()
    lightning_commands = (pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd)
    if HydraConfig.initialized():
        pl_launcher._hydra_subprocess_cmd = job_rank_command
        fabric_launcher._hydra_subprocess_cmd = job_rank_command
    try:
        yield
    except BaseException:
        for child in _launched_children(strategy):
            child.kill()
        raise
    else:
        for child in _launched_children(strategy):
            try:
                child.wait(timeout=CHILD_EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("DDP rank process %d did not exit; killing it", child.pid)
                child.kill()
    finally:
        pl_launcher._hydra_subprocess_cmd, fabric_launcher._hydra_subprocess_cmd = (
            lightning_commands
        )
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
