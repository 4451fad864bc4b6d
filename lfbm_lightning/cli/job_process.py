"""Sweep jobs that fail alone: each job of a ``hydra/launcher=joblib`` sweep runs in its own
child process, and a sweep ends with one line counting the jobs that did not complete.

Hydra's joblib launcher runs jobs in a loky worker pool, where a worker that dies (SIGKILL, the
out-of-memory killer) fails every job of the batch. The worker instead starts the job as a
single train.py run in the job's directory (``hydra.run.dir=<job dir>``,
``hydra.output_subdir=null``) and waits: a lost child fails only its job, whose
``metrics.json`` then says ``failed`` with the reason, and the worker goes on to the next job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from lfbm_lightning.errors import LfbmError
from lfbm_lightning.runtime.checkpoint_io import atomic_write_text
from lfbm_lightning.runtime.distributed import is_sweep_only

CHILD = ("-m", "lfbm_lightning.cli.commands")
"""How the child starts: the train command's module run as a script."""


class JobFailed(LfbmError):
    """A sweep job's own process ended without completing the job; ``exit_code`` is the
    child's own status (1 when it was killed by a signal)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def in_joblib_worker() -> bool:
    """Whether this Hydra job is one of a sweep run by the joblib launcher."""
    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    target = str(hydra_cfg.launcher.get("_target_", ""))
    return hydra_cfg.mode == RunMode.MULTIRUN and "JoblibLauncher" in target


def child_command() -> list[str]:
    """train.py as a single run of this job: its overrides, in its directory."""
    hydra_cfg = HydraConfig.get()
    return [
        sys.executable,
        *CHILD,
        *hydra_cfg.overrides.task,
        *(o for o in hydra_cfg.overrides.hydra if not is_sweep_only(o)),
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        "hydra.output_subdir=null",
    ]


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def run_job_in_child(cfg: DictConfig) -> Any:
    """Run this job in its own process (module docstring); the value the job returns to a
    sweeper (``optimized_metric`` from its ``metrics.json``).

    Raises:
        JobFailed: the child did not exit 0 (``metrics.json`` says ``failed`` when the child
            had no chance to say how it ended).
    """
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    returncode = subprocess.run(child_command(), cwd=HydraConfig.get().runtime.cwd).returncode
    metrics_path = out_dir / "metrics.json"
    try:
        record = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        record = {}
    if returncode == 0:
        return record.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    reason = describe_exit(returncode)
    if returncode < 0:  # no handler ran: the record, if any, is from before
        record |= {"status": "failed", "error": f"the job's process was {reason}"}
        atomic_write_text(metrics_path, json.dumps(record, indent=2, sort_keys=True))
    message = f"job {out_dir} ended with {reason} (status {record.get('status')})"
    raise JobFailed(message, max(returncode, 1))


def job_status(job_dir: Path) -> str:
    """A job's ``status`` from its ``metrics.json`` (``not run`` without one)."""
    try:
        return str(json.loads((job_dir / "metrics.json").read_text()).get("status"))
    except (OSError, ValueError):
        return "not run"


def sweep_failures(sweep_dir: Path) -> tuple[int, list[str]]:
    """(jobs, ``"<job>: <status>"`` of each job that did not complete) of a sweep: the jobs
    whose checks passed (``.hydra/`` written then, :mod:`lfbm_lightning.runtime.job_record`)."""
    jobs = sorted(
        (p.parent for p in sweep_dir.glob("*/.hydra")), key=lambda p: (len(p.name), p.name)
    )
    failed = [f"{p.name}: {job_status(p)}" for p in jobs if job_status(p) != "completed"]
    return len(jobs), failed


class SweepReport(Callback):
    """Hydra callback: remember the sweep's directory, for the line that ends the sweep."""

    sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepReport.sweep_dir = Path(config.hydra.sweep.dir)


def report_sweep() -> int:
    """After a sweep: print one line counting its jobs that did not complete (with how to
    resume them) and return the exit status: 0 when all completed, else 1."""
    if SweepReport.sweep_dir is None:
        return 0
    n_jobs, failed = sweep_failures(SweepReport.sweep_dir)
    if not failed:
        return 0
    print(
        f"error: {len(failed)} of {n_jobs} jobs did not complete ({', '.join(failed)}): "
        f"add hydra.sweep.dir={SweepReport.sweep_dir} resume=true to the same command to "
        "finish them",
        file=sys.stderr,
        flush=True,
    )
    return 1
