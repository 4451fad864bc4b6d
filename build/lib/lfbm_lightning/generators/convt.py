"""Top-down ConvNet generators g(z): (B, d) -> (B, C, H, W) in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _stem_is_a_matmul(conv: nn.Module) -> bool:
    """Whether ``conv`` applied to a 1 x 1 input is exactly the matmul of :func:`_stem`."""
    return (
        isinstance(conv, nn.ConvTranspose2d)
        and conv.groups == 1
        and conv.dilation == (1, 1)
        and conv.output_padding == (0, 0)
        and conv.padding[0] == conv.padding[1]
        and 2 * conv.padding[0] < min(conv.kernel_size)
    )


def _stem(conv: nn.ConvTranspose2d, z: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(d, C, k, s, p) of z (B, d) viewed as a 1 x 1 image, as one GEMM.

    On a 1 x 1 input, out[b, c, i, j] = bias[c] + sum_e z[b, e] W[e, c, p + i, p + j]
    (any stride). The output is laid out in the weight's memory format, so a channels_last
    generator gets NHWC activations without a copy.
    """
    p = conv.padding[0]
    w = conv.weight
    if p:
        w = w[:, :, p:-p, p:-p]
    d, channels, h, wd = w.shape
    if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        flat = w.permute(0, 2, 3, 1).reshape(d, h * wd * channels)
        bias = conv.bias.repeat(h * wd) if conv.bias is not None else None
        out = (z @ flat if bias is None else torch.addmm(bias, z, flat)).view(-1, h, wd, channels)
        return out.permute(0, 3, 1, 2)
    flat = w.reshape(d, channels * h * wd)
    bias = conv.bias.repeat_interleave(h * wd) if conv.bias is not None else None
    out = z @ flat if bias is None else torch.addmm(bias, z, flat)
    return out.view(-1, channels, h, wd)


class ConvTransposeGenerator(nn.Module):
    """A stack of transposed convolutions from a 1x1 latent "image" up to (C, H, W).

    The latent z (B, d) is viewed as (B, d, 1, 1). Each hidden block is ConvTranspose2d +
    LeakyReLU(0.2); the last block outputs ``out_channels`` maps through tanh. No BatchNorm;
    weights Xavier-normal, biases PyTorch's default U(-1/sqrt(fan), 1/sqrt(fan)) (the
    authors' SVHN / CIFAR-10 / CelebA generators). The architecture is data: the paper's
    stacks are written in ``conf/generator/*.yaml``.

    Args:
        latent_dim: d.
        out_channels: C of the image (3 for colour, 1 for grey).
        layers: one (out_channels, kernel, stride, padding) per block; the last entry's
            channel count is ignored and replaced by ``out_channels``.
    """

    def __init__(
        self, latent_dim: int, out_channels: int, layers: Sequence[Sequence[int]]
    ) -> None:
        super().__init__()
        if len(layers) < 1:
            raise ValueError("a generator needs at least one layer")
        self.latent_dim = int(latent_dim)
        blocks: list[nn.Module] = []
        in_ch = self.latent_dim
        for i, (ch, kernel, stride, pad) in enumerate(layers):
            last = i == len(layers) - 1
            ch = out_channels if last else ch
            conv = nn.ConvTranspose2d(in_ch, ch, kernel, stride, pad)
            nn.init.xavier_normal_(conv.weight)
            blocks += [conv, nn.Tanh() if last else nn.LeakyReLU(0.2)]
            in_ch = ch
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))

    def fast_forward(self, z: torch.Tensor) -> torch.Tensor:
        """``forward(z)`` with the same math, the first block computed as the GEMM it is.

        The stem is a transposed convolution of a 1 x 1 input, which convolution kernels
        handle poorly on CPU (``benchmarks/README.md``); :func:`_stem` is one matmul. The
        rest of the stack runs unchanged; a stem that is not such a matmul runs as usual.
        """
        stem = self.net[0]
        if not _stem_is_a_matmul(stem):
            return self(z)
        return self.net[1:](_stem(stem, z))


class MNISTGenerator(nn.Module):
    """The 28x28 MNIST generator of the anomaly-detection experiments.

    Linear d -> 1024 + BN + ReLU; Linear -> 128*7*7 + BN + ReLU; ConvT 128 -> 64 (k2 s2) + BN +
    ReLU (14x14); ConvT 64 -> C (k2 s2) + tanh (28x28). BatchNorm follows the module's
    train/eval mode (the reference code left it in train mode at test time, making scores
    depend on the test batch: here ``model.eval()`` gives per-image scores).

    Args:
        latent_dim: d (20 in the paper).
        out_channels: C (1).
    """

    def __init__(self, latent_dim: int, out_channels: int = 1) -> None:
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, 128 * 7 * 7),
            nn.BatchNorm1d(128 * 7 * 7),
            nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 2, 2),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, out_channels, 2, 2),
            nn.Tanh(),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """ConvTranspose weights Xavier-normal (biases PyTorch's default); BatchNorm weights
        N(1, 0.02^2) and biases 0; the Linear layers keep PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.xavier_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], 128, 7, 7))


@torch.no_grad()
def output_shape(generator: nn.Module, latent_dim: int) -> tuple[int, int, int]:
    """(C, H, W) that ``generator`` produces for a latent of size ``latent_dim``.

    Runs one forward pass on two zero latents in eval mode (BatchNorm needs > 1 sample) and
    restores the previous mode.
    """
    was_training = generator.training
    generator.eval()
    try:
        device = next(generator.parameters()).device
        out = generator(torch.zeros(2, latent_dim, device=device))
    finally:
        generator.train(was_training)
    return tuple(out.shape[1:])
