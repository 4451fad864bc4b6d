"""One process of the two-process sharding test (spawned processes import it by name)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from lfbm_lightning.runtime.distributed import gather_lists, shard_indices

GATHER_SIZES = (0, 1, 5, 8)
"""Item counts of the test: none, fewer than the ranks, odd, even."""


def item_result(i: int) -> dict[str, int]:
    """The "evaluation result" of item i (a per-example row)."""
    return {"index": i, "square": i * i}


def gather_worker(rank: int, world_size: int, out_dir: str) -> None:
    """Shard, compute and gather every case of :data:`GATHER_SIZES`; save what this rank got."""
    store = Path(out_dir) / "store"
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    results = {}
    for n in GATHER_SIZES:
        idx = shard_indices(n)
        results[n] = {"shard": list(idx), "rows": gather_lists([item_result(i) for i in idx])}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
