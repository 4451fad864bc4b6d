"""Training curves read from Lightning's metrics.csv and drawn as a PNG."""

from __future__ import annotations

from PIL import Image

from lfbm_lightning.callbacks.curves import TrainingCurves, plot_curves, read_epoch_metrics

# the shape Lightning's CSVLogger writes: one row per (epoch, step), blanks where not logged
HEADER = "epoch,step,train/loss_step,train/loss_epoch,train/posterior_energy_epoch,val/mse"
CSV = f"""{HEADER},time/elapsed_s
0,4,210.0,,,,
0,9,200.0,205.0,230.0,,12.5
1,14,150.0,,,,
1,19,140.0,145.0,160.0,0.2,25.0
2,29,,120.0,130.0,,40.0
"""


def test_epoch_metrics_take_each_epochs_logged_value(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    series = read_epoch_metrics(path)
    assert series["train/loss_epoch"] == {0: 205.0, 1: 145.0, 2: 120.0}
    assert series["train/loss_step"] == {0: 200.0, 1: 140.0}  # the last step of each epoch
    assert series["val/mse"] == {1: 0.2}
    assert series["time/elapsed_s"] == {0: 12.5, 1: 25.0, 2: 40.0}


def test_curves_png_has_one_panel_per_logged_quantity(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    out = plot_curves(read_epoch_metrics(path), tmp_path / "curves.png")
    width, height = Image.open(out).size
    assert (width, height) == (1260, 360)  # three panels of 4.2 x 3.6 inches at 100 dpi
    only_loss = {"train/loss_epoch": {0: 1.0, 1: 0.5}}
    width, _ = Image.open(plot_curves(only_loss, tmp_path / "one.png")).size
    assert width == 420
    assert plot_curves({"train/loss_step": {0: 1.0}}, tmp_path / "none.png") is None


def test_elapsed_time_carries_over_a_resume():
    curves = TrainingCurves()
    curves.load_state_dict({"elapsed_s": 100.0})
    assert curves.elapsed() == 100.0
    curves.on_train_start(None, None)
    assert 100.0 <= curves.state_dict()["elapsed_s"] < 110.0
