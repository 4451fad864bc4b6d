"""Evaluate a trained checkpoint: ``python evaluate.py ckpt_path=PATH task=TASK [key=value] ...``.

The same command as ``lfbm-evaluate`` (:func:`lfbm_lightning.cli.commands.evaluate_command`),
runnable from a checkout. ``python evaluate.py --help`` lists the tasks and their options
(docs/paper.md#evaluation-protocols). Outputs land in the Hydra run directory, a new one
(``outputs/eval/<task>/<date>/<time>``, or an empty ``hydra.run.dir``: one holding files is
refused): ``metrics.json``, ``results.md``, ``per_example.csv`` and PNG figures.

Examples:
    python evaluate.py ckpt_path=outputs/runs/DAY/TIME/checkpoints/last.ckpt task=reconstruction
    python evaluate.py ckpt_path=... task=anomaly anomaly.n_steps=100
    python evaluate.py ckpt_path=RUN/checkpoints/ task=anomaly    # mean +/- sd over epochs
    python evaluate.py ckpt_path=... task=synthesis metrics.inception_weights=/path/weights.pth
    python evaluate.py ckpt_path=... task=recovery recovery.chain=fit
    python evaluate.py ckpt_path=... task=reconstruction devices=4   # 4 GPUs share the work
"""

from lfbm_lightning.cli.commands import evaluate_command

if __name__ == "__main__":
    evaluate_command()
