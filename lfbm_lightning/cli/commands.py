"""The commands ``lfbm-train`` and ``lfbm-evaluate`` (``python train.py`` / ``evaluate.py``
from a checkout run the same functions).

Each is a Hydra application over the configs shipped inside the package
(``conf``), so it works from any directory after ``pip install``. ``--help``
prints the command's own page (:mod:`lfbm_lightning.cli.help`); the command line is checked
before Hydra starts (:mod:`lfbm_lightning.cli.preflight`); project and config errors become
one line and an exit status (:func:`lfbm_lightning.cli.exit_codes.report_errors`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lfbm_lightning import CONF_DIR
from lfbm_lightning.cli.exit_codes import fail, report_errors, sweep_exit_code
from lfbm_lightning.cli.help import evaluate_help, train_help
from lfbm_lightning.cli.preflight import preflight
from lfbm_lightning.errors import ConfigError

HELP_FLAGS = ("--help", "-h")
PLAN_FLAG = "plan=true"
MULTIRUN_FLAGS = {"-m", "--multirun"}


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
@report_errors
def _train(cfg: DictConfig) -> float | None:
    # imported here, not at the top: pytorch_lightning takes seconds to import, which --help,
    # plan=true and Hydra's own override errors need not pay
    from lfbm_lightning.cli.job_process import in_joblib_worker, run_job_in_child  # noqa: PLC0415
    from lfbm_lightning.run.training import train  # noqa: PLC0415

    if in_joblib_worker():  # a lost job must cost only itself (cli/job_process.py)
        return run_job_in_child(cfg)
    _, metrics = train(cfg)
    # a sweeper (hparams_search=...) optimises the value returned here
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
@report_errors
def _evaluate(cfg: DictConfig) -> None:
    from lfbm_lightning.run.evaluation import evaluate  # noqa: PLC0415 - as in _train

    evaluate(cfg, command=True)


def _run(app: Callable[[], object], page: Callable[[Path], str], config_name: str) -> None:
    if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
        print(page(CONF_DIR))
        return
    if os.environ.get("HYDRA_FULL_ERROR") != "1":  # else Hydra reports, with its traceback
        try:
            preflight(config_name, sys.argv[1:])
        except ConfigError as err:
            fail(err)
    try:
        app()
    except SystemExit as stop:  # Hydra exits 1 after a failed job of a sweep
        sys.exit(sweep_exit_code(stop.code))


def train_command() -> None:
    """``lfbm-train [group=option ...] [key=value ...]``: train (``--help`` for the page).

    A sweep (``-m``) ends with one line counting the jobs that did not complete, exit status
    1 then unless a failed job's own status ends it (:mod:`lfbm_lightning.cli.job_process`).
    With ``plan=true`` nothing trains: the sweep the other arguments describe is printed with
    its jobs, epochs, generator passes and estimated hours (:mod:`lfbm_lightning.cli.plan`),
    before Hydra would launch a job; a job that would fail train.py's checks refuses the plan
    (one line, exit status 2).
    """
    if PLAN_FLAG in sys.argv[1:]:
        from lfbm_lightning.cli.plan import plan  # noqa: PLC0415 - it imports the model, as _train

        ignored = (PLAN_FLAG, "-m", "--multirun")
        try:
            text = plan([arg for arg in sys.argv[1:] if arg not in ignored])
        except ConfigError as err:
            fail(err)
        print(text, end="")
        return
    try:
        _run(_train, train_help, "train")
        status = 0
    except SystemExit as stopped:
        status = stopped.code if isinstance(stopped.code, int) else int(stopped.code is not None)
    if MULTIRUN_FLAGS & set(sys.argv[1:]):
        from lfbm_lightning.cli.job_process import report_sweep  # noqa: PLC0415

        reported = report_sweep()  # the line is printed whatever the status
        status = status or reported  # a failed job's own status (2, 143, ...) comes first
    sys.exit(status)


def evaluate_command() -> None:
    """``lfbm-evaluate ckpt_path=... task=...``: evaluate a checkpoint (``--help``)."""
    _run(_evaluate, evaluate_help, "evaluate")


if __name__ == "__main__":  # the process of one sweep job (cli/job_process.py)
    train_command()
