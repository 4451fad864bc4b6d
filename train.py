"""Train a latent-prior generator model: ``python train.py [group=option] [key=value] ...``.

The same command as ``lfbm-train`` (:func:`lfbm_lightning.cli.commands.train_command`), runnable
from a checkout. ``python train.py --help`` lists the config groups and common commands.

Examples:
    python train.py                                   # flow prior on embedded digits, CPU
    python train.py prior=gaussian trainer.max_epochs=3
    python train.py dataset=celeba trainer.devices=4  # the paper's CelebA 64 setting
    python train.py -m prior=gaussian,flow seed=1,2    # a sweep of 4 jobs (docs/scaling.md)
    python train.py -m prior=gaussian,flow trainer.devices=2 trainer.strategy=ddp
    python train.py debug=fdr                         # one batch through everything
    python train.py -m hparams_search=digits_optuna   # an Optuna search on digits
"""

from lfbm_lightning.cli.commands import train_command

if __name__ == "__main__":
    train_command()
