"""Callbacks for the DDP tests: each rank writes what it trained on and what it holds
(:class:`RankProbe`), or the collectives it made (:class:`CollectiveLog`); and one process of
the two-process ``evaluate_after_fit`` test (:func:`after_fit_worker`).

Added on the command line (``+callbacks.probe._target_=ddp_probe.RankProbe``) with
``tests/helpers`` on ``PYTHONPATH``, so that the rank processes Lightning starts import it too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from lfbm_lightning.run import after_fit


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

        def recording_sample(n, rng=None, *start):
            z = sample(n, rng, *start)
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


COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "barrier",
    "reduce",
    "gather",
    "gather_object",
    "scatter",
    "reduce_scatter",
)


def describe(name: str, args: tuple) -> list[Any]:
    """A collective's tensor arguments as JSON: their shapes and dtypes (a list's items'), none
    for the ``*_object*`` collectives (their objects may differ by rank)."""

    def one(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [one(item) for item in value]
        return [list(value.shape), str(value.dtype)]

    if "object" in name:
        return []
    return [one(a) for a in args if isinstance(a, torch.Tensor | list | tuple)]


class CollectiveLog(pl.Callback):
    """Writes ``<out_dir>/collectives-rank<r>.json``: every ``torch.distributed`` collective
    this rank called between ``setup`` and ``teardown`` (Lightning's metric reductions,
    broadcasts and barriers, the project's gathers), in order, each as its name and its
    tensors' shapes and dtypes (:func:`describe`). DDP's gradient all-reduces run in C++ and
    are not seen."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.calls: list[list[Any]] = []
        self.originals: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name in COLLECTIVES:
            self.originals[name] = original = getattr(dist, name)
            setattr(dist, name, self.recording(name, original))

    def recording(self, name: str, original: Any) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append([name, describe(name, args)])
            return original(*args, **kwargs)

        return record

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for name, original in self.originals.items():
            setattr(dist, name, original)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"collectives-rank{trainer.global_rank}.json"
        out.write_text(json.dumps(self.calls))


def rank_dependent_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Stands in for ``evaluation.evaluate``: ``anomaly`` raises on rank 1 only (a failure of
    one rank); ``reconstruction`` returns numbers that differ by rank, and whether it got the
    job's device."""
    rank = dist.get_rank()
    if cfg.task.name == "anomaly" and rank == 1:
        raise RuntimeError("out of memory on rank 1")
    on_device = float(cfg.device == "cpu")  # the job's device, not evaluate's default (auto)
    return {"task": cfg.task.name, "processes": 2, "mse": 0.5 + rank, "on_device": on_device}


def after_fit_worker(rank: int, world_size: int, out_dir: str) -> None:
    """Run ``evaluate_after_fit=[anomaly, reconstruction]`` in a gloo group of ``world_size``
    with :func:`rank_dependent_evaluate`; save what this rank got as ``added<rank>.json``."""
    out = Path(out_dir)
    dist.init_process_group(
        "gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=world_size
    )
    after_fit.evaluate = rank_dependent_evaluate
    cfg = OmegaConf.create({"evaluate_after_fit": ["anomaly", "reconstruction"]})
    added = after_fit.evaluate_after_fit(cfg, out, out / "checkpoints", torch.device("cpu"))
    (out / f"added{rank}.json").write_text(json.dumps(added))
    dist.destroy_process_group()
