"""The Inception weights file is read with torch.load(weights_only=True) and checked against
the network before torch-fidelity sees it: a crafted pickle runs no code, a wrong file is one
clear error naming the file and metrics.inception_weights."""

from __future__ import annotations

import pathlib

import pytest
import torch

from lfbm_lightning.errors import InceptionWeightsMissing
from lfbm_lightning.metrics import fid, inception


class TouchOnLoad:
    """Unpickling this object would create ``marker`` (what a malicious file could do)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def crafted(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "weights.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": TouchOnLoad(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_a_crafted_pickle_runs_no_code_and_names_the_file(crafted):
    path, marker = crafted
    inception._cached_extractor.cache_clear()
    with pytest.raises(InceptionWeightsMissing, match="metrics.inception_weights=") as excinfo:
        fid.compute_feature_stats(torch.zeros(2, 3, 8, 8), str(path), feature_layer="64")
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    # KID / IS go through torch-fidelity's own loader: the file is refused before that
    with pytest.raises(InceptionWeightsMissing, match=str(path)):
        fid.fidelity_metrics(torch.zeros(10, 3, 8, 8), None, str(path), fid=False, isc=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"fc.weight": torch.zeros(3, 3)}, id="wrong-keys-and-shapes"),
        pytest.param([torch.zeros(2)], id="not-a-mapping"),
    ],
)
def test_a_file_that_is_not_the_inception_state_dict_is_named(content, tmp_path):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    inception._cached_extractor.cache_clear()
    with pytest.raises(InceptionWeightsMissing, match="not an Inception-v3 FID state dict"):
        inception.feature_extractor(str(path), "64")


def test_random_bytes_are_named(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InceptionWeightsMissing, match=str(path)):
        inception.load_inception_weights(str(path))


def test_the_verified_weights_are_the_ones_in_use(inception_weights):
    inception._cached_extractor.cache_clear()
    extractor = inception.feature_extractor(inception_weights, "64")
    stored = torch.load(inception_weights, weights_only=True)
    for name, value in extractor.state_dict().items():
        assert torch.equal(value, stored[name]), name
