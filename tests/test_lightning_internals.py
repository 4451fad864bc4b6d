"""The Lightning internals this project relies on are still where it expects them.

``lfbm_lightning.runtime.distributed`` replaces the launchers' ``_hydra_subprocess_cmd`` (so DDP
ranks join the current Hydra job) and reads the launcher's ``procs`` (to wait for or kill them);
the W&B logger wrapper reads and sets ``WandbLogger._experiment`` and ``_wandb_init``. These are
private names: pyproject.toml caps pytorch-lightning below the next minor release, and these
tests fail loudly, naming the moved piece, when an upgrade moves one of them.
"""

from __future__ import annotations

import inspect

import pytest
from lightning_fabric.strategies.launchers import subprocess_script as fabric_launcher
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies.launchers import subprocess_script as pl_launcher


@pytest.mark.parametrize("module", [pl_launcher, fabric_launcher], ids=["pytorch", "fabric"])
def test_launchers_build_child_commands_through_the_replaceable_hook(module):
    hook = getattr(module, "_hydra_subprocess_cmd", None)
    assert hook is not None, f"{module.__name__}._hydra_subprocess_cmd is gone"
    assert list(inspect.signature(hook).parameters) == ["local_rank"]
    # the launcher must look the hook up by its module-level name at call time, or replacing
    # it (distributed.ddp_job_scope) has no effect
    source = inspect.getsource(module._SubprocessScriptLauncher._call_children_scripts)
    assert "_hydra_subprocess_cmd(" in source
    assert "self.procs" in inspect.getsource(module._SubprocessScriptLauncher)


def test_wandb_logger_keeps_its_init_kwargs_and_lazy_experiment():
    logger = WandbLogger(offline=True, project="internals-check", save_dir="/nonexistent")
    assert logger._experiment is None  # nothing started before .experiment is read
    # the kwargs later handed to wandb.init (wandb_logging.py sets their "mode" before that)
    assert isinstance(logger._wandb_init, dict)
    assert logger._wandb_init["project"] == "internals-check"
