"""The jobs of a Hydra sweep as read from disk: output directory, settings, metrics.

A job's settings (its overrides, config-group choices and resolved config) come from the
``settings`` record that its training run wrote into ``metrics.json`` beside its numbers, so a
later command into the job's directory cannot change what its numbers are filed under. A job
without that record (it ended before writing ``metrics.json``, so it has no numbers, or it ran
before the record existed) falls back to Hydra's ``.hydra/`` files. A job's periodic held-out
AUPRC (``csv/metrics.csv``) joins its numbers under each checkpoint rule
(:mod:`~lfbm_lightning.reporting.checkpoint_rules`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfbm_lightning.reporting.checkpoint_rules import run_rules

RUN_RECORD = "metrics.json"
"""The file a training run writes its numbers, status and ``settings`` into."""

SETTINGS_KEY = "settings"
"""``metrics.json``'s record of the job's settings: ``overrides`` (list, as typed),
``choices`` (config group -> option) and ``config`` (the resolved run config)."""


@dataclass
class Job:
    """One job of a sweep.

    Attributes:
        path: the job's output directory.
        overrides: its command-line overrides, key -> value as typed (``prior`` -> ``flow``).
        metrics: its numeric metrics, or None when it wrote no metrics file.
        choices: its config-group choices (``prior`` -> ``flow``).
        config: its resolved run config.
    """

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None
    choices: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def parse_override(override: str) -> tuple[str, str]:
    """``'+a.b=1'`` -> ``('a.b', '1')``; a deletion ``'~a'`` -> ``('a', '~')``."""
    key, _, value = override.partition("=")
    if key.startswith("~"):
        return key[1:], "~"
    return key.lstrip("+"), value


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def job_settings(job_dir: Path) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """(overrides, choices, config) of the job in ``job_dir`` (module docstring)."""
    settings = (_read_json(job_dir / RUN_RECORD) or {}).get(SETTINGS_KEY)
    if isinstance(settings, dict):
        return settings["overrides"], settings["choices"], settings["config"]
    hydra_dir = job_dir / ".hydra"
    hydra_cfg = (_read_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {})
    choices = hydra_cfg.get("runtime", {}).get("choices", {})
    overrides = _read_yaml(hydra_dir / "overrides.yaml") or []
    return overrides, choices, _read_yaml(hydra_dir / "config.yaml") or {}


def job_dirs(sweep_dir: Path) -> set[Path]:
    """The directories under ``sweep_dir`` holding a job: a training record with settings in
    its ``metrics.json``, or Hydra's ``.hydra/overrides.yaml``."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    for record in sweep_dir.rglob(RUN_RECORD):
        if SETTINGS_KEY in (_read_json(record) or {}):
            found.add(record.parent)
    return found


def read_jobs(sweep_dir: str | Path, metrics_file: str = RUN_RECORD) -> list[Job]:
    """Every job under ``sweep_dir``, in job-number order (natural sort of the paths), its
    numbers from ``metrics_file`` (numeric top-level values) and, for a job with numbers, its
    ``test/auprc`` under each checkpoint rule (``test/auprc@<rule>``)."""
    jobs = []
    for job_dir in job_dirs(Path(sweep_dir)):
        overrides, choices, config = job_settings(job_dir)
        raw = _read_json(job_dir / metrics_file)
        metrics = None
        if raw is not None:
            metrics = {
                k: float(v)
                for k, v in raw.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            metrics |= run_rules(job_dir)
        parsed = dict(parse_override(o) for o in overrides)
        jobs.append(Job(job_dir, parsed, metrics, dict(choices or {}), dict(config or {})))
    return sorted(jobs, key=lambda job: _natural_key(job.path))
