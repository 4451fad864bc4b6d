"""LightningDataModules, dataset readers, splits and occlusion masks."""
