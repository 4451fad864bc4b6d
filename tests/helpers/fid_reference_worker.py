"""One process of the two-process FID reference test (spawned processes import it by name):
each rank computes the training-set reference statistics with
:func:`~lfbm_lightning.metrics.fid_statistics.training_reference_stats` and records how many
images it featured itself."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from lfbm_lightning.metrics import fid_statistics
from lfbm_lightning.metrics.fid_statistics import InceptionSettings, training_reference_stats

N_IMAGES = 5
RUN_CONFIG = {"dataset": {"_target_": "tests.Images", "n": N_IMAGES}, "paths": {"data_dir": None}}


def train_set() -> list[dict[str, torch.Tensor]]:
    """``N_IMAGES`` reproducible 3x16x16 images in [-1, 1], as a data set of batch dicts."""
    images = torch.rand(N_IMAGES, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return [{"image": image * 2 - 1} for image in images]


def settings(weights: str) -> InceptionSettings:
    return InceptionSettings(weights, "2048", batch_size=2, device=torch.device("cpu"))


def reference_worker(rank: int, world_size: int, out_dir: str, weights: str) -> None:
    """Twice (uncached, then cached): the reference statistics this rank returns and the
    images it featured; saved as ``rank<r>.pt``."""
    out = Path(out_dir)
    dist.init_process_group(
        "gloo", init_method=f"file://{out / 'store'}", rank=rank, world_size=world_size
    )
    featured: list[int] = []
    batches = fid_statistics.image_batches

    def counted(dataset, batch_size):
        featured.append(len(dataset))
        return batches(dataset, batch_size)

    fid_statistics.image_batches = counted
    results = []
    for _ in range(2):
        featured.clear()
        stats = training_reference_stats(RUN_CONFIG, train_set(), out / "stats", settings(weights))
        if stats is not None:  # plain tensors: the test reads the file with weights_only
            stats = {
                "n": stats.n,
                "mu": torch.from_numpy(stats.mu),
                "sigma": torch.from_numpy(stats.sigma),
            }
        results.append({"stats": stats, "featured": sum(featured)})
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()
