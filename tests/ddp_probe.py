"""A callback for the DDP tests: each rank writes what it trained on and what it holds.

Added on the command line (``+callbacks.probe._target_=ddp_probe.RankProbe``) with ``tests/``
on ``PYTHONPATH``, so that the rank processes Lightning starts import it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``module`` as one float64 vector."""
    return torch.cat([p.detach().double().flatten().cpu() for p in module.parameters()])


class RankProbe(pl.Callback):
    """Writes ``<out_dir>/<job dir name>-rank<r>.json`` and ``.pt`` at the end of training.

    The JSON holds the rank, world size, job directory, prior class, Langevin and prior-sampler
    seeds, the local loss and example indices of every step, and the callback metrics; the
    ``.pt`` file the parameters at the start and at the end, and every batch of prior samples
    the prior drew in training (an EBM's loss draws them; other priors draw none).
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.losses: list[float] = []
        self.indices: list[list[int]] = []
        self.start: torch.Tensor | None = None
        self.prior_samples: list[torch.Tensor] = []
        self.in_step = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.in_step = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = flat_parameters(pl_module)
        sample = pl_module.prior.sample

        def recording_sample(n, rng=None):
            z = sample(n, rng)
            if self.in_step:  # not the image callback's samples
                self.prior_samples.append(z.detach().cpu().clone())
            return z

        pl_module.prior.sample = recording_sample

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch, batch_idx
    ) -> None:
        self.in_step = False
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.indices.append(batch["index"].tolist())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{Path(trainer.default_root_dir).name}-rank{trainer.global_rank}"
        report = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "root_dir": str(trainer.default_root_dir),
            "prior": type(pl_module.prior).__name__,
            "langevin_seed": pl_module.langevin_rng().initial_seed(),
            "prior_seed": pl_module.prior_rng().initial_seed(),
            "losses": self.losses,
            "indices": self.indices,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        (self.out_dir / f"{tag}.json").write_text(json.dumps(report))
        torch.save(
            {
                "start": self.start,
                "end": flat_parameters(pl_module),
                "prior_samples": self.prior_samples,
            },
            self.out_dir / f"{tag}.pt",
        )
