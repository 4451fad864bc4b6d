"""Per-image reconstruction error, averaged over images (not over batches).

Images live on the ``[-1, 1]`` scale. On the ``[0, 1]`` scale ``u = (x + 1) / 2`` so
``(u - u_hat)^2 = (x - x_hat)^2 / 4``: every ``[0, 1]`` MSE is exactly a quarter of the
``[-1, 1]`` one.
"""

from __future__ import annotations

from torch import Tensor

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
