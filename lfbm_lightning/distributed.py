"""Evaluation work sharded over DDP ranks and gathered back, in item order, on every rank.

Item ``i`` of ``n`` belongs to rank ``i % world_size`` (the interleaving of
``DistributedSampler``, so shard sizes differ by at most one). Each rank computes its items and
:func:`gather_tensors` / :func:`gather_objects` return all ``n`` results, in item order, on every
rank::

    idx = shard_indices(len(dataset))                      # this rank's items
    local = torch.stack([score(dataset[i]) for i in idx])  # (len(idx), ...)
    scores = gather_tensors(local, len(dataset))           # (n, ...) on every rank
    if rank_and_world_size()[0] == 0:
        write(scores)

Outside an initialised ``torch.distributed`` process group (one process) the shard is every
item and gathering returns its input. (How the ranks of a training job are started, also
inside a Hydra sweep, is in :mod:`lfbm_lightning.training`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def rank_and_world_size() -> tuple[int, int]:
    """(global rank, world size) of this process; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The items of ``range(n)`` that ``rank`` handles: ``rank, rank + W, rank + 2W, ...``.

    Args:
        n: number of items (>= 0).
        rank: this process's rank (default: from the process group, else 0).
        world_size: W, the number of processes (default: from the process group, else 1).

    Returns:
        A range of ``ceil((n - rank) / W)`` indices; the shards of all ranks partition
        ``range(n)``.
    """
    if rank is None or world_size is None:
        rank, world_size = rank_and_world_size()
    if n < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need n >= 0 and 0 <= rank < world_size, got {n}, {rank}, {world_size}")
    return range(rank, n, world_size)


def gather_tensors(local: torch.Tensor, n: int) -> torch.Tensor:
    """All ranks' results for ``range(n)``, in item order, on every rank.

    Every rank must call this (it is a collective). Shards are padded to ``ceil(n / W)`` rows
    so that one ``all_gather`` moves them; the padding is dropped again.

    Args:
        local: this rank's results, shape (len(shard_indices(n)), ...), row k for item
            ``shard_indices(n)[k]``; trailing shape and dtype equal on every rank, device as
            the backend needs (CPU for gloo, the rank's GPU for NCCL).
        n: the total number of items.

    Returns:
        A tensor (n, ...) whose row i is the result of item i.
    """
    rank, world_size = rank_and_world_size()
    expected = len(shard_indices(n, rank, world_size))
    if local.shape[0] != expected:
        raise ValueError(f"rank {rank} holds {local.shape[0]} rows, its shard has {expected}")
    if world_size == 1:
        return local
    padded = local.new_zeros((-(-n // world_size), *local.shape[1:]))
    padded[:expected] = local
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    # row k of rank r is item k * W + r: interleave the ranks, then cut the padding
    return torch.stack(parts, dim=1).flatten(0, 1)[:n]


def gather_objects(local: Sequence[Any], n: int) -> list[Any]:
    """Like :func:`gather_tensors` for picklable per-item results (rows of a CSV, file names).

    Args:
        local: this rank's results, item ``shard_indices(n)[k]`` at position k.
        n: the total number of items.

    Returns:
        The n results in item order, on every rank.
    """
    rank, world_size = rank_and_world_size()
    expected = len(shard_indices(n, rank, world_size))
    if len(local) != expected:
        raise ValueError(f"rank {rank} holds {len(local)} results, its shard has {expected}")
    if world_size == 1:
        return list(local)
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, list(local))
    return [parts[i % world_size][i // world_size] for i in range(n)]
