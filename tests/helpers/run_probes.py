"""Callbacks that record, inside a real run, what a test cannot see from outside; each writes
its record to ``out`` (JSON) at fit end.

On ``PYTHONPATH`` as the top-level module ``run_probes`` (as ``run_callbacks``, see
``tests/helpers/train_runs.py``): :class:`EnergyPrecisionProbe` (the precision inside E(z)),
:class:`DevicePlacement` (where parameters and batches are) and :class:`CompileCounters`
(torch.compile's graphs and CUDA-graph skips).
"""

from __future__ import annotations

import json

import pytorch_lightning as pl
import torch

import lfbm_lightning.models.energy as energy_module
from lfbm_lightning.inference.posterior import PosteriorInference
from lfbm_lightning.models.latent_prior_model import validation_fit


class EnergyPrecisionProbe(pl.Callback):
    """Wraps ``lfbm_lightning.models.energy.reconstruction_energy``, which every chain's and
    fit's E(z) calls (the training loss imports its own binding), and records
    ``{"stage", "kind", "autocast", "dtype", "bf16_exact"}`` per call of E: the trainer's
    stage (``train``, ``validate``, ``sanity_check``; ``check`` for the probe's own
    reconstruction), ``fit`` inside an evaluation fit (``PosteriorInference.fit``) else
    ``chain``, whether autocast is on around the residual, g(z)'s dtype, and whether every
    value of g(z) is a bfloat16 number (g ran in bf16); also the run's ``val/mse`` beside the
    same batch's reconstruction MSE recomputed (with val/mse's fit) outside any autocast."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.calls: list[dict] = []
        self.val_mse_float32: list[float] = []
        self.checking = False
        self.fitting = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        original = energy_module.reconstruction_energy
        original_fit = PosteriorInference.fit

        def probed(x, x_hat, sigma, mask=None):
            self.calls.append(
                {
                    "stage": "check" if self.checking else trainer.state.stage.value,
                    "kind": "fit" if self.fitting else "chain",
                    "autocast": torch.is_autocast_enabled(x_hat.device.type),
                    "dtype": str(x_hat.dtype).removeprefix("torch."),
                    "bf16_exact": bool((x_hat == x_hat.bfloat16().to(x_hat.dtype)).all()),
                }
            )
            return original(x, x_hat, sigma, mask)

        def fit(*args, **kwargs):
            self.fitting = True
            try:
                return original_fit(*args, **kwargs)
            finally:
                self.fitting = False

        energy_module.reconstruction_energy = probed
        PosteriorInference.fit = fit

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        if trainer.sanity_checking:
            return
        self.checking = True
        validation = pl_module.config["model"].get("validation")
        fit, steps = validation_fit(validation, pl_module.eval_chain_steps)  # val/mse's fit
        with torch.autocast(pl_module.device.type, enabled=False):
            x_hat, _ = pl_module.reconstruct(
                batch["image"], batch.get("mask"), steps, index=batch["index"], fit=fit
            )
        self.checking = False
        mse = (batch["image"] - x_hat).pow(2).flatten(1).mean(1)  # as validation_step
        self.val_mse_float32.append(float(mse.mean()))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {
            "calls": self.calls,
            "val_mse_logged": float(trainer.callback_metrics["val/mse"]),
            "val_mse_float32": self.val_mse_float32,
        }
        _write(self.out, record)


def _write(path: str, record: dict) -> None:
    with open(path, "w") as f:
        json.dump(record, f)


class DevicePlacement(pl.Callback):
    """Records the device types of the model's parameters and buffers and of the batch at
    every training batch: ``{"parameters": [...], "batches": [...]}`` (sorted sets)."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.parameters: set[str] = set()
        self.batches: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tensors = [*pl_module.parameters(), *pl_module.buffers()]
        self.parameters |= {t.device.type for t in tensors}
        self.batches |= {t.device.type for t in batch.values() if torch.is_tensor(t)}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {"parameters": sorted(self.parameters), "batches": sorted(self.batches)}
        _write(self.out, record)


class CompileCounters(pl.Callback):
    """Records ``torch._dynamo.utils.counters`` at fit end: ``unique_graphs`` (graphs Dynamo
    compiled: the first compile plus every recompilation), ``cudagraph_skips`` (compiled
    graphs that ran without CUDA graphs) and the full counters.

    ``backend`` (e.g. ``eager``) replaces the compiler behind every ``torch.compile`` of the
    run: Dynamo captures, guards and recompiles as it would, without inductor's code
    generation (a quick dry run on a CPU)."""

    def __init__(self, out: str, backend: str | None = None) -> None:
        self.out = out
        self.backend = backend

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.backend is None:
            return
        original, backend = torch.compile, self.backend

        def compile_with_backend(fn, **options):
            return original(fn, **{**options, "mode": None, "backend": backend})

        torch.compile = compile_with_backend

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from torch._dynamo.utils import counters

        every = {group: dict(values) for group, values in counters.items()}
        record = {
            "unique_graphs": every.get("stats", {}).get("unique_graphs", 0),
            "cudagraph_skips": every.get("inductor", {}).get("cudagraph_skips", 0),
            "counters": every,
        }
        _write(self.out, record)
