"""The device of the GPU check (tests/cuda, ``benchmarks/gpu_check.sh``) and its records.

``LFBM_TEST_DEVICE`` (default ``cuda``) names the device the tests run on; ``cpu`` runs them on
the CPU as a dry run of the check (``gpu_check.sh --cpu``), where what only CUDA has (CUDA
graphs, NCCL) is not asserted. Without the device the tests skip. With ``LFBM_GPU_CHECK_OUT``
set, :func:`record` writes what a test measured to ``<dir>/<name>.json`` for the summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

DEVICE = os.environ.get("LFBM_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE == "cuda"
ACCELERATOR = "gpu" if ON_CUDA else "cpu"

needs_device = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (LFBM_TEST_DEVICE=cpu runs the check on the CPU as a dry run)",
)


def record(name: str, data: dict) -> None:
    """Write ``data`` to ``$LFBM_GPU_CHECK_OUT/<name>.json`` when that variable is set."""
    out = os.environ.get("LFBM_GPU_CHECK_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
