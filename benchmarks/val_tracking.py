"""Does the fast validation fit track the protocol's val/mse over a run? Rank correlation.

For each epoch of a short run, the same validation images are reconstructed from the same
seeded starts twice (:meth:`~lfbm_lightning.inference.PosteriorInference.reconstruct`): the
default val/mse fit (``model.validation``: L-BFGS, at most ``max_passes`` passes per image)
and the paper's protocol (``inference.eval_steps`` noise-free steps). Printed per epoch: both
MSEs and the fast fit's mean passes; then Spearman's rho and Kendall's tau between the two
series over epochs (1: the fast val/mse orders the epochs exactly as the protocol's does).

- ``digits`` (``--holdout-digit``): a real ``train.py`` run (every epoch kept), its val split.
- ``svhn``, ``mnist``, ``celeba``, ``cifar10``: the paper setting's model trained here in
  ``--epochs`` rounds of ``--iters`` iterations on a random teacher's images
  (benchmarks/fast_fit.py; no data files needed), scored after each round.

    python benchmarks/val_tracking.py --setting digits --epochs 10 --n-images 64
    python benchmarks/val_tracking.py --setting mnist --epochs 6 --iters 10 --n-images 32
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fast_fit import brief_training, teacher_images  # noqa: E402
from benchmarks.langevin_speed import run_config  # noqa: E402
from lfbm_lightning.inference.fit import PassCount  # noqa: E402
from lfbm_lightning.models import LatentPriorModel  # noqa: E402
from lfbm_lightning.models.latent_prior_model import validation_fit  # noqa: E402
from lfbm_lightning.runtime.checkpoints import load_model  # noqa: E402


def digits_snapshots(args: argparse.Namespace) -> tuple[list[LatentPriorModel], torch.Tensor]:
    """Models after each epoch of a real digits run, and the first validation images."""
    from hydra import compose, initialize_config_dir

    from lfbm_lightning import CONF_DIR
    from lfbm_lightning.run.training import train

    out = Path(tempfile.mkdtemp(prefix="val_tracking_"))
    overrides = [
        f"paths.output_dir={out}",
        f"trainer.max_epochs={args.epochs}",
        f"callbacks.keep_last_epochs={args.epochs}",
        "trainer.check_val_every_n_epoch=1000",
        "callbacks.image_grids.every_n_epochs=0",
        "extras.print_config=false",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    if args.holdout_digit is not None:
        overrides.append(f"dataset.holdout_digit={args.holdout_digit}")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        model, _ = train(compose("train", overrides))
    val = model.trainer.datamodule.splits["val"]
    images = torch.stack([val[i]["image"] for i in range(min(args.n_images, len(val)))])
    paths = sorted((out / "checkpoints").glob("epoch-*.ckpt"))
    return [load_model(p, torch.device("cpu")) for p in paths], images


def teacher_snapshots(args: argparse.Namespace) -> tuple[list[LatentPriorModel], torch.Tensor]:
    """A paper setting's model after each round of brief training on a teacher's images."""
    config = run_config(args.setting)
    torch.manual_seed(0)
    model = LatentPriorModel(config)
    images = teacher_images(config, args.n_train + args.n_images)
    train, held = images[: args.n_train], images[args.n_train :]
    snapshots = []
    for _ in range(args.epochs):
        model.train()
        brief_training(model, train, args.iters, args.batch)
        snapshots.append(copy.deepcopy(model))
    return snapshots, held


def both_mse(model: LatentPriorModel, x: torch.Tensor) -> tuple[float, float, float]:
    """(fast val/mse, protocol val/mse, the fast fit's mean passes per image) of images x."""
    model.eval()
    validation = model.config["model"].get("validation") or {"fit": "fast", "max_passes": 50}
    fit, steps = validation_fit(validation, model.eval_chain_steps)
    index = torch.arange(x.shape[0])
    out = []
    count = PassCount()
    for name, n_steps in ((fit, steps), ("protocol", model.eval_chain_steps)):
        x_hat, _ = model.posterior.reconstruct(
            model,
            x,
            index=index,
            seed=model.seed,
            n_steps=n_steps,
            fit=name,
            count=count if name == fit else None,
        )
        out.append((x - x_hat).pow(2).mean().item())
    return out[0], out[1], count.passes / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setting", default="digits")
    parser.add_argument("--holdout-digit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iters", type=int, default=10, help="teacher settings: per epoch")
    parser.add_argument("--batch", type=int, default=20, help="teacher settings")
    parser.add_argument("--n-train", type=int, default=200, help="teacher settings")
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    get = digits_snapshots if args.setting == "digits" else teacher_snapshots
    models, images = get(args)
    fast, protocol = [], []
    print("| epoch | val/mse fast | val/mse protocol | fast passes / image |")
    print("|---|---|---|---|")
    for epoch, model in enumerate(models, start=1):
        f, p, passes = both_mse(model, images)
        fast.append(f)
        protocol.append(p)
        print(f"| {epoch} | {f:.5f} | {p:.5f} | {passes:.1f} |", flush=True)
    rho = spearmanr(fast, protocol).statistic
    tau = kendalltau(fast, protocol).statistic
    print(
        f"{args.setting}: Spearman rho {rho:.3f}, Kendall tau {tau:.3f} over {len(models)} epochs"
    )


if __name__ == "__main__":
    main()
