"""Invertible layers of the 1-D Glow used as the LFBM prior (Kingma & Dhariwal 2018).

Every layer maps the data direction to the noise direction in ``forward`` and returns the
log-determinant of that map's Jacobian; ``inverse`` maps back. Shapes: z is (B, d) throughout.
"""

from __future__ import annotations

import torch
from torch import nn


class ActNorm(nn.Module):
    """Affine per-dimension normalisation y = (z + b) * exp(3 s).

    log|det dy/dz| = 3 * sum(s). As in the authors' code, b and s start as small random values
    drawn from N(0, 0.05^2) (Glow's data-dependent initialisation is not used).

    Args:
        dim: number of features d.
        init_std: standard deviation of the initial b and s.
    """

    def __init__(self, dim: int, init_std: float = 0.05) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(dim) * init_std)
        self.log_scale = nn.Parameter(torch.randn(dim) * init_std)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (z + self.bias) * torch.exp(3.0 * self.log_scale)
        return y, (3.0 * self.log_scale.sum()).expand(z.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-3.0 * self.log_scale) - self.bias


class InvertibleLinear(nn.Module):
    """A full invertible d x d linear map y = z W^T, W initialised to a random orthogonal matrix.

    log|det dy/dz| = log|det W|, computed in float64 for accuracy. W changes only when the
    optimizer steps, so when no gradient has to flow to W (under ``torch.no_grad``, or while a
    Langevin chain holds the parameters frozen) the value is cached until W changes; with a
    gradient to W it is recomputed, so its gradient is exactly slogdet's.

    Args:
        dim: number of features d.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim))
        self.weight = nn.Parameter(q)
        self._log_det_cache: tuple[tuple, torch.Tensor] | None = None

    def _slogdet(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| as a 0-d tensor in the weight's dtype.

        Cached while W needs no gradient. The cache key is W's storage, dtype and autograd
        version counter, which every in-place update of W bumps (optimizer steps,
        ``load_state_dict``); only writes through ``weight.data`` would bypass it.
        """
        w = self.weight
        if (torch.is_grad_enabled() and w.requires_grad) or torch.compiler.is_compiling():
            return self._slogdet()
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._log_det_cache is None or self._log_det_cache[0] != key:
            with torch.no_grad():
                self._log_det_cache = (key, self._slogdet())
        return self._log_det_cache[1]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z @ self.weight.T, self.log_abs_det().expand(z.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        # z W^T = y  <=>  W z^T = y^T
        return torch.linalg.solve(self.weight, y.T).T


class ZeroLinear(nn.Module):
    """y = (h W^T + b) * exp(3 * logs): a linear layer that starts at exactly zero.

    W, b and the per-output log-scale ``logs`` are all zero-initialised and learned; the
    factor 3 speeds up the scale's learning, as in ActNorm (the authors' ``fc_zeros``).

    Args:
        d_in: input features.
        d_out: output features.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        self.logs = nn.Parameter(torch.zeros(d_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight, self.bias) * torch.exp(3.0 * self.logs)


class CouplingNet(nn.Module):
    """MLP d_in -> width -> width -> d_out, initialised as the authors'.

    Hidden layers: a bias-free Linear with weights drawn from N(0, 0.05^2) (ActNorm's bias
    takes the bias's place), then ActNorm, then ReLU. The last layer is a :class:`ZeroLinear`,
    so the coupling it drives starts at its identity-like map (shift 0, scale sigmoid(2)).

    Args:
        d_in: input features.
        d_out: output features.
        width: hidden width.
        init_std: standard deviation of the hidden weights.
    """

    def __init__(self, d_in: int, d_out: int, width: int, init_std: float = 0.05) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(
            [nn.Linear(d_in, width, bias=False), nn.Linear(width, width, bias=False)]
        )
        for linear in self.hidden:
            nn.init.normal_(linear.weight, 0.0, init_std)
        self.norms = nn.ModuleList([ActNorm(width), ActNorm(width)])
        self.out = ZeroLinear(width, d_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            h = torch.relu(norm(linear(h))[0])
        return self.out(h)


class AffineCoupling(nn.Module):
    """Affine coupling: split z = (z1, z2); (shift, raw) = NN(z1); z2 <- (z2 + shift) * scale.

    scale = sigmoid(raw + 2), so log|det| = sum(log scale) and the map starts close to the
    identity (sigmoid(2) = 0.88). NN outputs 2 * d2 numbers: shift = even outputs, raw = odd
    outputs, as in Glow. z1 has d1 = d // 2 entries and z2 the other d2 = d - d1.

    Args:
        dim: number of features d (>= 2).
        width: hidden width of the coupling MLP (64 in the paper, 128 for CelebA-HQ 256).
    """

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"an affine coupling needs latent_dim >= 2, got {dim}")
        self.d1 = dim // 2
        self.net = CouplingNet(self.d1, 2 * (dim - self.d1), width)

    def _shift_scale(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(z1)
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = z[:, : self.d1], z[:, self.d1 :]
        shift, scale = self._shift_scale(z1)
        y2 = (z2 + shift) * scale
        return torch.cat([z1, y2], dim=1), torch.log(scale).sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.d1], y[:, self.d1 :]
        shift, scale = self._shift_scale(y1)
        return torch.cat([y1, y2 / scale - shift], dim=1)
