"""Every DDP rank reduces the epoch's ``sync_dist`` metrics at one point, before any callback.

Lightning reduces an epoch metric logged with ``sync_dist=True`` (an all-reduce per metric)
when the metrics are first read after the epoch's last batch. Rank 0's progress bar reads
them in ``on_train_epoch_end`` (the bar is off on the other ranks), the other ranks only after
every callback: a collective of another callback in between (the FID's all-gather) then
pairs with an all-reduce and the run hangs. :class:`EpochMetricsOnEveryRank` reads them on
every rank first, so later reads on one rank find them reduced and make no collective.
"""

from __future__ import annotations

import pytorch_lightning as pl


class EpochMetricsOnEveryRank(pl.Callback):
    """Reduce the epoch-level metrics on every rank at the start of ``on_train_epoch_end``
    (module docstring). Put it before every callback that reads metrics or makes a collective
    there; Lightning keeps the order of the callbacks it is given (checkpoints go last)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.callback_metrics  # noqa: B018  (the read computes, and caches, every metric)
