"""Shared LightningDataModule plumbing: loaders, seeds, the split contract, occlusion and data
files.

Occlusion (docs/paper.md, "Unsupervised recovery") is a setting of every data module,
``occlusion`` = None (complete images) or a mapping with the keys of :data:`OCCLUSION_KEYS`:

    kind: null | salt_pepper | single_region   (null = complete images)
    coverage: missing fraction for salt_pepper (64 x 64 with 8 x 8 holes: docs/paper.md's table)
    size: hole side for single_region (docs/paper.md: 20, 30 or 40)
    hole_size: side of the salt-and-pepper holes (docs/paper.md: 8)
    seed: mask i of training image i is drawn from (seed, i) alone

On the command line: ``dataset.occlusion.kind=salt_pepper dataset.occlusion.coverage=0.5``.
Only the training split is occluded: its items gain ``mask`` (1, H, W), drawn lazily per item
(never materialised for the whole set) and identical in every epoch, worker and rank.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lfbm_lightning.data.occlusion import HOLE_SIDE, MaskMaker
from lfbm_lightning.data.readers import DataFiles
from lfbm_lightning.errors import DataError, LfbmError

OCCLUSION_KEYS = ("kind", "coverage", "size", "hole_size", "seed")


def mask_maker(occlusion: Mapping[str, Any] | None, image_size: int) -> MaskMaker | None:
    """The validated mask maker of an ``occlusion`` setting, or None for complete images.

    Args:
        occlusion: None, or a mapping with keys from :data:`OCCLUSION_KEYS` (``kind`` None
            also means complete images; ``hole_size`` defaults to 8, ``seed`` to 0).
        image_size: H = W of the images.

    Raises:
        ValueError: naming the offending ``dataset.occlusion`` key.
    """
    if occlusion is None or occlusion.get("kind") is None:
        return None
    unknown = sorted(set(occlusion) - set(OCCLUSION_KEYS))
    if unknown:
        raise ValueError(
            f"unknown dataset.occlusion keys {unknown}; allowed: {list(OCCLUSION_KEYS)}"
        )
    return MaskMaker(
        kind=occlusion["kind"],
        height=image_size,
        width=image_size,
        seed=int(occlusion.get("seed", 0)),
        coverage=occlusion.get("coverage"),
        size=occlusion.get("size"),
        hole_size=occlusion.get("hole_size", HOLE_SIDE),
    )


class OccludedDataset(Dataset):
    """A dataset of batch dicts whose item ``i`` also carries ``mask`` = ``maker(i)``.

    Args:
        dataset: items as in :mod:`lfbm_lightning.data.datasets` (image, label, index).
        maker: the mask of item i, float32 (1, H, W), 1 = observed.
    """

    def __init__(self, dataset: Dataset, maker: MaskMaker) -> None:
        self.dataset = dataset
        self.maker = maker

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**self.dataset[i], "mask": self.maker(i)}


class ImageDataModule(pl.LightningDataModule):
    """Base class: subclasses build ``{"train", "val", "test", ...} -> Dataset`` in
    :meth:`build_splits` (``val`` feeds ``val/mse`` and the image grids; extra splits such as
    CelebA's ``valid`` are for evaluation); this class stores them in ``self.splits`` on
    :meth:`setup`, occludes the training split when asked, and builds the loaders.

    Items follow :mod:`lfbm_lightning.data.datasets` (dicts with image, label, index, [mask]).

    Args:
        channels: C of the images.
        image_size: H = W of the images.
        batch_size: images per batch (per device under DDP).
        num_workers: DataLoader worker processes (0 = load in the main process).
        pin_memory: pin host memory for faster host-to-GPU copies.
        persistent_workers: keep workers alive between epochs (needs num_workers > 0).
        seed: seed of the splits and of the training-set shuffling.
        occlusion: None or the occlusion setting (module docstring); masks the training split.
        drop_last: drop each epoch's last, incomplete training batch (as the reference does for
            MNIST, whose BatchNorm generator would otherwise see a tiny batch every epoch);
            validation and test loaders keep every image.
    """

    image_shape: ClassVar[tuple[int, int] | None] = None
    """(channels, image_size) of the data set's images, checked against the config if set."""

    evaluation_split: ClassVar[str] = "test"
    """The split docs/paper.md evaluates reconstruction on (CelebA: its 'valid' partition); the
    ``val`` split (``val/mse``) is never it."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        batch_size: int = 100,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 1,
        occlusion: Mapping[str, Any] | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if self.image_shape is not None and (channels, image_size) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} has {self.image_shape[0]}-channel "
                f"{self.image_shape[1]}x{self.image_shape[1]} images: dataset.channels must be "
                f"{self.image_shape[0]} and dataset.image_size {self.image_shape[1]}, got "
                f"{channels} and {image_size}"
            )
        self.channels = channels
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.occlusion = mask_maker(occlusion, image_size)
        self.drop_last = drop_last
        self.splits: dict[str, Dataset] = {}

    @property
    def occluded(self) -> bool:
        """Whether the training split carries occlusion masks."""
        return self.occlusion is not None

    def build_splits(self) -> dict[str, Dataset]:
        """Read the data: ``{"train", "val", "test"} -> Dataset`` of batch dicts."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.build_splits()
        if self.occlusion is not None:
            splits["train"] = OccludedDataset(splits["train"], self.occlusion)
        self.splits = splits

    def _loader(self, split: str, shuffle: bool, drop_last: bool = False) -> DataLoader:
        if split not in self.splits:
            self.setup()
        dataset = self.splits[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, drop_last=self.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def recovery_dataloader(self) -> DataLoader:
        """The occluded training images in order with their masks, for the recovery evaluation
        (docs/paper.md: evaluated on the training images themselves)."""
        if self.occlusion is None:
            raise ValueError(
                "recovery needs occluded training data: set dataset.occlusion.kind "
                "(salt_pepper or single_region)"
            )
        return self._loader("train", shuffle=False)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of range(n) that depends only on (seed, epoch).

    Lightning calls :meth:`set_epoch` before every training epoch, so the data order of
    epoch e is the same whether a run went straight through or was resumed from a checkpoint
    (a sampler drawing from one long-lived generator would replay epoch 0's order after a
    resume). Under DDP Lightning wraps it in a distributed sampler that shuffles by epoch too.

    Args:
        n: data set size.
        seed: base seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=rng).tolist())


class FileDataModule(ImageDataModule):
    """A data module read from files under one data directory.

    A subclass lives in its data set's module and sets :attr:`files` (what must be there) and
    :meth:`fetch` (its torchvision download). :meth:`prepare_data` downloads the files when
    ``download`` is true, and otherwise checks that they are all there, raising
    :class:`~lfbm_lightning.errors.DatasetFilesMissing` (naming the directory, the files and
    the settings that fix it) before any model is built.

    Args:
        root: the data directory (``paths.data_dir``).
        download: fetch missing files with torchvision (needs network).
        **kwargs: see :class:`ImageDataModule`.
    """

    files: ClassVar[DataFiles]
    """The data set's files under the data directory."""

    def __init__(self, root: str | Path, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.download = download

    def fetch(self) -> None:
        """Download the data set's files into :attr:`root` and check they are all there."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        if not self.download:
            self.files.check(self.root)
            return
        try:
            self.fetch()
        except LfbmError:  # the fetched files are checked: that message names them
            raise
        except (OSError, RuntimeError) as err:  # no network (URLError), a full disk, a bad file
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise DataError(
                f"dataset.download=true could not fetch the data into {self.root} "
                f"({type(err).__name__}: {reason}): check the network, or copy the files there "
                "from a machine that has it (paths.data_dir=DIR) and set dataset.download=false"
            ) from err
