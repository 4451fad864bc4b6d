"""What every file-based data set shares: its expected files and the errors they raise.

A file-based data set is one module (``cifar10.py``, ``svhn.py``, ``celeba.py``, ``mnist.py``)
holding a :class:`DataFiles` (the files it needs under the data directory ``paths.data_dir``
and their official source), its reader, its torchvision download and its data module (the
tests write a tiny copy of its on-disk format with ``tests/helpers/toy_files.py``).

Two errors name what a user can fix:

- :class:`DatasetFilesMissing` (:meth:`DataFiles.check`): files absent; names the directory,
  every expected file (missing ones marked) and the settings that fix it;
- :class:`DataError` (:meth:`DataFiles.bad_file`): a file that is there but broken; one line
  naming the file, what is wrong and how to get a good copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lfbm_lightning.errors import DataError, DatasetFilesMissing

__all__ = ["DataError", "DataFiles", "DatasetFilesMissing"]


@dataclass(frozen=True)
class DataFiles:
    """The files of one data set under the data directory.

    Attributes:
        name: the data set, as in ``dataset=<name>``.
        expected: paths relative to the data directory; a trailing '/' marks a directory.
        source: where the official files are, named in the fix of a :class:`DataError`.
        gz_ok: each file may be present gzipped instead (name + '.gz'), as MNIST's.
    """

    name: str
    expected: tuple[str, ...]
    source: str
    gz_ok: bool = False

    def path(self, root: str | Path, relative: str) -> Path:
        """The file ``relative`` under ``root``: the plain file if present, else (``gz_ok``)
        its '.gz' variant."""
        path = Path(root).expanduser() / relative
        gz = path.with_name(path.name + ".gz")
        return gz if self.gz_ok and not path.is_file() and gz.is_file() else path

    def _is_present(self, root: Path, relative: str) -> bool:
        if relative.endswith("/"):
            return (root / relative).is_dir()
        return self.path(root, relative).is_file()

    def check(self, root: str | Path) -> None:
        """Check that every expected file is under ``root``, before any heavy work.

        Raises:
            DatasetFilesMissing: naming the directory, the expected and missing files, and the
                two settings that fix it.
        """
        root = Path(root).expanduser().resolve()
        missing = [rel for rel in self.expected if not self._is_present(root, rel)]
        if not missing:
            return
        gz_note = " (each may also be gzipped, name + '.gz')" if self.gz_ok else ""
        lines = "\n".join(
            f"  {rel}{'  <- missing' if rel in missing else ''}" for rel in self.expected
        )
        raise DatasetFilesMissing(
            f"Data set '{self.name}' not found in the data directory {root}.\n"
            f"Expected these files there{gz_note}:\n{lines}\n"
            f"Fix: set paths.data_dir=/path/to/data (default: environment variable "
            f"LFBM_DATA_DIR) to the directory that holds them, or set dataset.download=true to "
            f"fetch them with torchvision (needs network)."
        )

    def bad_file(self, path: str | Path, problem: str) -> DataError:
        """The one-line error for a file that is there but unreadable or malformed.

        Args:
            path: the bad file.
            problem: what is wrong with it, e.g. 'is truncated: 0 bytes, the header needs 16'.
        """
        return DataError(
            f"Data file {path} of data set '{self.name}' {problem}. Fix: delete it and set "
            f"dataset.download=true to fetch a good copy, or get one from {self.source}."
        )
