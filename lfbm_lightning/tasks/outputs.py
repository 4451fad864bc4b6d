"""What a task writes: only rank 0 writes (:func:`is_writer`); per-example CSV rows and the
first images of each stream for the figures (rank 0's first examples)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from lfbm_lightning.runtime.distributed import rank_and_world_size


def is_writer() -> bool:
    """Whether this process writes the task's files (rank 0, or the only process)."""
    return rank_and_world_size()[0] == 0


def write_csv(rows: list[dict[str, float | int]], path: Path) -> Path:
    """Write one CSV row per example (the keys of the first row are the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


class FirstImages:
    """Keeps the first ``limit`` items of several aligned image streams, on the CPU (figures).

    Args:
        limit: number of items to keep.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[list[torch.Tensor]] = []
        self.count = 0

    def add(self, *images: torch.Tensor) -> None:
        """Offer one batch of each stream, all (B, C, H, W) with the same B."""
        take = min(self.limit - self.count, images[0].shape[0])
        if take <= 0:
            return
        if not self.parts:
            self.parts = [[] for _ in images]
        for part, batch in zip(self.parts, images, strict=True):
            part.append(batch[:take].detach().cpu())
        self.count += take

    def streams(self) -> list[torch.Tensor]:
        """The kept items of each stream, (n, C, H, W) with n <= limit."""
        return [torch.cat(part) for part in self.parts]
