"""Generator passes and quality of the fast fit against the paper's evaluation protocol.

For each setting, the same images and the same seeded N(0, I) starts are fitted twice through
:meth:`~lfbm_lightning.inference.PosteriorInference.fit`: ``protocol`` (20 x K noise-free steps
of ``inference.eval_step_size``, docs/paper.md#reconstruction-mse) and ``fast`` (per-image
L-BFGS with the stopping rule, capped at 20 x K passes; lfbm_lightning/inference/fit.py).
Printed: the mean generator passes per image (counted exactly), their ratio, the MSE ([-1, 1]
scale) of each fit, the fast fit's final energy minus the protocol's per image (mean / max,
nats), and, for a digits checkpoint with a held-out digit, the AUPRC of -log p(x, z).
"Passes to reach": a second, instrumented run of the fast fit (checked to give the same z)
records the passes each image took until its energy was first at or below the protocol's
final energy ("reached" counts those that got there; the others count with all their
passes), so the ratio to reach compares the two fits at the protocol's own level of fit, also
where the protocol is far from converged (CIFAR-10).

Models:
- ``digits``: a ``train.py`` checkpoint (``--digits-ckpt``; with ``dataset.holdout_digit`` its
  test split has the anomaly labels), scored on all of its evaluation split.
- ``synthetic``: ``dataset=synthetic``, trained here briefly on its training split.
- ``svhn``, ``celeba``, ``cifar10``: the paper settings' models, trained here briefly on
  images of a random teacher (the same architecture with other random weights, drawn with
  ``--teacher-seed``; no dataset files needed).

Brief training: ``--train-iters`` iterations of the paper's recipe (K-step Langevin posterior,
then one Adam step on the generator and the prior), batch ``--batch``.

The fast fit's constants were chosen on one digits checkpoint (``train.py seed=1
dataset.holdout_digit=3 trainer.max_epochs=8``) and the default teacher's images; report on
others, e.g.

    python train.py seed=2 dataset.holdout_digit=5 trainer.max_epochs=8
    python benchmarks/fast_fit.py --settings digits synthetic --digits-ckpt last.ckpt \
        --protocol-steps 400
    python benchmarks/fast_fit.py --settings svhn celeba cifar10 --n-images 16 --n-train 100 \
        --train-iters 10 --batch 10 --teacher-seed 7

Counts and quality only: no wall-clock (which needs an idle machine). ``--csv PATH`` also
appends each row to a CSV file.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.langevin_speed import run_config  # noqa: E402
from lfbm_lightning.inference.fit import fast_fit  # noqa: E402
from lfbm_lightning.inference.posterior import seeded_normal  # noqa: E402
from lfbm_lightning.langevin import frozen_parameters  # noqa: E402
from lfbm_lightning.metrics.mse import per_image_mse  # noqa: E402
from lfbm_lightning.metrics.precision_recall import auprc  # noqa: E402
from lfbm_lightning.models import LatentPriorModel  # noqa: E402
from lfbm_lightning.models.energy import reconstruction_energy  # noqa: E402
from lfbm_lightning.run.evaluation import build_datamodule  # noqa: E402
from lfbm_lightning.runtime.checkpoints import load_model  # noqa: E402

TEACHER_SEED = 123


def brief_training(model: LatentPriorModel, images: torch.Tensor, iters: int, batch: int):
    """``iters`` iterations of the paper's recipe on ``images`` (N, C, H, W), in place."""
    params = list(model.generator.parameters()) + list(model.prior.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    for _ in range(iters):
        x = images[torch.randint(len(images), (batch,), generator=rng)]
        z = model.infer(x, rng=rng).z
        loss = reconstruction_energy(x, model.generator(z), model.sigma).mean()
        loss = loss + model.prior.loss(z, rng=rng)
        opt.zero_grad()
        loss.backward()
        opt.step()


def teacher_images(config: dict, n: int, seed: int = TEACHER_SEED) -> torch.Tensor:
    """g*(z), z ~ N(0, I): ``n`` images of a random generator of the setting's architecture,
    its weights drawn with ``seed``."""
    torch.manual_seed(seed)
    teacher = LatentPriorModel(config)
    z = torch.randn(n, teacher.latent_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return teacher.generator(z)


def split_images(config: dict, split: str) -> torch.Tensor:
    """Every image of a split of the setting's own data module."""
    datamodule = instantiate(config["dataset"])
    datamodule.setup("fit")
    return torch.stack([item["image"] for item in datamodule.splits[split]])


def setting_model(name: str, args: argparse.Namespace):
    """(model, evaluation images (N, C, H, W), their labels or None) of a setting."""
    if name == "digits":
        if args.digits_ckpt is None:
            raise SystemExit("error: the digits row needs --digits-ckpt (a train.py checkpoint)")
        model = load_model(Path(args.digits_ckpt), torch.device("cpu"))
        datamodule = build_datamodule(model.config, None)
        split = datamodule.splits[datamodule.evaluation_split]
        items = [split[i] for i in range(len(split))]  # all of it: the held-out digit is last
        labels = torch.tensor([int(item["label"]) for item in items])
        labels = labels if model.config["dataset"].get("holdout_digit") is not None else None
        return model, torch.stack([item["image"] for item in items]), labels
    config = run_config(name)
    torch.manual_seed(0)
    model = LatentPriorModel(config)
    if name == "synthetic":
        train, test = split_images(config, "train"), split_images(config, "test")
    else:
        images = teacher_images(config, args.n_train + args.n_images, args.teacher_seed)
        train, test = images[: args.n_train], images[args.n_train :]
    brief_training(model, train, args.train_iters, args.batch)
    return model, test[: args.n_images], None


def passes_to_reach(
    model: LatentPriorModel, x: torch.Tensor, z0: torch.Tensor, target: torch.Tensor, fast
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rerun the fast fit of x (N, C, H, W) from z0 with an energy that records, per image, the
    passes until its energy first reached ``target`` (N,) (the protocol's final energy), or -1
    if it never did. Returns (those passes (N,), the rerun's z); the caller checks that the
    rerun is the fit it measured (the fit is deterministic)."""
    count = torch.zeros(len(x), dtype=torch.long)
    reached = torch.full((len(x),), -1, dtype=torch.long)

    def energy_of(rows: torch.Tensor):
        energy_fn = model.posterior_energy(x[rows], None)

        def recording(z: torch.Tensor) -> torch.Tensor:
            energy = energy_fn(z)
            count[rows] += 1
            first = (energy.detach() <= target[rows]) & (reached[rows] < 0)
            reached[rows[first]] = count[rows[first]]
            return energy

        return recording

    with frozen_parameters((model.generator, model.prior)):
        rerun = fast_fit(z0, energy_of, fast.passes.max().item())
    return reached, rerun.z


def compare(name: str, args: argparse.Namespace) -> dict[str, object]:
    model, x, labels = setting_model(name, args)
    model.eval()
    n_steps, step_size = model.posterior.eval_settings(args.protocol_steps, None)
    z0 = seeded_normal(torch.arange(len(x)), 1, model.latent_dim)
    row: dict[str, object] = {"setting": name, "n_images": len(x), "protocol_steps": n_steps}
    fits, energies = {}, {}
    for fit in ("protocol", "fast"):
        result = fits[fit] = model.posterior.fit(model, x, None, z0, n_steps, step_size, fit)
        with torch.no_grad():
            x_hat = model.generator(result.z)
            energies[fit] = reconstruction_energy(x, x_hat, model.sigma)
            energies[fit] = energies[fit] - model.prior.log_prob(result.z)
            row[f"{fit}_passes"] = float(result.passes.float().mean())
            row[f"{fit}_mse"] = float(per_image_mse(x, x_hat).mean())
            if labels is not None:
                row[f"{fit}_auprc"] = auprc(energies[fit].numpy(), labels.numpy())
    row["pass_ratio"] = row["protocol_passes"] / row["fast_passes"]
    row["mse_change"] = row["fast_mse"] / row["protocol_mse"] - 1
    gap = energies["fast"] - energies["protocol"]
    row["energy_gap_mean"], row["energy_gap_max"] = float(gap.mean()), float(gap.max())
    reached, rerun_z = passes_to_reach(model, x, z0, energies["protocol"], fits["fast"])
    if not torch.equal(rerun_z, fits["fast"].z):
        raise SystemExit(f"error: {name}: the instrumented rerun of the fast fit differs")
    row["reached"] = int((reached >= 0).sum())
    # images that never reach the protocol's energy count with all their passes
    reach = torch.where(reached >= 0, reached, fits["fast"].passes)
    row["reach_passes"] = float(reach.float().mean())
    row["reach_ratio"] = row["protocol_passes"] / row["reach_passes"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["digits", "synthetic"])
    parser.add_argument("--digits-ckpt", default=None)
    parser.add_argument("--protocol-steps", type=int, default=None, help="default: eval_steps")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--train-iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--teacher-seed", type=int, default=TEACHER_SEED, help="the paper settings' images"
    )
    parser.add_argument("--csv", type=Path, default=None, help="append the rows to this CSV")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        "| setting | images | protocol passes | fast passes | ratio | protocol MSE | fast MSE "
        "| MSE change | E gap mean / max | reached | passes to reach | ratio to reach "
        "| protocol AUPRC | fast AUPRC |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.settings:
        r = compare(name, args)
        au = [f"{r[k]:.4f}" if k in r else "-" for k in ("protocol_auprc", "fast_auprc")]
        print(
            f"| {name} | {r['n_images']} | {r['protocol_passes']:.0f} | {r['fast_passes']:.1f} "
            f"| {r['pass_ratio']:.2f}x | {r['protocol_mse']:.5f} | {r['fast_mse']:.5f} "
            f"| {r['mse_change']:+.2%} | {r['energy_gap_mean']:+.2f} / {r['energy_gap_max']:+.2f} "
            f"| {r['reached']}/{r['n_images']} | {r['reach_passes']:.1f} "
            f"| {r['reach_ratio']:.2f}x "
            f"| {au[0]} | {au[1]} |",
            flush=True,
        )
        if args.csv is not None:
            append_row(args.csv, r)


def append_row(path: Path, row: dict[str, object]) -> None:
    """Append ``row`` to the CSV at ``path`` (header first when the file is new); AUPRC
    columns stay empty for settings without anomaly labels."""
    fields = ["setting", "n_images", "protocol_steps", "protocol_passes", "fast_passes"]
    fields += ["pass_ratio", "protocol_mse", "fast_mse", "mse_change"]
    fields += ["energy_gap_mean", "energy_gap_max", "reached", "reach_passes", "reach_ratio"]
    fields += ["protocol_auprc", "fast_auprc"]
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
