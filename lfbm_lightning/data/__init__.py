"""LightningDataModules, dataset readers, splits and occlusion masks.

``dataset=<name>`` selects one data module: ``conf/dataset/<name>.yaml`` names its class, which
lives in ``lfbm_lightning/data/<name>.py`` with everything else of that data set (its expected
files, reader, download and toy files for the tests; see :mod:`lfbm_lightning.data.readers`).
A new data set is that one module and that one config, nothing else.
"""

from lfbm_lightning.data.data_module import FileDataModule, ImageDataModule, OccludedDataset

__all__ = ["FileDataModule", "ImageDataModule", "OccludedDataset"]
