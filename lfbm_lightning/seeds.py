"""The seed of one item of a seeded run: the one formula behind every per-example stream.

A leaf module (it imports nothing from the package). Chain starts, per-batch sample draws and
per-rank streams are seeded with :func:`item_seed`, so that a result depends on (seed, item)
alone, not on the batch it fell in, the batch size or the number of ranks.
"""


def item_seed(seed: int, item: int) -> int:
    """The seed of item ``item`` (an example, a sample batch, a rank) of a run seeded ``seed``:
    distinct for every item, whatever the batching or the number of ranks."""
    return int(seed) * 1_000_003 + int(item)
