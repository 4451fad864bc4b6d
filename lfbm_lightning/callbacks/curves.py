"""Training curves: wall-clock time per epoch in the metrics, and ``curves.png`` at the end.

:class:`TrainingCurves` logs ``time/elapsed_s`` (seconds of training since the run first
started, resumed runs included) at the end of every training epoch, and when ``fit`` ends
draws ``curves.png`` from the CSV logger's ``metrics.csv``: the training losses, the posterior
energy and ``val/mse`` against the epoch, with the elapsed wall-clock time on a second axis.
The figure goes to every logger that takes images as well.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from pytorch_lightning.loggers import CSVLogger

from lfbm_lightning.callbacks.figures import log_figure

log = logging.getLogger(__name__)

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("train/loss_epoch", "train/loss_generator_epoch", "train/loss_prior_epoch")),
    ("posterior energy", ("train/posterior_energy_epoch",)),
    ("val/mse", ("val/mse",)),
)
"""(title, metric columns) of each panel; a panel whose metrics were never logged is left out."""

ELAPSED = "time/elapsed_s"


def read_epoch_metrics(path: str | Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of every metric column of a Lightning ``metrics.csv``.

    Each row holds the metrics logged at one (epoch, step); a metric's value for an epoch is
    the last one logged in it (epoch-level metrics are logged once per epoch).

    Returns:
        {metric: {epoch: value}}.
    """
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, {})[epoch] = float(value)
    return series


def csv_metrics_file(loggers: Sequence[Any]) -> Path | None:
    """The ``metrics.csv`` of the first CSV logger, flushed to disk; None without one."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            logger.save()
            path = Path(logger.experiment.metrics_file_path)
            return path if path.is_file() else None
    return None


def plot_curves(series: Mapping[str, Mapping[int, float]], path: str | Path) -> Path | None:
    """Draw the panels of :data:`PANELS` that have data against the epoch (1-based) as a PNG;
    with ``time/elapsed_s`` logged, a second x axis shows the elapsed minutes.

    Returns:
        The path written, or None when no panel has data.
    """
    panels = [(t, [k for k in keys if series.get(k)]) for t, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        return None
    figure = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    elapsed = series.get(ELAPSED, {})
    for i, (title, keys) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        for key in keys:
            epochs = sorted(series[key])
            values = [series[key][e] for e in epochs]
            label = key.removeprefix("train/").removesuffix("_epoch")
            axes.plot(np.array(epochs) + 1, values, marker="o", markersize=3, label=label)
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        if len(keys) > 1:
            axes.legend(fontsize=8)
        if len(elapsed) >= 2:
            _add_time_axis(axes, elapsed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _add_time_axis(axes: Any, elapsed: Mapping[int, float]) -> None:
    """A top x axis in minutes of training, interpolated from the per-epoch elapsed times."""
    epochs = np.array(sorted(elapsed), dtype=float) + 1
    minutes = np.array([elapsed[int(e) - 1] for e in epochs]) / 60
    secondary = axes.secondary_xaxis(
        "top",
        functions=(
            lambda e: np.interp(e, epochs, minutes),
            lambda m: np.interp(m, minutes, epochs),
        ),
    )
    secondary.set_xlabel("minutes", fontsize=8)


class TrainingCurves(pl.Callback):
    """Log ``time/elapsed_s`` every epoch; draw ``<output_dir>/curves.png`` when fit ends.

    Args:
        filename: the figure's name in the trainer's ``default_root_dir``.
    """

    def __init__(self, filename: str = "curves.png") -> None:
        self.filename = filename
        self._elapsed_before = 0.0  # seconds of training in earlier (resumed) runs
        self._started: float | None = None
        self.seconds = 0.0  # spent drawing curves.png in this process

    def elapsed(self) -> float:
        """Seconds of training so far, the runs this one resumed included."""
        running = 0.0 if self._started is None else time.monotonic() - self._started
        return self._elapsed_before + running

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log(ELAPSED, self.elapsed(), on_epoch=True, sync_dist=False, rank_zero_only=True)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._elapsed_before = float(state_dict.get("elapsed_s", 0.0))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        started = time.monotonic()
        self._draw(trainer)
        self.seconds += time.monotonic() - started

    def _draw(self, trainer: pl.Trainer) -> None:
        metrics_file = csv_metrics_file(trainer.loggers)
        if metrics_file is None:
            log.info("no CSV metrics (logger=csv): curves.png not drawn")
            return
        path = plot_curves(
            read_epoch_metrics(metrics_file), Path(trainer.default_root_dir) / self.filename
        )
        if path is not None:
            picture = np.asarray(Image.open(path).convert("RGB"))
            log_figure(trainer.loggers, "curves", picture, trainer.global_step)
