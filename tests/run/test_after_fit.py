"""Where ``evaluate_after_fit`` runs its tasks: on the job's training device, in one process as
in a DDP job, whatever ``device`` the evaluate overrides name (with a warning saying which
runs)."""

from __future__ import annotations

import logging

import torch
from omegaconf import OmegaConf

from lfbm_lightning.run import after_fit


def test_one_process_evaluates_on_the_training_device_and_says_so(tmp_path, monkeypatch, caplog):
    """A paper config's ``device=cuda`` (or ``cpu``) in ``evaluate_overrides`` would otherwise
    be used by a one-process job but replaced by each rank's device in a DDP job."""
    used: list[str] = []

    def record_device(cfg):
        used.append(cfg.device)
        return {"task": cfg.task.name, "device": cfg.device, "mse": 0.5}

    monkeypatch.setattr(after_fit, "evaluate", record_device)
    cfg = OmegaConf.create(
        {"evaluate_after_fit": ["reconstruction"], "evaluate_overrides": ["device=cuda"]}
    )
    with caplog.at_level(logging.WARNING, logger="lfbm_lightning"):
        added = after_fit.evaluate_after_fit(
            cfg, tmp_path, tmp_path / "checkpoints", torch.device("cpu")
        )
    assert used == ["cpu"]
    assert added["evaluation"] == {"reconstruction": "completed"}
    assert [r.getMessage() for r in caplog.records] == [
        "evaluate_after_fit: task reconstruction runs on the job's training device cpu, not on "
        "evaluate_overrides' device=cuda"
    ]
