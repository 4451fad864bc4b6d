"""Train a latent-prior generator model: ``python train.py [group=option] [key=value] ...``.

Examples:
    python train.py                                   # flow prior on embedded digits, CPU
    python train.py prior=gaussian trainer.max_epochs=3
    python train.py dataset=celeba trainer.devices=4  # the paper's CelebA 64 setting
    python train.py -m prior=gaussian,flow seed=1,2    # a sweep of 4 jobs (docs/scaling.md)
    python train.py -m prior=gaussian,flow trainer.devices=2 trainer.strategy=ddp
    python train.py debug=fdr                         # one batch through everything
    python train.py -m hparams_search=digits_optuna   # an Optuna search on digits
"""

import hydra
from omegaconf import DictConfig

from lfbm_lightning.cli import report_errors
from lfbm_lightning.training import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
@report_errors  # project/config errors: one line on stderr, exit 2 (config) or 1
def main(cfg: DictConfig) -> float | None:
    _, metrics = train(cfg)
    # a sweeper (hparams_search=...) optimises the value returned here
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
