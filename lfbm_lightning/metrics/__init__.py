"""Evaluation metrics: FID (torch-fidelity Inception-v3), anomaly AUPRC, reconstruction MSE."""

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.metrics.fid import (
    FeatureStats,
    compute_feature_stats,
    fidelity_metrics,
    frechet_distance,
    load_stats,
    reference_stats,
    save_stats,
)
from lfbm_lightning.metrics.inception import resolve_inception_weights, to_uint8_rgb
from lfbm_lightning.metrics.mse import per_image_mse
from lfbm_lightning.metrics.precision_recall import (
    anomaly_report,
    auprc,
    average_precision,
    chance_level,
)

__all__ = [
    "FeatureStats",
    "InceptionWeightsMissing",
    "anomaly_report",
    "auprc",
    "average_precision",
    "chance_level",
    "compute_feature_stats",
    "fidelity_metrics",
    "frechet_distance",
    "load_stats",
    "per_image_mse",
    "reference_stats",
    "resolve_inception_weights",
    "save_stats",
    "to_uint8_rgb",
]
