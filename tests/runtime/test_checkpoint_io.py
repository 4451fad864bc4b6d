"""last.ckpt is replaced atomically (a kill or a full disk during the write leaves the previous
file), and every checkpoint the Trainer reads is read weights-only, with one-line errors."""

from __future__ import annotations

import errno
import pickle
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from lfbm_lightning.errors import CheckpointError
from lfbm_lightning.runtime import checkpoint_io
from lfbm_lightning.runtime.checkpoint_io import AtomicCheckpointIO, atomic_save, atomic_write_text
from lfbm_lightning.runtime.checkpoints import load_model
from tests.helpers.train_runs import callback, error_lines, run_train

# two epochs of two batches; epoch 0 ends with a good last.ckpt
RUN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0",
    "inference.n_steps=2",
    "callbacks.image_grids.every_n_epochs=0",
    "callbacks.progress_bar.refresh_rate=0",
]


def stored_epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp-*"))


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_save({"epoch": 0}, target)

    def no_space(checkpoint, file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "_dump", no_space)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous one is kept"):
        atomic_save({"epoch": 1}, target)
    assert torch.load(target, weights_only=True) == {"epoch": 0}
    assert temp_files(tmp_path) == []


def test_metrics_text_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """metrics.json's writer: a write that fails before the rename (here fsync on a full disk)
    leaves the previous text and no temp file; one that succeeds replaces it."""
    target = tmp_path / "metrics.json"
    atomic_write_text(target, '{"epoch": 0}')

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_io.os, "fsync", full_disk)
        with pytest.raises(OSError, match="No space left"):
            atomic_write_text(target, '{"epoch": 1, "evaluation": {}}')
    assert target.read_text() == '{"epoch": 0}'
    assert temp_files(tmp_path) == []
    atomic_write_text(target, '{"epoch": 2}')
    assert target.read_text() == '{"epoch": 2}'


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_lightning_reads_through_a_weights_only_loader(tmp_path, capsys):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "payload": Exploit()}))
    with pytest.raises(CheckpointError, match=f"could not read checkpoint {evil}"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert "code ran" not in capsys.readouterr().out


@pytest.fixture
def shm_dir():
    """A run directory on another filesystem than the temp dir (/dev/shm, a tmpfs)."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    path = Path("/dev/shm") / f"lfbm-test-{uuid.uuid4().hex}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_sigkill_during_the_write_leaves_the_previous_last_ckpt(shm_dir):
    killer = callback("KillDuringCheckpointWrite")
    result = run_train([f"hydra.run.dir={shm_dir}", *RUN, *killer])
    assert result.returncode == -9, result.stderr[-2000:]
    checkpoints = shm_dir / "checkpoints"
    assert stored_epoch(checkpoints / "last.ckpt") == 0  # epoch 1's write never replaced it
    load_model(checkpoints / "last.ckpt")
    assert len(temp_files(checkpoints)) == 1  # the half-written temp file, beside the target

    last = checkpoints / "last.ckpt"
    resume = [f"hydra.run.dir={shm_dir}", *RUN, f"ckpt_path={last}"]
    result = run_train(resume)
    assert result.returncode == 0, result.stderr[-2000:]
    assert stored_epoch(last) == 1
    assert temp_files(checkpoints) == []  # the next run removed the stale temp file


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 6 MiB tmpfs (three checkpoints of the digits model fit, barely)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_keeps_the_previous_file(tiny_tmpfs):
    run = tiny_tmpfs / "run"
    filler = callback("FillDiskBeforeSave")
    result = run_train([f"hydra.run.dir={run}", *RUN, *filler])
    assert result.returncode == 1, result.stderr[-2000:]
    last = run / "checkpoints" / "last.ckpt"
    message = error_lines(result.stderr)
    assert len(message) == 1, result.stderr[-2000:]
    assert f"could not write checkpoint {last} (No space left on device)" in message[0]
    assert "the previous one is kept" in message[0]
    assert "Traceback" not in result.stderr
    assert stored_epoch(last) == 0
    load_model(last)
    assert temp_files(last.parent) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["empty", "random", "foreign"])
def test_unreadable_ckpt_path_is_one_line_naming_the_file(tmp_path, kind):
    bad = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "random":
        bad.write_bytes(bytes(range(256)) * 8)
    else:
        torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, bad)
    run = tmp_path / "run"
    result = run_train([f"hydra.run.dir={run}", *RUN, f"ckpt_path={bad}"])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(bad) in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (run / "checkpoints").exists()
