"""Checks of a command line before Hydra starts its job, for the errors Hydra would otherwise
report itself (several lines, exit 1): the overrides compose (no unknown key ``nosuch=1``, no
unknown option ``dataset=nosuch``, no malformed override), and the run directory can be
created and written. A failure is a :class:`~lfbm_lightning.errors.ConfigError` naming the
override or directory. Under ``--multirun`` the first value of each swept override is composed
and the sweep directory checked; a sweep Hydra's parser cannot expand is left to Hydra.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lfbm_lightning import CONF_DIR
from lfbm_lightning.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")


def first_of_each_sweep(overrides: Sequence[str]) -> list[str] | None:
    """The overrides with each sweep (``a=1,2``, ``range(...)``) replaced by its first value;
    None when Hydra's parser cannot expand one (left for Hydra to report)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        out = []
        for override in parsed:
            if override.is_sweep_override():
                first = next(iter(override.sweep_string_iterator()))
                out.append(f"{override.get_key_element()}={first}")
            else:
                out.append(override.input_line)
    except (HydraException, StopIteration, TypeError, ValueError):
        return None
    return out


def hydra_message(err: BaseException) -> str:
    """Hydra's composition error in one line, without its config search path and OmegaConf's
    ``full_key`` / ``object_type`` lines."""
    text = str(err).split("Config search path:")[0]
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(("full_key:", "object_type="))]
    return " ".join(" ".join(kept).split()) or type(err).__name__


def check_writable_dir(path: Path, setting: str) -> None:
    """A :class:`ConfigError` naming ``setting`` unless the nearest existing one of ``path`` and
    its parents is a directory in which a (temporary, at once removed) file can be written:
    ``path`` itself is left for Hydra to create, under the name it resolves."""
    existing = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())
    if not existing.is_dir():
        raise ConfigError(f"{setting}={path}: {existing} is a file: choose a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(
            f"{setting}={path} cannot be written ({existing}: {err.strerror or err}): choose a "
            "directory you can write to"
        ) from err


def preflight(config_name: str, args: Sequence[str]) -> None:
    """Compose ``conf/<config_name>.yaml`` with the command line ``args`` and check its run
    (or sweep) directory; other command-line flags (``--cfg``, ``-cd``, ...) skip the checks.

    Raises:
        ConfigError: the overrides do not compose, or the directory is unusable.
    """
    multirun = any(a in MULTIRUN_FLAGS for a in args)
    overrides = [a for a in args if a not in MULTIRUN_FLAGS]
    if any(a.startswith("-") for a in overrides):
        return
    if multirun:
        overrides = first_of_each_sweep(overrides)
        if overrides is None:
            return
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        directory = Path(str(OmegaConf.select(cfg, key)))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(
            f"{hydra_message(err)} (python {config_name}.py --help lists the options)"
        ) from err
    check_writable_dir(directory, key)
