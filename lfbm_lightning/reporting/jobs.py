"""The jobs of a Hydra sweep as read from disk: output directory, overrides, metrics."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class Job:
    """One job of a sweep.

    Attributes:
        path: the job's output directory.
        overrides: its command-line overrides, key -> value as typed (``prior`` -> ``flow``).
        metrics: its numeric metrics, or None when it wrote no metrics file.
    """

    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def parse_override(override: str) -> tuple[str, str]:
    """``'+a.b=1'`` -> ``('a.b', '1')``; a deletion ``'~a'`` -> ``('a', '~')``."""
    key, _, value = override.partition("=")
    if key.startswith("~"):
        return key[1:], "~"
    return key.lstrip("+"), value


def read_jobs(sweep_dir: str | Path, metrics_file: str = "metrics.json") -> list[Job]:
    """Every job under ``sweep_dir``, in job-number order (natural sort of the paths)."""
    jobs = []
    for overrides_file in Path(sweep_dir).rglob(".hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = dict(parse_override(o) for o in yaml.safe_load(overrides_file.read_text()))
        metrics_path = job_dir / metrics_file
        metrics = None
        if metrics_path.is_file():
            raw = json.loads(metrics_path.read_text())
            metrics = {
                k: float(v)
                for k, v in raw.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        jobs.append(Job(job_dir, overrides, metrics))
    return sorted(jobs, key=lambda job: _natural_key(job.path))
