"""Anomaly detection on a held-out-digit test split: AUPRC of -log p(x, z) (protocols.md).

For each test image x, z is fitted by ``n_steps`` noise-free Langevin steps from N(0, I) and
the score is

    s(x) = ||x - g(z)||^2 / (2 sigma^2) - log p(z) = -log p(x, z) + const,

higher = more anomalous. The anomaly (label 1, the held-out digit) is the positive class:
AUPRC is the trapezoid under scikit-learn's precision-recall curve, as published, reported
beside the average precision and the chance level (the anomaly fraction).

Config node ``anomaly``: ``split``, ``n_examples``, ``n_steps``, ``step_size``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig
from sklearn.metrics import precision_recall_curve

from lfbm_lightning.data.base import ImageDataModule
from lfbm_lightning.metrics.anomaly import anomaly_report
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.models.energy import reconstruction_energy
from lfbm_lightning.tasks.common import (
    all_rows,
    chain_settings,
    device_batches,
    example_loader,
    is_writer,
    rank_share,
    reconstruct,
    split_examples,
    start_latents,
    write_csv,
)


def check_holdout(datamodule: ImageDataModule) -> int:
    """The held-out digit of the data module; a clear error when there is none."""
    digit = getattr(datamodule, "holdout_digit", None)
    if digit is None:
        raise ValueError(
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


def run(
    model: LatentPriorModel, datamodule: ImageDataModule, cfg: DictConfig, out_dir: Path
) -> dict[str, Any]:
    """Score every selected test image (each rank its share); write ``per_example.csv`` and
    ``pr_curve.png``.

    Returns:
        ``holdout_digit``, ``split``, ``n_steps``, ``step_size`` and the
        :func:`~lfbm_lightning.metrics.anomaly.anomaly_report` (``auprc``,
        ``average_precision``, ``chance_level``, ``n``, ``n_anomalies``, ``n_normal``).
    """
    settings = cfg.anomaly
    digit = check_holdout(datamodule)
    dataset = split_examples(datamodule, settings.split, settings.n_examples, cfg.seed)
    n_steps, step_size = chain_settings(model, settings.n_steps, settings.step_size)
    rows: list[dict[str, Any]] = []
    loader = example_loader(datamodule, rank_share(dataset), cfg)
    for batch in device_batches(loader, model.device, "anomaly scores", cfg.progress):
        x = batch["image"]
        z0 = start_latents(model, batch["index"], cfg.seed)
        x_hat, z = reconstruct(model, x, n_steps, step_size, z0=z0)
        with torch.no_grad():
            energy = reconstruction_energy(x, x_hat, model.sigma).tolist()
            log_prior = model.prior.log_prob(z).tolist()
        for i, index in enumerate(batch["index"].tolist()):
            rows.append(
                {
                    "index": index,
                    "label": int(batch["label"][i]),
                    "score": energy[i] - log_prior[i],
                    "reconstruction_energy": energy[i],
                    "log_prior": log_prior[i],
                }
            )
    rows = all_rows(rows)
    scores = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
    labels = torch.tensor([r["label"] for r in rows])
    report = anomaly_report(scores, labels)
    if is_writer():
        write_csv(rows, out_dir / "per_example.csv")
        plot_pr_curve(scores, labels, report, digit, out_dir / "pr_curve.png")
    return {
        "holdout_digit": digit,
        "split": settings.split,
        "n_steps": n_steps,
        "step_size": step_size,
        **report,
    }
