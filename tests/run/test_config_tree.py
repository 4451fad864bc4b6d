"""The config tree printed at the start of a run and saved beside it."""

from __future__ import annotations

from omegaconf import OmegaConf

from lfbm_lightning.run.config_tree import print_config_tree


def test_tree_lists_top_level_nodes_in_order_with_resolved_values(tmp_path, capsys):
    cfg = OmegaConf.create(
        {"seed": 3, "model": {"lr": 0.1, "twice": "${seed}"}, "dataset": {"name": "digits"}}
    )
    print_config_tree(cfg, tmp_path / "config_tree.log", first=["dataset"])
    saved = (tmp_path / "config_tree.log").read_text()
    assert saved.index("dataset") < saved.index("seed") < saved.index("model")
    assert "twice: 3" in saved and "name: digits" in saved and "lr: 0.1" in saved
    assert "twice: 3" in capsys.readouterr().out


def test_a_value_only_a_job_can_resolve_is_shown_as_written(tmp_path):
    cfg = OmegaConf.create({"out": "${hydra:runtime.output_dir}", "paths": {"o": "${out}"}})
    print_config_tree(cfg, tmp_path / "tree.log")
    saved = (tmp_path / "tree.log").read_text()
    assert "${hydra:runtime.output_dir}" in saved and "o: ${out}" in saved
