"""The composed run config as a tree on the console (rich) and as a file in the run directory.

Printed at the start of ``train.py`` and ``evaluate.py`` (``extras.print_config``), so that
what runs is on screen and in the job's log, and saved as ``config_tree.log`` beside Hydra's
``.hydra/config.yaml``. Values are resolved; a value that cannot be resolved yet (a Hydra
runtime value outside a job) is shown as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from rich.console import Console


def config_tree(cfg: DictConfig, first: Sequence[str] = ()) -> rich.tree.Tree:
    """A tree with one branch per top-level key (``first`` ones first, then the rest in the
    config's order), each holding that node's YAML."""
    tree = rich.tree.Tree("config", style="bold", guide_style="dim")
    keys = [k for k in first if k in cfg] + [k for k in cfg if k not in first and k != "hydra"]
    for key in keys:
        try:
            text = _yaml(cfg, key, resolve=True)
        except Exception:  # an interpolation only a running job can resolve
            text = _yaml(cfg, key, resolve=False)
        tree.add(str(key), style="bold").add(rich.syntax.Syntax(text.rstrip(), "yaml"))
    return tree


def _yaml(cfg: DictConfig, key: str, resolve: bool) -> str:
    """The YAML of ``cfg[key]`` (a node or a single value), resolved or as written."""
    if resolve:
        value = cfg[key]
        return OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else str(value)
    raw = OmegaConf.to_container(cfg, resolve=False)[key]
    return OmegaConf.to_yaml(raw) if isinstance(raw, dict | list) else str(raw)


def print_config_tree(
    cfg: DictConfig, save_to: str | Path | None = None, first: Sequence[str] = ()
) -> None:
    """Print :func:`config_tree` of ``cfg``; with ``save_to``, also write it (plain text)."""
    tree = config_tree(cfg, first)
    Console(soft_wrap=True).print(tree)
    if save_to is not None:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            Console(file=handle, width=120, color_system=None).print(tree)
