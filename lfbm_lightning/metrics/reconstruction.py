"""Per-image reconstruction error, averaged over images (not over batches).

Images live on the ``[-1, 1]`` scale. On the ``[0, 1]`` scale ``u = (x + 1) / 2`` so
``(u - u_hat)^2 = (x - x_hat)^2 / 4``: every ``[0, 1]`` MSE is exactly a quarter of the
``[-1, 1]`` one.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

SCALE_FACTORS = {"[-1,1]": 1.0, "[0,1]": 0.25}


def per_image_mse(
    x: Tensor, x_hat: Tensor, mask: Tensor | None = None, scale: str = "[-1,1]"
) -> Tensor:
    """Mean squared error of each image over its selected pixels (all channels).

    ``mse_n = sum_{c,h,w} m_{nchw} (x_{nchw} - xhat_{nchw})^2 / sum_{c,h,w} m_{nchw}``, where a
    ``(N, 1, H, W)`` mask is broadcast over the channels. Images with no selected pixel get NaN.

    Args:
        x: Targets ``(N, C, H, W)`` in ``[-1, 1]``.
        x_hat: Reconstructions, same shape.
        mask: Optional ``(N, 1, H, W)`` or ``(N, C, H, W)``, 1 = pixel counted, 0 = ignored.
            ``None`` counts every pixel.
        scale: ``"[-1,1]"`` (the images' scale) or ``"[0,1]"`` (a quarter of it).

    Returns:
        ``(N,)`` float tensor.
    """
    if x.shape != x_hat.shape or x.ndim != 4:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must be equal 4-d")
    if scale not in SCALE_FACTORS:
        raise ValueError(f"scale must be one of {list(SCALE_FACTORS)}, got {scale!r}")
    sq_err = (x.float() - x_hat.float()).pow(2)
    if mask is None:
        mse = sq_err.flatten(1).mean(1)
    else:
        if mask.ndim != 4 or mask.shape[0] != x.shape[0] or mask.shape[1] not in (1, x.shape[1]):
            raise ValueError(f"mask {tuple(mask.shape)} must be (N, 1 or C, H, W) for {x.shape}")
        weights = mask.to(sq_err.dtype).expand_as(sq_err)
        mse = (sq_err * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)
    return mse * SCALE_FACTORS[scale]


class MeanPerImageMSE(Metric):
    """Running mean of :func:`per_image_mse` over all images seen (NaN images skipped).

    Each image weighs the same whatever its batch; states are summed across processes, so the
    result is the same under DDP.

    Args:
        scale: ``"[-1,1]"`` or ``"[0,1]"``.
    """

    full_state_update = False

    def __init__(self, scale: str = "[-1,1]", **kwargs) -> None:
        super().__init__(**kwargs)
        if scale not in SCALE_FACTORS:
            raise ValueError(f"scale must be one of {list(SCALE_FACTORS)}, got {scale!r}")
        self.scale = scale
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: Tensor, x_hat: Tensor, mask: Tensor | None = None) -> None:
        """Add a batch: ``x``, ``x_hat`` ``(B, C, H, W)``, optional mask as in the function."""
        mse = per_image_mse(x, x_hat, mask, self.scale)
        valid = ~torch.isnan(mse)
        self.total += mse[valid].double().sum()
        self.count += valid.sum()

    def compute(self) -> Tensor:
        """Mean per-image MSE (NaN when no image had a selected pixel)."""
        return self.total / self.count
