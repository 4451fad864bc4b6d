"""An EBM-prior run killed with SIGKILL resumes from last.ckpt and ends exactly where an
uninterrupted run ends: the prior sampler's own noise stream is checkpointed too."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_entry_point
from tests.run.test_resume import final_state, kill_at_first_checkpoint

RUN = [
    "prior=ebm",
    "prior.n_steps=5",  # prior chains of 5 noisy steps (60 by default) draw from its stream
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=4",
    "trainer.check_val_every_n_epoch=2",
    "trainer.limit_val_batches=1",
    "inference.n_steps=5",
    "inference.eval_steps=5",
    "callbacks.image_grids.every_n_epochs=1",  # pictures every epoch must not perturb training
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.mark.slow
def test_killed_ebm_run_resumes_bit_identically(tmp_path):
    straight = tmp_path / "straight"
    result = run_entry_point("train.py", [f"hydra.run.dir={straight}", *RUN])
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    killed_at = kill_at_first_checkpoint(killed, RUN)
    assert 0 <= killed_at < 2, f"the run was not killed mid-training (last epoch {killed_at})"

    result = run_entry_point("train.py", [f"hydra.run.dir={killed}", *RUN, f"ckpt_path={last}"])
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = final_state(straight), final_state(killed)
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["hyper_parameters"]["config"]["prior"]["_target_"].endswith("EnergyPrior")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for pid, state in opt_a["state"].items():
            assert torch.equal(state["exp_avg_sq"], opt_b["state"][pid]["exp_avg_sq"])
    for key in ("langevin", "prior"):
        assert torch.equal(a["rng_states"][0][key], b["rng_states"][0][key]), key
