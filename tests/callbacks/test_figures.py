"""Figures reach every logger that stores images, read back from each logger's own files."""

from __future__ import annotations

import numpy as np
import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lfbm_lightning.callbacks.figures import log_figure

PICTURE = np.zeros((20, 30, 3), dtype=np.uint8)
PICTURE[5:10, :, 0] = 255  # a red band, to recognise the image


def test_tensorboard_stores_the_figure(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    logger = TensorBoardLogger(tmp_path, name="tb")
    took = log_figure([CSVLogger(tmp_path), logger], "images/samples", PICTURE, step=3)
    assert took == ["TensorBoardLogger"]  # the CSV logger stores no images
    logger.experiment.flush()
    events = event_accumulator.EventAccumulator(logger.log_dir)
    events.Reload()
    (image,) = events.Images("images/samples")
    assert (image.step, image.width, image.height) == (3, 30, 20)


def test_mlflow_stores_the_figure_as_an_artifact(tmp_path):
    pytest.importorskip("mlflow")
    from PIL import Image
    from pytorch_lightning.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name="figures",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=str(tmp_path / "artifacts"),
    )
    assert log_figure([logger], "curves", PICTURE, step=7) == ["MLFlowLogger"]
    (stored,) = (tmp_path / "artifacts").rglob("curves_step0000007.png")
    assert np.array_equal(np.asarray(Image.open(stored).convert("RGB")), PICTURE)
