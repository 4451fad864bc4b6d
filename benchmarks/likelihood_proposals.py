"""How well importance-sampling proposals fit the posterior of 28 x 28 digits, against an oracle.

Two commands:

    python benchmarks/likelihood_proposals.py write-standin DATA_DIR
    python train.py dataset=mnist paths.data_dir=DATA_DIR trainer.max_epochs=11 ...
    python benchmarks/likelihood_proposals.py compare --ckpt last.ckpt --data-dir DATA_DIR

``write-standin`` writes MNIST's raw idx files from scikit-learn's 8 x 8 digits upsampled to
MNIST's layout (20 x 20 bilinear, 4-pixel border; 1,497 training, 300 test images), a stand-in
where real MNIST cannot be downloaded; with real MNIST in DATA_DIR/MNIST/raw, ``compare`` runs
on it unchanged. ``compare`` scores the first ``--n-images`` test images with K samples from:
the Laplace mixture of ``task=likelihood`` with equal and with Laplace-mass mixing weights,
and an oracle Gaussian at the posterior's mean and covariance, estimated from long MALA chains
started at the first mode (``--mala-chains`` x ``--mala-steps``, a third of them burn-in). It
prints the share of images with ESS >= K / 10, with k-hat > 0.7, the mean log p(x), and how
the posterior's covariance compares with the Laplace one. No wall-clock is measured.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from lfbm_lightning.inference.importance import (
    StudentTMixture,
    importance_estimate,
    importance_log_weights,
)
from lfbm_lightning.runtime.checkpoints import load_model
from lfbm_lightning.tasks.likelihood import log_joint_fn, posterior_proposal

N_TRAIN = 1497


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """One MNIST idx file: big-endian magic, the dimensions, then the uint8 values."""
    with open(path, "wb") as f:
        f.write(struct.pack(">i", magic))
        for size in array.shape:
            f.write(struct.pack(">i", size))
        f.write(array.tobytes())


def write_standin(data_dir: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    images = (torch.nn.functional.pad(x, (4,) * 4).clamp(0, 1) * 255).round().to(torch.uint8)
    images, labels = images.squeeze(1).numpy(), digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", slice(None, N_TRAIN)), ("t10k", slice(N_TRAIN, None))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part], 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part], 2049)
    print(
        f"wrote {len(images[:N_TRAIN])} training and {len(images[N_TRAIN:])} test images to {raw}"
    )


def first_test_images(data_dir: Path, n: int) -> torch.Tensor:
    """The first n test images on the [-1, 1] scale, (n, 1, 28, 28)."""
    raw = (data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    pixels = np.frombuffer(raw, np.uint8).reshape(-1, 1, 28, 28)[:n].copy()
    return torch.tensor(pixels).float() / 255 * 2 - 1


def mala_moments(model, x: torch.Tensor, start: torch.Tensor, chains: int, steps: int, seed: int):
    """Mean (n, d) and covariance (n, d, d) of p(z | x) from MALA chains started at ``start``
    (n, d); the step size of each image adapts toward 57% acceptance during the burn-in."""
    n, d = start.shape
    rng = torch.Generator().manual_seed(seed)
    energy = model.posterior_energy(x.repeat_interleave(chains, 0))

    def energy_and_grad(z: torch.Tensor):
        with torch.enable_grad():
            flat = z.reshape(-1, d).detach().requires_grad_(True)
            e = energy(flat)
            (grad,) = torch.autograd.grad(e.sum(), flat)
        return e.detach().view(n, chains), grad.view(n, chains, d)

    def log_step(to: torch.Tensor, frm: torch.Tensor, grad: torch.Tensor, h: torch.Tensor):
        return -((to - frm + 0.5 * h**2 * grad) ** 2).sum(-1) / (2 * h[..., 0] ** 2)

    z = start.unsqueeze(1).expand(n, chains, d).clone()
    e, grad = energy_and_grad(z)
    h = torch.full((n, 1, 1), 0.05)
    kept = []
    for t in range(steps):
        noise = torch.randn(z.shape, generator=rng)
        proposal = z - 0.5 * h**2 * grad + h * noise
        e_new, grad_new = energy_and_grad(proposal)
        log_accept = (
            e - e_new + log_step(z, proposal, grad_new, h) - log_step(proposal, z, grad, h)
        )
        accept = torch.rand(log_accept.shape, generator=rng).log() < log_accept
        z = torch.where(accept[..., None], proposal, z)
        e = torch.where(accept, e_new, e)
        grad = torch.where(accept[..., None], grad_new, grad)
        if t < steps // 3:
            rate = accept.float().mean(1)
            h = h * torch.where(rate > 0.57, 1.05, 1 / 1.05)[:, None, None]
        else:
            kept.append(z.clone())
    samples = torch.stack(kept, 2).reshape(n, -1, d)
    mean = samples.mean(1)
    centred = samples - mean[:, None]
    return mean, torch.einsum("nki,nkj->nij", centred, centred) / samples.shape[1]


def summary(name: str, log_w: torch.Tensor) -> None:
    e = importance_estimate(log_w)
    k = log_w.shape[1]
    print(
        f"| {name} | {float((e.ess >= k / 10).double().mean()):.0%} "
        f"| {float((e.ess < 5).double().mean()):.0%} | {float(e.ess.median()):.1f} "
        f"| {float((~e.trusted).double().mean()):.0%} | {float(e.log_px.mean()):.2f} |"
    )


def compare(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(args.ckpt).eval()
    x = first_test_images(Path(args.data_dir), args.n_images)
    settings = OmegaConf.create(
        {"n_chains": args.n_chains, "n_steps": args.n_steps, "inflation": 1.0}
        | {"df": None, "defensive_weight": 0.1}
    )
    proposal = posterior_proposal(model, x, settings, torch.Generator().manual_seed(args.seed))
    mixture = proposal.mixture
    log_joint = log_joint_fn(model, x)

    def log_weights(q: StudentTMixture) -> torch.Tensor:
        rng = torch.Generator().manual_seed(args.seed + 1)
        return importance_log_weights(log_joint, q, args.samples, rng)

    mean, covariance = mala_moments(
        model, x, mixture.means[:, 0], args.mala_chains, args.mala_steps, args.seed + 2
    )
    oracle = StudentTMixture(mean[:, None], torch.linalg.cholesky(covariance)[:, None], None, 0.1)
    uniform = StudentTMixture(mixture.means, mixture.scale_tril, None, 0.1)
    k = args.samples
    print(f"{args.n_images} test images, K = {k}, M = {args.n_chains} fits;", end=" ")
    print(f"proposal passes per image {float(proposal.passes.float().mean()):.0f} + K")
    print("\n| proposal | ESS >= K/10 | ESS < 5 | median ESS | k-hat > 0.7 | mean log p(x) |")
    print("|---|---|---|---|---|---|")
    summary("Laplace mixture, equal weights", log_weights(uniform))
    summary("Laplace mixture, Laplace-mass weights (default)", log_weights(mixture))
    summary("oracle: Gaussian at the MALA mean and covariance", log_weights(oracle))
    inverse = torch.linalg.inv(mixture.scale_tril[:, 0])
    whitened = torch.linalg.eigvalsh(inverse @ covariance @ inverse.transpose(-1, -2))
    shift = (inverse @ (mean - mixture.means[:, 0]).unsqueeze(-1)).norm(dim=(-2, -1))
    print(
        "\nposterior variance / Laplace variance along the eigen-directions, median over images:"
        f" least {float(whitened[:, 0].median()):.2f}, median {float(whitened.median()):.2f},"
        f" largest {float(whitened[:, -1].median()):.1f} (largest over images"
        f" {float(whitened[:, -1].max()):.0f});\nposterior mean from the first mode, in Laplace"
        f" standard deviations: median {float(shift.median()):.1f}, max {float(shift.max()):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    standin = commands.add_parser("write-standin", help="write the 28 x 28 stand-in's idx files")
    standin.add_argument("data_dir", type=Path)
    run = commands.add_parser("compare", help="proposals against the oracle Gaussian")
    run.add_argument("--ckpt", required=True)
    run.add_argument("--data-dir", required=True)
    run.add_argument("--n-images", type=int, default=20)
    run.add_argument("--n-chains", type=int, default=2, help="M fits of the Laplace mixture")
    run.add_argument("--n-steps", type=int, default=100, help="most passes of each fit")
    run.add_argument("--samples", type=int, default=128, help="K")
    run.add_argument("--mala-chains", type=int, default=16)
    run.add_argument("--mala-steps", type=int, default=1000)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if (
        args.command == "compare"
        and args.mala_chains * (args.mala_steps - args.mala_steps // 3) < 200
    ):
        parser.error(
            "--mala-chains x the kept two thirds of --mala-steps must be >= 200 samples per "
            "image, so that the oracle's d x d covariance is estimated (e.g. 16 x 1000)"
        )
    if args.command == "write-standin":
        write_standin(args.data_dir)
    else:
        compare(args)


if __name__ == "__main__":
    main()
