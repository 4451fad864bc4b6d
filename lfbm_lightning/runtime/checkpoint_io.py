"""How the Trainer writes and reads checkpoint files (a Lightning ``CheckpointIO`` plugin).

**Writing is atomic on every local filesystem.** Lightning's own writer opens the target for
writing (through fsspec, which stages the file in the temp directory and moves it; across
filesystems the move is a copy over the old file). A SIGKILL or a full disk during that copy
leaves a truncated ``last.ckpt`` where the previous good one was. Here the checkpoint is
written to a temp file *next to* the target, ``<dir>/.<name>.tmp-<pid>``, flushed and
``fsync``-ed, then renamed over the target with ``os.replace`` (atomic within a directory), and
the directory is ``fsync``-ed so the rename survives a power cut. Readers see the old file or
the new one, never a partial one. When the write fails (``ENOSPC``, quota, I/O error) the temp
file is removed, the previous checkpoint is untouched, and a one-line
:class:`~lfbm_lightning.errors.CheckpointError` stops the run. A temp file left by a killed
process is removed by :func:`remove_stale_temp_files` when the next run starts.

**Reading never unpickles code.** ``trainer.fit(ckpt_path=...)`` reads the file through
:meth:`AtomicCheckpointIO.load_checkpoint`, which always uses ``torch.load(weights_only=True)``
(whatever ``weights_only`` Lightning passes), and names the file in a one-line error when it
is unreadable.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

from lfbm_lightning.errors import CheckpointError

TEMP_MARK = ".tmp-"


def temp_path(path: Path) -> Path:
    """The temp file a write of ``path`` goes through: ``<dir>/.<name>.tmp-<pid>``."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def _dump(checkpoint: dict[str, Any], file: BinaryIO) -> None:
    """Serialize ``checkpoint`` into an open binary file (the one step that takes time).

    ``torch.save`` serializes into memory first (as Lightning's own writer does): writing
    through torch's zip writer directly would turn a full disk into an opaque
    ``RuntimeError`` instead of an ``OSError`` with its errno.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    file.write(buffer.getbuffer())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into the temp file of ``path``, fsync it, rename it over ``path`` and fsync the
    directory; on OSError the temp file is removed and ``path`` keeps its previous content."""
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` as atomically as a checkpoint (``metrics.json``, whose
    after-fit update must not truncate the training record if the process dies mid-write).

    Raises:
        OSError: the write failed; ``path`` still holds its previous content.
    """
    _atomic_write(Path(path), lambda file: file.write(text.encode()))


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically (see the module docstring).

    Raises:
        CheckpointError: the write failed; ``path`` still holds its previous content.
    """
    path = Path(path)
    try:
        _atomic_write(path, lambda file: _dump(checkpoint, file))
    except OSError as err:
        kept = "the previous one is kept" if path.is_file() else "no earlier one exists"
        raise CheckpointError(
            f"could not write checkpoint {path} ({err.strerror or err}); {kept}. Free space "
            f"in {path.parent} or write the run elsewhere (paths.output_dir=... or "
            "hydra.run.dir=...)"
        ) from err


ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def load_failure(err: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` could not read a file, in one line and
    without torch's advice to load it with ``weights_only=False`` (which runs whatever code a
    crafted file holds): for a refused object, the object; otherwise the first line."""
    text = ANSI_CODES.sub("", str(err))
    refused = re.search(r"WeightsUnpickler error: (.*?)(?:\.? Please use|\n|$)", text)
    if refused:
        reason = f"it holds Python objects, not only tensors ({refused.group(1).strip()})"
    else:
        reason = (text.splitlines() or [""])[0].strip()
        if "weights_only" in reason or "can still be loaded" in reason:
            reason = "not loadable as tensors and plain containers"
    return f"{type(err).__name__}: {reason[:200]}" if reason else type(err).__name__


def safe_load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a one-line error naming the file.

    Raises:
        CheckpointError: the file is missing, truncated, foreign or would need unpickling.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path} (set ckpt_path=... to an existing .ckpt file, e.g. "
            "<run dir>/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is empty, truncated, corrupt or not "
            f"a PyTorch checkpoint ({load_failure(err)})"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} is not an lfbm-lightning checkpoint: it holds a {type(checkpoint).__name__}"
        )
    return checkpoint


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temp files of interrupted writes in ``directory``; returns what was removed.

    Call it only while holding the run directory's lock (no other writer is running).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{TEMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO``: atomic writes next to the target, weights-only reads.

    Pass it to the Trainer: ``pl.Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return safe_load(path, map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
