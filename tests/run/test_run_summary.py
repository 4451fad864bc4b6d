"""The end-of-run summary: final and best val/mse with epochs, wall time, existing files."""

from __future__ import annotations

from pathlib import Path

from lfbm_lightning.run.summary import format_duration, run_summary, time_split


def test_durations_read_naturally():
    assert format_duration(42.4) == "42 s"
    assert format_duration(292) == "4 min 52 s"
    assert format_duration(3 * 3600 + 5 * 60 + 9) == "3 h 05 min"


def test_summary_names_final_and_best_val_mse_and_only_files_that_exist(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"x")
    (tmp_path / "samples.png").write_bytes(b"x")
    per_epoch = {"val/mse": {4: 0.05, 9: 0.03, 14: 0.04}, "train/loss_epoch": {14: 1.0}}
    text = run_summary(tmp_path, "completed", 292, 15, per_epoch, ckpt)
    lines = text.splitlines()
    assert lines[0] == "Run completed in 4 min 52 s (15 epochs)."
    assert lines[1] == "  val/mse: final 0.04 (epoch 15), best 0.03 (epoch 10)"
    assert str(ckpt) in text and str(tmp_path / "samples.png") in text
    assert "curves.png" not in text  # not drawn, so not announced
    assert len(lines) <= 7


def test_time_split_names_each_phase_and_the_rest_with_its_share():
    phases = {"training": 271, "validation": 9, "figures": 3, "evaluation": 0}
    split = time_split(292, phases)
    assert split == (
        "training 4 min 31 s (93%), validation 9 s (3%), figures 3 s (1%), evaluation 0 s (0%), "
        "other 9 s (3%)"
    )
    text = run_summary(Path("."), "completed", 292, 15, {}, Path("missing.ckpt"), phases)
    assert text.splitlines()[1] == f"  time: {split}"
