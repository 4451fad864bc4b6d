"""Generators g(z): plain nn.Modules mapping (B, d) to images (B, C, H, W) in [-1, 1]."""

from lfbm_lightning.generators.convt import ConvTransposeGenerator, MNISTGenerator, output_shape

__all__ = ["ConvTransposeGenerator", "MNISTGenerator", "output_shape"]
