"""The few lines a person reads at the end of a training run (``metrics.json`` keeps the rest).

Example::

    Run completed in 4 min 52 s (100 epochs).
      time: training 4 min 31 s (93%), validation 9 s (3%), figures 3 s (1%), evaluation 0 s
      (0%), other 9 s (3%)
      val/mse: final 0.0412 (epoch 100), best 0.0409 (epoch 95)
      checkpoint  outputs/runs/.../checkpoints/last.ckpt
      samples     outputs/runs/.../samples.png
      curves      outputs/runs/.../curves.png
      metrics     outputs/runs/.../metrics.json (all numbers), csv/metrics.csv (per epoch)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

MONITORED = "val/mse"
PHASES = ("training", "validation", "figures", "evaluation")
"""The parts of the wall-clock the summary names; the rest is "other" (checkpoints, setup)."""


def format_duration(seconds: float) -> str:
    """``42 s``, ``4 min 52 s`` or ``3 h 05 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def time_split(wall_seconds: float, phases: Mapping[str, float]) -> str:
    """``training 4 min 31 s (93%), ..., other 9 s (3%)``: each of :data:`PHASES` and the rest
    of ``wall_seconds``, with its share of it."""
    parts = [(name, float(phases.get(name, 0.0))) for name in PHASES]
    parts.append(("other", max(wall_seconds - sum(s for _, s in parts), 0.0)))
    total = max(wall_seconds, 1e-9)
    return ", ".join(f"{n} {format_duration(s)} ({100 * s / total:.0f}%)" for n, s in parts)


def run_summary(
    out_dir: Path,
    status: str,
    wall_seconds: float,
    epochs: int,
    per_epoch: Mapping[str, Mapping[int, float]],
    checkpoint: Path,
    phases: Mapping[str, float] | None = None,
) -> str:
    """The end-of-run summary (module docstring).

    Args:
        out_dir: the run directory.
        status: how the run ended (``completed``, ``interrupted``, ...).
        wall_seconds: this process's time in ``fit``.
        epochs: epochs completed.
        per_epoch: {metric: {0-based epoch: value}} (from ``csv/metrics.csv``).
        checkpoint: the path of ``last.ckpt``.
        phases: seconds of each of :data:`PHASES` within ``wall_seconds`` (None: no line).
    """
    unit = "epoch" if epochs == 1 else "epochs"
    lines = [f"Run {status} in {format_duration(wall_seconds)} ({epochs} {unit})."]
    if phases is not None:
        lines.append(f"  time: {time_split(wall_seconds, phases)}")
    monitored = per_epoch.get(MONITORED, {})
    if monitored:
        last = max(monitored)
        best = min(monitored, key=monitored.get)
        lines.append(
            f"  {MONITORED}: final {monitored[last]:.4g} (epoch {last + 1}), "
            f"best {monitored[best]:.4g} (epoch {best + 1})"
        )
    files = [
        ("checkpoint", checkpoint),
        ("samples", out_dir / "samples.png"),
        ("reconstructions", out_dir / "reconstructions.png"),
        ("curves", out_dir / "curves.png"),
    ]
    lines += [f"  {name:<16}{path}" for name, path in files if path.is_file()]
    lines.append(f"  {'metrics':<16}{out_dir / 'metrics.json'} (all numbers), csv/metrics.csv")
    return "\n".join(lines)
