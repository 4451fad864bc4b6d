"""W&B logging: the online/offline decision, the fallback, and what an offline run holds.

Nothing here reaches a W&B server: runs are offline, and the "server" of the fallback tests is
a socket on 127.0.0.1 (closed, or accepting connections and never answering).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from wandb.proto import wandb_internal_pb2

from lfbm_lightning.run.wandb_logging import (
    OFFLINE_HINT,
    has_api_key,
    reachable,
    resolve_mode,
    wandb_logger,
)
from tests.conftest import REPO, TINY

KEY = "k" * 40
BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks


def read_records(path: Path) -> dict[str, list]:
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log of 32 KiB blocks), by
    type."""
    data = path.read_bytes()
    records: dict[str, list] = defaultdict(list)
    pos, chunk = 7, b""  # file header: ':W&B', magic, version
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer too short for a record header
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records[record.WhichOneof("record_type")].append(record)
            chunk = b""
    return records


def wandb_records(run_dir: Path, timeout: float = 60) -> dict[str, list]:
    """The records of the (single) offline W&B run under ``run_dir``, once complete.

    W&B's service process writes the file; under load it may still be writing when the
    training process has returned, so wait (up to ``timeout`` s) for the run's exit record.
    """
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while not (records := read_records(path))["exit"] and time.monotonic() < deadline:
        time.sleep(0.5)
    return records


def item_key(item) -> str:
    """The key of a history, summary or config item (wandb fills ``key`` or ``nested_key``)."""
    return item.key or "/".join(item.nested_key)


def logged_history(records: dict[str, list]) -> dict[str, list[float]]:
    """Every numeric value logged per key, in order."""
    history = defaultdict(list)
    for record in records["history"]:
        for item in record.history.item:
            value = json.loads(item.value_json)
            if isinstance(value, int | float):
                history[item_key(item)].append(value)
    return history


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture(autouse=True)
def fresh_probe():
    reachable.cache_clear()
    yield
    reachable.cache_clear()


def test_explicit_modes_are_kept(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert resolve_mode("offline", env) == ("offline", None)
    assert resolve_mode("disabled", env) == ("disabled", None)
    assert resolve_mode(None, {**env, "WANDB_MODE": "dryrun"}) == ("offline", None)
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        resolve_mode("sometimes", env)


def test_without_an_api_key_online_falls_back_to_offline(tmp_path):
    mode, reason = resolve_mode("online", {"HOME": str(tmp_path)})
    assert mode == "offline"
    assert "API key" in reason


def test_api_keys_are_found_in_the_environment_and_in_netrc(tmp_path):
    url = "https://api.example.org"
    assert has_api_key({"HOME": str(tmp_path), "WANDB_API_KEY": KEY}, url)
    assert not has_api_key({"HOME": str(tmp_path)}, url)
    (tmp_path / ".netrc").write_text(f"machine api.example.org\n  login user\n  password {KEY}\n")
    assert has_api_key({"HOME": str(tmp_path)}, url)
    assert not has_api_key({"HOME": str(tmp_path)}, "https://other.example.org")
    assert not has_api_key({"HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}, url)


def test_an_unreachable_server_means_offline_and_a_listening_one_online(tmp_path, silent_server):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": KEY}
    start = time.monotonic()
    dead = resolve_mode(None, {**env, "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"})
    assert dead[0] == "offline" and "cannot be reached" in dead[1]
    assert time.monotonic() - start < 3
    assert resolve_mode(None, {**env, "WANDB_BASE_URL": silent_server}) == ("online", None)


def test_building_the_logger_checks_the_mode_but_contacts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    logger = wandb_logger(save_dir=str(tmp_path), mode="online")
    assert logger._experiment is None
    assert reachable.cache_info().currsize == 0  # decided when (and where) the run starts
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        wandb_logger(save_dir=str(tmp_path), mode="sometimes")


@pytest.mark.slow
def test_a_server_that_never_answers_costs_the_init_timeout_then_offline(
    tmp_path, silent_server, monkeypatch, caplog
):
    for key in ("WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    logger = wandb_logger(save_dir=str(tmp_path / "run"), init_timeout=2)
    start = time.monotonic()
    run = logger.experiment
    elapsed = time.monotonic() - start
    run.log({"x": 1.0})
    logger.finalize("success")
    assert run.settings.mode == "offline"
    assert elapsed < 60, elapsed
    fallbacks = [r for r in caplog.records if "could not start online" in r.getMessage()]
    assert len(fallbacks) == 1
    assert logged_history(wandb_records(tmp_path / "run"))["x"] == [1.0]


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode in ("L", "RGB", "RGBA")
        return np.asarray(image)


@pytest.mark.slow
def test_train_py_logs_config_metrics_images_and_checkpoints_to_an_offline_run(tmp_path):
    """logger=csv_wandb asking for online without an API key: one warning, an offline run with
    the config, the metrics, the sample and reconstruction grids and the checkpoints."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(
        HOME=str(tmp_path),
        PYTHONWARNINGS="ignore",
        WANDB_MODE="offline",  # overridden by logger.wandb.mode=online below
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
    )
    args = [
        f"hydra.run.dir={out}",
        *TINY,
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        "callbacks.checkpoint.save_top_k=1",  # the best checkpoint too (opt-in)
    ]
    args += ["logger=csv_wandb", "logger.wandb.mode=online", "logger.wandb.log_model=true"]
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count(OFFLINE_HINT) == 1
    assert output.count("WARNING") == 1, [line for line in output.splitlines() if "WARN" in line]

    records = wandb_records(out)
    (config,) = records["config"]
    logged_config = {item_key(item): json.loads(item.value_json) for item in config.config.update}
    assert logged_config["config"]["prior"]["_target_"].endswith("FlowPrior")
    assert logged_config["config"]["inference"]["n_steps"] == 3  # the run's own overrides
    history = logged_history(records)
    metrics = json.loads((out / "metrics.json").read_text())
    assert history["val/mse"][-1] == pytest.approx(metrics["val/mse"])
    assert history["train/loss_epoch"][-1] == pytest.approx(metrics["train/loss_epoch"])
    assert len(history["train/loss_step"]) == 2

    (media,) = out.glob("wandb/offline-run-*/files/media/images")
    for name in ("samples", "reconstructions"):
        (png,) = media.rglob(f"{name}_*.png")
        pixels = png_pixels(png)
        assert pixels.dtype == np.uint8
        assert pixels.max() > 100 and pixels.std() > 10, name  # not the all-black float bug
    artifacts = [record.artifact for record in records["artifact"]]
    assert len(artifacts) == 2  # the best and the last checkpoint
    for artifact in artifacts:
        assert artifact.type == "model"
        assert [entry.path for entry in artifact.manifest.contents] == ["model.ckpt"]
