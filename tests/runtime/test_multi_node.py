"""The manual multi-node recipe of docs/scaling.md on one machine: the same command started
twice with ``NODE_RANK=0`` and ``NODE_RANK=1`` (one process per "node", gloo over 127.0.0.1)
into one shared run directory. Only node 0's process locks and prepares the directory; the
node-1 process, which has no ``RANK`` or ``LOCAL_RANK`` before fit, must not contend for it."""

from __future__ import annotations

import json

import pytest

from lfbm_lightning.runtime.distributed import is_first_process
from tests.conftest import TINY
from tests.runtime.test_ddp import free_port, start_train

RUN = [
    *TINY,
    "trainer.accelerator=cpu",
    "trainer.strategy=ddp",
    "trainer.devices=1",
    "trainer.num_nodes=2",
    "trainer.limit_val_batches=0",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
    "extras.print_config=false",
]


@pytest.mark.parametrize(
    ("env", "first"),
    [
        ({}, True),
        ({"NODE_RANK": "0"}, True),
        ({"NODE_RANK": "1"}, False),  # the process a user starts on node 1
        ({"GROUP_RANK": "1", "LOCAL_RANK": "0"}, False),
        ({"NODE_RANK": "0", "LOCAL_RANK": "1"}, False),
    ],
)
def test_the_first_process_is_local_rank_0_of_node_0(monkeypatch, env, first):
    for key in ("NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        "lfbm_lightning.runtime.distributed.rank_zero_only.rank", int(env.get("LOCAL_RANK", 0))
    )
    assert is_first_process() is first


@pytest.mark.slow
def test_two_nodes_share_one_run_directory_and_node_0_holds_its_lock(tmp_path):
    run = tmp_path / "run"
    address = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    nodes = [
        start_train(
            [*RUN, f"hydra.run.dir={run}"], tmp_path / f"node{n}.log", NODE_RANK=str(n), **address
        )
        for n in (0, 1)
    ]
    for n, node in enumerate(nodes):
        try:
            code = node.wait(timeout=600)
        except Exception:
            for process in nodes:
                process.kill()
            raise
        assert code == 0, (n, (tmp_path / f"node{n}.log").read_text()[-3000:])
    assert (run / ".lock").read_text().strip() == str(nodes[0].pid)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["progress"]["global_step"] > 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
