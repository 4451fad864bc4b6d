"""The recovery FID table holds the FID of prior samples (synthesis/fid) by default, as the
authors' recovery code scores it; a job that scored its recovered images fills it from
recovery/fid (lfbm_lightning/reporting/paper_tables.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml

from lfbm_lightning.reporting.jobs import read_jobs
from lfbm_lightning.reporting.paper_tables import render


def write_job(sweep: Path, name: str, prior: str, metrics: dict) -> None:
    """A finished recovery job: its Hydra choices and config on disk, and its metrics.json."""
    hydra_dir = sweep / name / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"prior={prior}"]))
    choices = {"hydra": {"runtime": {"choices": {"prior": prior}}}}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(choices))
    occlusion = {"kind": "salt_pepper", "coverage": 0.3}
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": {"occlusion": occlusion}}))
    (sweep / name / "metrics.json").write_text(json.dumps(metrics))


def cell(csv_text: str, row: str) -> dict:
    for record in csv.DictReader(io.StringIO(csv_text)):
        if (record["table"], record["row"], record["column"]) == (
            "recovery_celeba_salt_pepper_fid",
            row,
            "salt_pepper_30",
        ):
            return record
    raise AssertionError(row)


def test_recovery_fid_cells_prefer_prior_samples_and_fall_back_to_recovered_images(tmp_path):
    sweep = tmp_path / "sweep"
    both = {"synthesis/fid": 40.0, "synthesis/fid_of": "prior samples", "recovery/fid": 90.0}
    write_job(sweep, "0_flow", "flow", both)
    recovered = {"recovery/fid": 70.0, "recovery/fid_of": "recovered training images"}
    write_job(sweep, "1_ebm", "ebm", recovered)
    text, cells = render(read_jobs(sweep), ["recovery_fid"])

    flow, ebm = cell(cells, "flow"), cell(cells, "ebm")
    assert (flow["metric_key"], float(flow["ours"])) == ("synthesis/fid", 40.0)
    assert (ebm["metric_key"], float(ebm["ours"])) == ("recovery/fid", 70.0)
    assert cell(cells, "gaussian")["ours"] == ""
    assert "ours: recovery/fid, synthesis/fid" in text
