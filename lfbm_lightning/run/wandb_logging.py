"""Weights & Biases logging that never blocks or crashes a run (``logger=wandb``).

:func:`wandb_logger` builds Lightning's ``WandbLogger``: online only with an API key and a
reachable server, decided once on rank 0 (:func:`resolve_mode`), else offline (``wandb sync``
uploads later) with one warning, so no prompt waits on stdin; a short ``init_timeout`` and an
offline retry; in a Hydra multirun the sweep directory is the W&B group and the job's overrides
the run name; ``wandb.finish()`` at the end of fit, so each job of a sweep gets its own run.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
MODES = ("online", "offline", "disabled")
OFFLINE_HINT = "logging offline; upload later with `wandb sync <run dir>/wandb/offline-run-*`"
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def has_api_key(environ: Mapping[str, str], base_url: str) -> bool:
    """Whether wandb would find credentials without prompting: ``WANDB_API_KEY``,
    ``WANDB_IDENTITY_TOKEN_FILE`` or a netrc entry (``$NETRC``, ``~/.netrc``, ``~/_netrc``)
    with a password for the server's host."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    home = Path(environ.get("HOME", "~")).expanduser()
    if environ.get("NETRC"):
        candidates = [Path(environ["NETRC"]).expanduser()]
    else:
        candidates = [home / ".netrc", home / "_netrc"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            entry = netrc.netrc(str(path)).authenticators(urlsplit(base_url).netloc)
        except (OSError, netrc.NetrcParseError):
            return False
        return bool(entry and entry[2])
    return False


@cache
def reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to host:port opens within ``timeout`` seconds (name lookup
    included; the answer is cached for the process)."""
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def requested_mode(requested: str | None, environ: Mapping[str, str]) -> str:
    """The mode asked for: ``requested``, else ``WANDB_MODE``, else online (dryrun = offline).

    Raises:
        ValueError: for a mode wandb does not know.
    """
    mode = requested or environ.get("WANDB_MODE") or "online"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode must be one of {MODES} or null, got {mode!r}")
    return mode


def resolve_mode(
    requested: str | None, environ: Mapping[str, str], timeout: float = 3.0
) -> tuple[str, str | None]:
    """The W&B mode to use, and why it is offline when online was asked for.

    Args:
        requested: ``online``, ``offline``, ``disabled`` or None (see :func:`requested_mode`).
        environ: the process environment (``WANDB_MODE``, ``WANDB_BASE_URL``, credentials).
        timeout: seconds to wait for the server when checking that it is reachable.

    Returns:
        (mode, reason): reason is None unless online was wanted but cannot work.
    """
    mode = requested_mode(requested, environ)
    if mode != "online":
        return mode, None
    base_url = environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    if not has_api_key(environ, base_url):
        return "offline", "no W&B API key found (WANDB_API_KEY or a ~/.netrc entry)"
    url = urlsplit(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    if not reachable(url.hostname or "", port, timeout):
        return "offline", f"the W&B server {base_url} cannot be reached"
    return "online", None


class FallbackWandbLogger(WandbLogger):
    """A ``WandbLogger`` that decides online or offline (:func:`resolve_mode`) when its run
    starts, on rank 0 only, goes offline if ``wandb.init`` still fails online, and finishes its
    run when fit ends (a sweep's next job in the same process must not reuse it).

    Args:
        mode: ``online``, ``offline``, ``disabled`` or None (``WANDB_MODE``, else online).
        **kwargs: see ``pytorch_lightning.loggers.WandbLogger``.
    """

    def __init__(self, mode: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        requested_mode(mode, os.environ)  # fail on a bad value now, not when the run starts
        self._requested_mode = mode
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb, where it only warns

    @property
    def experiment(self) -> Any:
        if (
            self._experiment is None
            and rank_zero_only.rank == 0
            and "mode" not in self._wandb_init
        ):
            mode, reason = resolve_mode(self._requested_mode, os.environ)
            if reason is not None:
                _warn_once(f"W&B: {reason}; {OFFLINE_HINT}")
            self._wandb_init["mode"] = mode
        try:
            return super().experiment
        except Exception as err:  # wandb raises many types here (network, auth, timeouts)
            if self._wandb_init.get("mode") != "online":
                raise
            _warn_once(f"W&B could not start online ({type(err).__name__}: {err}); {OFFLINE_HINT}")
            self._wandb_init["mode"] = "offline"
            return super().experiment

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if status == "success" else 1)


def _sweep_group_and_name() -> tuple[str | None, str | None]:
    """(sweep directory, 'job number: overrides') in a Hydra multirun, else (None, None)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None, None
    hydra_cfg = HydraConfig.get()
    name = f"{hydra_cfg.job.num}: {hydra_cfg.job.override_dirname}"
    return str(hydra_cfg.sweep.dir)[-128:], name[:128]


def wandb_logger(
    save_dir: str,
    project: str = "lfbm",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str | None = None,
    log_model: bool | str = False,
    init_timeout: float = 30.0,
) -> FallbackWandbLogger:
    """A W&B logger for one run (``conf/logger/wandb.yaml``); see the module docstring.

    Args:
        save_dir: directory of the ``wandb/`` run files (the run's output directory).
        project: W&B project.
        entity: W&B user or team (None: the key's default entity).
        name: run name (None: the job's overrides in a sweep, else W&B's random name).
        group: run group (None: the sweep directory in a multirun, else no group).
        tags: run tags.
        mode: ``online``, ``offline``, ``disabled`` or None (``WANDB_MODE``, else online),
            online falling back to offline as :func:`resolve_mode` decides.
        log_model: upload checkpoints as artifacts: True at the end of fit, ``"all"`` at
            every save (offline runs keep them for ``wandb sync``).
        init_timeout: seconds ``wandb.init`` may wait for the server.
    """
    import wandb

    sweep_group, sweep_name = _sweep_group_and_name()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return FallbackWandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        name=name or sweep_name,
        group=group or sweep_group,
        tags=list(tags or []),
        mode=mode,
        log_model=log_model,
        job_type="train",
        settings=wandb.Settings(init_timeout=init_timeout),
    )
