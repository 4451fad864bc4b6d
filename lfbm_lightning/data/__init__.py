"""LightningDataModules, dataset readers, splits and occlusion masks.

``dataset=<name>`` selects one data module (``conf/dataset/<name>.yaml``):
digits (embedded), cifar10, svhn, celeba (CelebA 64) and mnist.
"""

from lfbm_lightning.data.base import FileDataModule, ImageDataModule, OccludedDataset
from lfbm_lightning.data.celeba import CelebADataModule
from lfbm_lightning.data.cifar10 import CIFAR10DataModule
from lfbm_lightning.data.digits import DigitsDataModule
from lfbm_lightning.data.mnist import MNISTDataModule
from lfbm_lightning.data.svhn import SVHNDataModule

__all__ = [
    "CIFAR10DataModule",
    "CelebADataModule",
    "DigitsDataModule",
    "FileDataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "OccludedDataset",
    "SVHNDataModule",
]
