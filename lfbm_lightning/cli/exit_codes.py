"""The error handling shared by ``train.py`` and ``evaluate.py``.

A user-fixable error (:class:`~lfbm_lightning.errors.LfbmError`, or an OmegaConf error such as
a missing ``???`` value met while the job runs) is printed as ONE line on stderr,
``error: <message>``, and the process exits with:

- ``2``: a config or usage error (:class:`~lfbm_lightning.errors.ConfigError`, OmegaConf
  errors),
- ``1``: any other project error (checkpoint, data, divergence, ...),
- the error's own ``exit_code`` when it has one (``143`` for a run stopped by SIGTERM,
  ``130`` by SIGINT: :class:`~lfbm_lightning.run.training.RunInterrupted`).

``HYDRA_FULL_ERROR=1`` re-raises instead, with the full traceback. Anything else is a bug and
keeps its traceback. In a ``--multirun`` the error is re-raised too, so that Hydra's launcher
reports it per job. Errors Hydra meets while composing the config (an unknown key, a bad
override) never reach the job: Hydra prints its own message (no traceback) and exits 1.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from lfbm_lightning.errors import ConfigError, LfbmError

EXIT_FAILURE = 1
EXIT_USAGE = 2


def exit_code(err: BaseException) -> int:
    """The documented exit status for a handled error (see the module docstring)."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code
    return EXIT_USAGE if isinstance(err, ConfigError | OmegaConfBaseException) else EXIT_FAILURE


def one_line(err: BaseException) -> str:
    """The error as one line: its message with line breaks folded."""
    if isinstance(err, OmegaConfBaseException) and not isinstance(err, LfbmError):
        key, msg = getattr(err, "full_key", None), getattr(err, "msg", None) or str(err)
        text = " ".join((str(msg).splitlines() or [""])[0].split())
        return f"config: {text} (set {key}=... on the command line)" if key else f"config: {text}"
    return " ".join(str(err).split()) or type(err).__name__


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def report_errors(job: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a Hydra task function: project and config errors become one line on stderr and
    an exit status instead of a traceback (see the module docstring)."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return job(*args, **kwargs)
        except (LfbmError, OmegaConfBaseException) as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(exit_code(err))

    return wrapper
