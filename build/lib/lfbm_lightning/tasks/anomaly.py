"""Anomaly detection on a held-out-digit test split: AUPRC of -log p(x, z) (docs/paper.md).

For each test image x, z is fitted by ``n_steps`` noise-free Langevin steps from N(0, I) and
the score is

    s(x) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) = -log p(x, z) + const,

higher = more anomalous. The anomaly (label 1, the held-out digit) is the positive class:
AUPRC is the trapezoid under scikit-learn's precision-recall curve, as published, reported
beside the average precision and the chance level (the anomaly fraction).

Options (``conf/task/anomaly.yaml``, node ``anomaly``): ``split``, ``n_examples``, ``n_steps``,
``step_size``; e.g. ``evaluate.py task=anomaly anomaly.n_steps=100``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.metrics.anomaly import anomaly_report
from lfbm_lightning.models.energy import reconstruction_energy
from lfbm_lightning.tasks.base import ExampleTask
from lfbm_lightning.tasks.common import chain_settings, reconstruct, start_latents


def check_holdout(datamodule: ImageDataModule) -> int:
    """The held-out digit of the data module; a clear error when there is none."""
    digit = getattr(datamodule, "holdout_digit", None)
    if digit is None:
        raise ConfigError(
            f"task=anomaly needs a checkpoint trained with a held-out digit (digits or mnist "
            f"with dataset.holdout_digit=0..9, whose test split labels the held-out digit 1 = "
            f"anomaly); this checkpoint's data module {type(datamodule).__name__} has none"
        )
    return int(digit)


def plot_pr_curve(
    scores: torch.Tensor, labels: torch.Tensor, report: dict[str, Any], digit: int, path: Path
) -> Path:
    """Precision against recall, with the chance level, as a PNG (Agg canvas, no display)."""
    precision, recall, _ = precision_recall_curve(labels.numpy(), scores.numpy(), pos_label=1)
    fig = Figure(figsize=(4.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(recall, precision, label=f"AUPRC {report['auprc']:.3f}")
    chance = report["chance_level"]
    ax.axhline(chance, color="grey", ls="--", label=f"chance {chance:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"anomaly = held-out digit {digit}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


class Anomaly(ExampleTask):
    """Score every selected test image (each rank its share); write ``per_example.csv`` and
    ``pr_curve.png``.

    Results: ``holdout_digit``, ``split``, ``n_steps``, ``step_size`` and the
    :func:`~lfbm_lightning.metrics.anomaly.anomaly_report` (``auprc``, ``average_precision``,
    ``chance_level``, ``n``, ``n_anomalies``, ``n_normal``).
    """

    files = ("per_example.csv", "pr_curve.png")

    def check(self) -> None:
        self.digit = check_holdout(self.datamodule)
        self.n_steps, self.step_size = chain_settings(
            self.model, self.settings.n_steps, self.settings.step_size
        )

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        x = batch["image"]
        z0 = start_latents(self.model, batch["index"], self.cfg.seed)
        x_hat, z = reconstruct(self.model, x, self.n_steps, self.step_size, z0=z0)
        with torch.no_grad():
            energy = reconstruction_energy(x, x_hat, self.model.sigma).tolist()
            log_prior = self.model.prior.log_prob(z).tolist()
        return [
            {
                "index": index,
                "label": int(batch["label"][i]),
                "score": energy[i] - log_prior[i],
                "reconstruction_energy": energy[i],
                "log_prior": log_prior[i],
            }
            for i, index in enumerate(batch["index"].tolist())
        ]

    def scores_and_labels(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N,) float64 and labels (N,) of the rows."""
        scores = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
        return scores, torch.tensor([r["label"] for r in rows])

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "holdout_digit": self.digit,
            "split": self.split,
            "n_steps": self.n_steps,
            "step_size": self.step_size,
            **anomaly_report(*self.scores_and_labels(rows)),
        }

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        scores, labels = self.scores_and_labels(rows)
        plot_pr_curve(scores, labels, results, self.digit, self.out_dir / "pr_curve.png")
