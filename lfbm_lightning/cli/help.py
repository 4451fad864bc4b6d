"""``--help`` of the two commands: what they do, the common commands, and their own options.

Hydra's own help lists every config group under the config directory, so the evaluation
command would show the training groups and not its tasks. These pages are built from the
config directory itself (a new option or task appears with no edit here): the groups of the
training config's defaults list with their options, and for ``evaluate`` each task with its
settings and their comments. ``--hydra-help`` still shows Hydra's own flags.
"""

from __future__ import annotations

from pathlib import Path

import yaml

TRAIN_INTRO = """\
lfbm-train: train a latent-prior generator (LFBM: a normalizing-flow prior on the latent
vector of a ConvNet generator, learned by maximum likelihood with short-run Langevin
inference; the ABP, SRI, LEBM, LFBM-VAE, VAE, 2sVAE and RAE rows of its tables behind the same
options: +experiment/paper/method=NAME).

  python train.py [group=option ...] [key=value ...]     (or: lfbm-train ...)

Common commands:
  python train.py                                  flow prior on the embedded digits, CPU
  python train.py dataset=celeba trainer.devices=4  the paper's CelebA 64 setting, 4 GPUs
  python train.py prior=ebm trainer.max_epochs=3    the LEBM baseline, 3 epochs
  python train.py ckpt_path=RUN/checkpoints/last.ckpt   resume a stopped run
  python train.py -m prior=gaussian,flow seed=1,2   a sweep of 4 jobs
  python train.py debug=fdr                         one batch through everything
  python train.py --cfg job                         print the composed config and stop
"""

EVALUATE_INTRO = """\
lfbm-evaluate: run one of the paper's evaluation tasks on a trained checkpoint; the model and
its data come from the checkpoint alone. Writes metrics.json, results.md, per_example.csv and
figures to the run directory.

  python evaluate.py ckpt_path=PATH task=TASK [TASK.key=value ...]   (or: lfbm-evaluate ...)

Common commands:
  python evaluate.py ckpt_path=RUN/checkpoints/last.ckpt task=reconstruction
  python evaluate.py ckpt_path=RUN/checkpoints/ task=anomaly   mean +/- sd over epoch-*.ckpt
  python evaluate.py ckpt_path=... task=synthesis metrics.inception_weights=/path/weights.pth
  python evaluate.py ckpt_path=... task=recovery recovery.chain=fit
  python evaluate.py ckpt_path=... task=reconstruction devices=4   4 processes share the work
"""

OUTRO = "Any key of the composed config can be set (--cfg job prints them); --hydra-help: Hydra."


def _options(group_dir: Path) -> list[str]:
    return sorted(p.stem for p in group_dir.glob("*.yaml"))


def _first_comment(path: Path) -> str:
    """The first comment line of a YAML file (its one-line description), without '#'."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("#").strip()
    return ""


def train_help(conf_dir: Path) -> str:
    """The page of ``train.py --help``: the groups of ``train.yaml``'s defaults list."""
    defaults = yaml.safe_load((conf_dir / "train.yaml").read_text())["defaults"]
    groups = [next(iter(d)) for d in defaults if isinstance(d, dict)]
    lines = [TRAIN_INTRO, "Config groups (group=option):"]
    for group in groups:
        options = _options(conf_dir / group) if group != "experiment" else _nested(conf_dir)
        if options:
            lines.append(f"  {group:<15}{', '.join(options)}")
    return "\n".join(lines) + "\n\n" + OUTRO


def _nested(conf_dir: Path) -> list[str]:
    """The experiment options, subfolders included (``paper/method/vae``)."""
    root = conf_dir / "experiment"
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def evaluate_help(conf_dir: Path) -> str:
    """The page of ``evaluate.py --help``: every task with its settings and their comments."""
    lines = [EVALUATE_INTRO, "Tasks (task=NAME; its settings as NAME.key=value):"]
    for path in sorted((conf_dir / "task").glob("*.yaml")):
        lines.append(f"  {path.stem:<15}{_first_comment(path).split(' (')[0]}")
        node = yaml.safe_load(path.read_text()).get(path.stem) or {}
        comments = _key_comments(path)
        for key, value in node.items():
            shown = "null" if value is None else value
            lines.append(f"      {key}={shown}  {comments.get(key, '')}".rstrip())
    lines += ["", "Settings of every task: device, devices, num_nodes, seed, batch_size,"]
    lines += ["  paths.data_dir, metrics.* (Inception weights for FID).", "", OUTRO]
    return "\n".join(lines)


def _key_comments(path: Path) -> dict[str, str]:
    """The trailing comment of each ``  key: value  # comment`` line of a YAML file."""
    comments = {}
    for line in path.read_text().splitlines():
        body, _, comment = line.partition("#")
        if comment and ":" in body and body.startswith("  ") and not body.startswith("   "):
            comments[body.split(":")[0].strip()] = comment.strip()
    return comments
