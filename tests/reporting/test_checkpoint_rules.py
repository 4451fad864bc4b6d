"""Checkpoint rules side by side: a run's periodic held-out AUPRC under last, mean of the last
10, best by FID, best by validation (the default) and best on test (marked), each checked
against the number recomputed from the run's own csv/metrics.csv."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lfbm_lightning.reporting.checkpoint_rules import apply_rules, epoch_values, run_rules
from lfbm_lightning.reporting.sweep_table import gather as gather_main
from tests.conftest import TINY
from tests.helpers.train_runs import run_train
from tests.metrics.conftest import inception_weights  # noqa: F401  (session fixture)

HEADER = "epoch,step,test/auprc,val/auprc,val/fid,val/mse\n"


def test_rules_on_a_known_metrics_csv(tmp_path):
    # 12 evaluations; epoch 3 is logged twice (a resume repeats rows): the later row counts
    rows = [
        f"{e},{e * 5 + 4},{0.5 + 0.01 * e},{0.3 + 0.02 * (e % 4)},{40 - e % 7},\n"
        for e in range(12)
    ]
    rows.insert(3, "3,19,0.99,0.99,1.0,\n")  # the row the resume replaces
    rows.insert(0, "0,4,,,,0.7\n")  # a validation row without the periodic metrics
    path = tmp_path / "csv" / "metrics.csv"
    path.parent.mkdir()
    path.write_text(HEADER + "".join(rows))
    values = epoch_values(path)
    assert values["test/auprc"][3] == pytest.approx(0.53)  # the resumed run's row won
    got = run_rules(tmp_path)
    test = {e: 0.5 + 0.01 * e for e in range(12)}
    assert got["test/auprc@last"] == pytest.approx(test[11])
    last10 = [test[e] for e in range(2, 12)]
    assert got["test/auprc@mean_last_10"] == pytest.approx(statistics.mean(last10))
    assert got["test/auprc@mean_last_10_sd"] == pytest.approx(statistics.stdev(last10))
    assert got["test/auprc@mean_last_10_n"] == 10
    # val/auprc = 0.3 + 0.02 (e % 4): highest 0.36 first at epoch 3
    assert got["test/auprc@best_val_epoch"] == 3
    assert got["test/auprc@best_val"] == pytest.approx(test[3])
    # val/fid = 40 - e % 7: lowest 34 at epoch 6 (and 13, not logged)
    assert got["test/auprc@best_fid_epoch"] == 6
    assert got["test/auprc@best_fid"] == pytest.approx(test[6])
    assert got["test/auprc@best_test"] == pytest.approx(max(test.values()))


def test_a_rule_needs_its_selector_metric():
    values = {"test/auprc": {0: 0.4, 1: 0.6, 2: 0.5}}
    got = apply_rules(values, "test/auprc")
    assert "test/auprc@best_val" not in got and "test/auprc@best_fid" not in got
    assert got["test/auprc@best_test"] == 0.6 and got["test/auprc@last"] == 0.5
    assert apply_rules({}, "test/auprc") == {}


@pytest.fixture(scope="module")
def auprc_run(tmp_path_factory, inception_weights):  # noqa: F811
    """One tiny digits run, digit 9 held out, 20% of its images held back for validation,
    the held-out AUPRC and a small FID (random-weight Inception) every epoch for 3 epochs."""
    root = tmp_path_factory.mktemp("auprc")
    run_dir = root / "run"
    fid = [
        "callbacks.fid.every_n_epochs=1",
        "callbacks.fid.n_samples=12",
        "callbacks.fid.reference_images=12",
        "callbacks.fid.feature_layer=64",
        f"callbacks.fid.inception_weights={inception_weights}",
        f"callbacks.fid.stats_dir={root / 'stats'}",
        "callbacks.fid.best_checkpoint=null",
    ]
    args = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    proc = run_train(
        [
            f"hydra.run.dir={run_dir}",
            "dataset.holdout_digit=9",
            "dataset.holdout_val_fraction=0.2",
            "callbacks.auprc.every_n_epochs=1",
            "callbacks.auprc.n_steps=5",
            "trainer.max_epochs=3",
            "extras.print_config=false",
            "evaluate_after_fit=[anomaly]",
            "evaluate_checkpoint=auprc_best",
            'evaluate_overrides=["device=cpu","progress=false","anomaly.n_steps=5"]',
            *fid,
            *args,
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def recomputed(run_dir: Path) -> dict[str, float]:
    """Each rule by hand from the run's csv/metrics.csv."""
    logged: dict[str, dict[int, float]] = {"test/auprc": {}, "val/auprc": {}, "val/fid": {}}
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        for row in csv.DictReader(handle):
            for name, values in logged.items():
                if row[name]:
                    values[int(row["epoch"])] = float(row[name])
    test, val, fid = logged.values()
    assert sorted(test) == sorted(val) == sorted(fid) == [0, 1, 2]
    return {
        "last": test[2],
        "mean_last_10": statistics.mean(test.values()),
        "best_val": test[max(val, key=val.get)],
        "best_fid": test[min(fid, key=fid.get)],
        "best_test": max(test.values()),
    }


@pytest.mark.slow
def test_gather_prints_each_rule_of_a_real_run(auprc_run):
    want = recomputed(auprc_run)
    with (auprc_run / "csv" / "metrics.csv").open() as handle:
        assert sum(1 for r in csv.DictReader(handle) if r["val/auprc"]) == 3
    gather = [str(Path(sys.executable).parent / "lfbm-gather"), str(auprc_run)]
    plain = subprocess.run([*gather, "--plain"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr[-2000:]
    header, _, cells = plain.stdout.splitlines()[:3]
    columns = dict(zip(header.split(" | "), cells.split(" | "), strict=True))
    for rule, value in want.items():
        label = "test/auprc@best_test (selected on test)" if rule == "best_test" else None
        assert columns[label or f"test/auprc@{rule}"] == f"{value:.4g}", rule
    assert "@best_test: the highest itself: SELECTED ON THE TEST SET" in plain.stdout

    for rule in want:
        out = Path(auprc_run.parent / f"cells_{rule}.csv")
        paper = gather_main(
            [str(auprc_run), "--table", "anomaly_mnist", "--rule", rule, "--csv", str(out)]
        )
        cell = next(
            r
            for r in csv.DictReader(io.StringIO(out.read_text()))
            if (r["row"], r["column"]) == ("lfbm", "digit_9")
        )
        assert cell["metric_key"] == f"test/auprc@{rule}"
        assert float(cell["ours"]) == pytest.approx(want[rule])
        assert f"ours: test/auprc@{rule}" in paper
    assert "- HVAE: Cui, Wu, Han" in paper and "Table 3" in paper


@pytest.mark.slow
def test_the_best_val_checkpoint_scores_the_rules_number(auprc_run):
    """auprc_best.ckpt is the epoch the best_val rule picks, and the anomaly task scoring it
    after fit (the same fit steps, another code path) gives the rule's number."""
    record = json.loads((auprc_run / "metrics.json").read_text())
    rules = run_rules(auprc_run)
    assert record["val/auprc_best_epoch"] == rules["test/auprc@best_val_epoch"]
    assert record["evaluation"] == {"anomaly": "completed"}
    assert record["anomaly/auprc"] == pytest.approx(rules["test/auprc@best_val"], abs=1e-6)
    assert rules["test/auprc@last"] == pytest.approx(record["test/auprc"])
