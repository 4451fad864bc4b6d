"""The skeleton every evaluation task shares; a task file holds only what is its own.

:class:`Task` (named by ``_target_`` in ``conf/task/<name>.yaml``) is built from the model, its
data module, the evaluate config and the output directory; :meth:`Task.run` writes
:attr:`Task.files` and returns the numbers for ``metrics.json``. :class:`ExampleTask` selects
a split's examples, shares them over the ranks, scores them (:meth:`ExampleTask.score`: one
row per example), gathers the rows in example order, and rank 0 writes. Details: docs/tasks.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lfbm_lightning.checks import check_choice
from lfbm_lightning.data.data_module import ImageDataModule
from lfbm_lightning.errors import ConfigError
from lfbm_lightning.inference.fit import FITS, PassCount
from lfbm_lightning.models import LatentPriorModel
from lfbm_lightning.runtime.distributed import gather_lists
from lfbm_lightning.tasks.examples import (
    all_rows,
    device_batches,
    example_loader,
    rank_share,
    split_examples,
)
from lfbm_lightning.tasks.outputs import is_writer, write_csv

STARTS = ("default", "q")
"""The values of a task's ``start`` option."""


class Task:
    """One evaluation task on one checkpoint.

    Args:
        model: the trained model, on its device, in eval mode.
        datamodule: the training run's data module, set up.
        cfg: the composed evaluate config; the task's own options are ``cfg[cfg.task.name]``.
        out_dir: where the files go (rank 0 writes them).
    """

    files: ClassVar[tuple[str, ...]] = ()
    """Files (relative to ``out_dir``) that :meth:`run` writes with the default options."""

    @classmethod
    def check_training(cls, train_cfg: DictConfig) -> None:
        """Raise a ``ConfigError`` when a run trained with ``train_cfg`` (a train.py config)
        gives checkpoints this task cannot score; ``evaluate_after_fit`` checks this before
        training. Every run suits the default."""

    def __init__(
        self, model: LatentPriorModel, datamodule: ImageDataModule, cfg: DictConfig, out_dir: Path
    ) -> None:
        self.model = model
        self.datamodule = datamodule
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.name = str(cfg.task.name)
        self.settings = cfg[self.name]
        fit = str(self.settings.get("fit") or "protocol")
        self.fit = check_choice(f"{self.name}.fit", fit, FITS)
        """How the task's evaluation chains fit z: ``protocol`` (the paper's noise-free
        Langevin, the default) or ``fast`` (:mod:`lfbm_lightning.inference.fit`), from the
        task's ``fit`` option; pass it and :attr:`count` to the fits."""
        start = str(self.settings.get("start") or "default")
        self.start = check_choice(f"{self.name}.start", start, STARTS)
        if self.start == "q" and not model.posterior.has_sampler:
            raise ConfigError(
                f"{self.name}.start=q needs a checkpoint trained with inference=damc (its "
                f"sampler Q(z|x)); this one has {type(model.posterior).__name__}: use "
                f"{self.name}.start=default"
            )
        """Where the task's fits start: ``default`` (the protocol's: N(0, I), or prior samples
        for inpainting) or ``q`` (a seeded draw of the model's amortised sampler Q(z | x),
        ``inference=damc``), from the task's ``start`` option; see :meth:`start_of`."""
        self.count = PassCount()
        """Generator passes of this rank's fits."""
        self.fit_options = {"seed": int(cfg.seed), "fit": self.fit, "count": self.count}
        """Keyword arguments of every ``model.reconstruct`` of the task: chain starts seeded
        with the evaluation seed (and each example's index), :attr:`fit`, :attr:`count`."""

    def start_of(
        self, x: torch.Tensor, mask: torch.Tensor | None, index: torch.Tensor, seed: int
    ) -> torch.Tensor | None:
        """Starts (B, d) of the fits of images x (B, C, H, W) under ``start: q``: draws of
        Q(z | x) seeded by (seed, index[i]); None under ``start: default`` (the task's own)."""
        if self.start == "default":
            return None
        return self.model.posterior.sampler_start(self.model, x, mask, index, seed)

    def fit_results(self) -> dict[str, Any]:
        """``fit``, ``start``, ``generator_passes`` and ``passes_per_fit`` summed over every
        rank's fits (Q's draws use no generator pass); empty when the task ran no fit (e.g. a
        sampling chain)."""
        total = PassCount()
        for passes, images in gather_lists([(self.count.passes, self.count.images)]):
            total.passes += passes
            total.images += images
        return total.results(self.fit) | {"start": self.start} if total.images else {}

    def run(self) -> dict[str, Any]:
        """Write the task's files; return its results (every rank: the same results)."""
        raise NotImplementedError

    def markdown(self, results: dict[str, Any]) -> str:
        """A Markdown section of the task's own, added to ``results.md`` below the table of
        every result (none by default)."""
        return ""


class ExampleTask(Task):
    """A task that scores examples of a split one by one (module docstring)."""

    files: ClassVar[tuple[str, ...]] = ("per_example.csv",)
    sort_key: ClassVar[tuple[str, ...]] = ("index",)
    """Row fields that order the gathered rows (several rows per example: add a field)."""

    def check(self) -> None:
        """Refuse a checkpoint the task cannot score, before any work (a clear error)."""

    @property
    def split(self) -> str:
        """The scored split: the task's ``split`` option, null: the data module's evaluation
        split (test; CelebA: valid)."""
        return self.settings.get("split") or self.datamodule.evaluation_split

    def examples(self) -> Dataset:
        """The scored examples: the split, or a seeded random ``n_examples`` of it."""
        n_examples = self.settings.get("n_examples")
        return split_examples(self.datamodule, self.split, n_examples, self.cfg.seed)

    def score(self, batch: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """The rows of one batch (``image`` (B, C, H, W), ``index`` (B,), ...), each with its
        ``index``."""
        raise NotImplementedError

    def write_figures(self, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
        """Rank 0 writes the task's figures (after ``per_example.csv``)."""

    def summarize(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The results of every rank's rows, in example order."""
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        self.check()
        return self.score_examples()

    def score_examples(self) -> dict[str, Any]:
        """Score this rank's share of :meth:`examples`, gather, summarise, write."""
        loader = example_loader(self.datamodule, rank_share(self.examples()), self.cfg)
        rows: list[dict[str, Any]] = []
        for batch in device_batches(loader, self.model.device, self.name, self.cfg.progress):
            rows += self.score(batch)
        rows = all_rows(rows, self.sort_key)
        results = self.summarize(rows) | self.fit_results()
        if is_writer():
            write_csv(rows, self.out_dir / "per_example.csv")
            self.write_figures(rows, results)
        return results


def mean(rows: list[dict[str, Any]], key: str) -> float:
    """Mean of ``row[key]`` over the rows."""
    return sum(row[key] for row in rows) / len(rows)
