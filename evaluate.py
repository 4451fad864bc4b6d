"""Evaluate a trained checkpoint: ``python evaluate.py ckpt_path=PATH task=TASK [key=value] ...``.

Tasks (docs/paper.md): synthesis (FID), reconstruction (MSE), inpainting, anomaly (AUPRC),
recovery (MSE on occluded training images). Outputs land in the Hydra run directory:
``metrics.json``, ``results.md``, ``per_example.csv`` and PNG figures.

Examples:
    python evaluate.py ckpt_path=outputs/runs/DAY/TIME/checkpoints/last.ckpt task=reconstruction
    python evaluate.py ckpt_path=... task=anomaly anomaly.n_steps=100
    python evaluate.py ckpt_path=... task=synthesis metrics.inception_weights=/path/weights.pth
    python evaluate.py ckpt_path=... task=inpainting inpainting.box=[2,2,4,4]
    python evaluate.py ckpt_path=... task=recovery paths.data_dir=/data/moved/here
    python evaluate.py ckpt_path=... task=reconstruction devices=4   # 4 GPUs share the work
"""

import hydra
from omegaconf import DictConfig

from lfbm_lightning.cli import report_errors
from lfbm_lightning.evaluation import evaluate


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@report_errors  # project/config errors: one line on stderr, exit 2 (config) or 1
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
