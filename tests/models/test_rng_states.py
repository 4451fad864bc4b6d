"""The model's random streams in checkpoints: every rank's states, keyed by rank, and a resume
on another device type (``trainer.*`` may change on resume), whose generator states do not fit
(a CUDA generator's state is 16 bytes, a CPU one's 5056)."""

from __future__ import annotations

import logging

import torch

from lfbm_lightning.run.training import train
from lfbm_lightning.seeds import item_seed
from tests.conftest import TINY, compose_config

RUN = [*TINY, "trainer.limit_val_batches=0", "callbacks.image_grids.every_n_epochs=0"]


def cuda_generator_state(seed: int, offset: int) -> torch.Tensor:
    """A state as ``torch.Generator('cuda').get_state()`` returns it: seed and Philox offset,
    two int64 (16 bytes)."""
    return torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)


def test_a_cuda_checkpoint_resumes_on_cpu_with_reseeded_noise_and_one_warning(tmp_path, caplog):
    first = tmp_path / "first"
    train(compose_config(RUN, first))
    last = first / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert sorted(checkpoint["rng_states"]) == [0]  # one process: rank 0's streams
    saved = checkpoint["rng_states"][0]
    assert saved["langevin"].numel() == torch.Generator().get_state().numel()
    # the run as if it had trained on a GPU: its chain generator was a CUDA one
    checkpoint["rng_states"][0]["langevin"] = cuda_generator_state(1000, 4096)
    crafted = tmp_path / "cuda.ckpt"
    torch.save(checkpoint, crafted)

    resumed = [*RUN, "trainer.max_epochs=2", f"ckpt_path={crafted}"]
    with caplog.at_level(logging.WARNING, logger="lfbm_lightning"):
        model, _ = train(compose_config(resumed, tmp_path / "resumed"))
    warnings = [r.getMessage() for r in caplog.records if "noise state" in r.getMessage()]
    assert warnings == [
        "the checkpoint's langevin noise state (16 bytes) is not for a cpu generator: reseeded "
        "from seed and global step 4 (the resume is not exact)"
    ]
    assert model.trainer.current_epoch == 2  # the resume trained on
    # reseeded from the run's chain seed (seed 1: 1000 + rank 0) and the global step
    assert model.langevin_rng().initial_seed() == item_seed(1000, 4)
