"""The error handling shared by ``train.py`` and ``evaluate.py``.

A user-fixable error is printed as one line on stderr, ``error: <message>``, and the process
exits with ``2`` (a config or usage error), ``1`` (any other project error) or the error's own
``exit_code`` (``143`` SIGTERM, ``130`` SIGINT). ``HYDRA_FULL_ERROR=1`` re-raises instead;
anything else is a bug and keeps its traceback. In a ``--multirun`` a failed job raises
:class:`JobFailed` and :func:`sweep_exit_code` turns Hydra's status 1 into the job's own.
Details: docs/runs.md ("Errors and exit codes").
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from lfbm_lightning.errors import ConfigError, LfbmError

EXIT_FAILURE = 1
EXIT_USAGE = 2


CONFIG_ERRORS = (ConfigError, OmegaConfBaseException, InstantiationException)
"""Errors that exit 2."""


def project_cause(err: BaseException) -> BaseException:
    """The project error that made Hydra's ``instantiate`` fail, else ``err`` itself."""
    cause = err.__cause__
    return (
        cause if isinstance(err, InstantiationException) and isinstance(cause, LfbmError) else err
    )


def exit_code(err: BaseException) -> int:
    """The documented exit status for a handled error (see the module docstring)."""
    err = project_cause(err)
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code
    return EXIT_USAGE if isinstance(err, CONFIG_ERRORS) else EXIT_FAILURE


def instantiation_line(err: InstantiationException) -> str:
    """``config: <the constructor's error> (check the <node>.* settings)``, from Hydra's lines."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    node = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), ""
    )
    reason = " ".join(line for line in lines if not line.startswith("full_key:"))
    return f"config: {reason} (check the {node}.* settings)" if node else f"config: {reason}"


def one_line(err: BaseException) -> str:
    """The error as one line: its message with line breaks folded."""
    err = project_cause(err)
    if isinstance(err, InstantiationException):
        return instantiation_line(err)
    if isinstance(err, OmegaConfBaseException) and not isinstance(err, LfbmError):
        key, msg = getattr(err, "full_key", None), getattr(err, "msg", None) or str(err)
        text = " ".join((str(msg).splitlines() or [""])[0].split())
        return f"config: {text} (set {key}=... on the command line)" if key else f"config: {text}"
    return " ".join(str(err).split()) or type(err).__name__


class JobFailed(CompactHydraException):
    """A job of a sweep failed with a handled error: Hydra prints a compact error as its
    message alone. ``exit_code`` travels with it (also pickled back from a joblib worker, which
    re-runs ``__init__``), and the latest one is kept for :func:`sweep_exit_code`."""

    latest_exit_code: int | None = None

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line, exit_code)
        self.line, self.exit_code = line, exit_code
        JobFailed.latest_exit_code = exit_code

    def __str__(self) -> str:
        return self.line


def sweep_exit_code(hydra_code: Any) -> Any:
    """The exit status of a sweep: a failed job's own status in place of Hydra's 1."""
    return (
        JobFailed.latest_exit_code
        if hydra_code == 1 and JobFailed.latest_exit_code
        else hydra_code
    )


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def fail(err: BaseException) -> NoReturn:
    """Print ``error: <the error in one line>`` on stderr and exit with its status."""
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    sys.exit(exit_code(err))


def report_errors(job: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a Hydra task function: project and config errors become one line on stderr and
    an exit status instead of a traceback (see the module docstring)."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return job(*args, **kwargs)
        except (LfbmError, OmegaConfBaseException, InstantiationException) as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if _in_multirun():
                hydra_cfg = HydraConfig.get()
                where = f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)})"
                # from None: Hydra would print an OmegaConf cause after the line
                raise JobFailed(f"error: {where}: {one_line(err)}", exit_code(err)) from None
            fail(err)

    return wrapper
