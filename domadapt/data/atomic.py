"""Atomic writes: a file appears under its own name only when it is complete.

A killed run, a full disk or Ctrl-C must never leave a half-written file that later
passes for a finished one; every file the package writes goes through
:func:`atomic_path` (or the tif writers built on it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.errors import DataError


def _partial(path: Path) -> Path:
    """A name of this process's own beside ``path``: parallel processes writing the same file
    (e.g. two benchmark workers caching one synthetic volume) never write into one partial."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield ``<path>.<pid>.partial`` to write to; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_tif(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as a (multi-page) tif atomically and return the path."""
    import tifffile

    with atomic_path(path) as partial:
        tifffile.imwrite(partial, np.asarray(array), photometric="minisblack")
    return Path(path)


class TifStackWriter:
    """Append 2D slices to one tif stack with bounded memory; atomic on close.

    Use as a context manager: the file appears under its final name only when
    the block exits without an exception and at least one slice was written.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._partial = _partial(self.path)
        self._writer: Any = None
        self.n_slices = 0

    def __enter__(self) -> TifStackWriter:
        import tifffile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = tifffile.TiffWriter(self._partial, bigtiff=True)
        return self

    def write(self, slice_2d: np.ndarray) -> None:
        """Append one (Y, X) slice."""
        slice_2d = np.asarray(slice_2d)
        if slice_2d.ndim != 2:
            raise DataError(f"Slices written to {self.path} must be 2D, got {slice_2d.shape}.")
        self._writer.write(slice_2d, contiguous=True, photometric="minisblack")
        self.n_slices += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writer.close()
        if exc_type is None and self.n_slices > 0:
            os.replace(self._partial, self.path)
            return
        self._partial.unlink(missing_ok=True)
        if exc_type is None:
            raise DataError(f"No slices were written to {self.path}.")


def write_tif_slices(path: str | Path, slices: Iterable[np.ndarray]) -> Path:
    """Write an iterator of 2D slices as one (Z, Y, X) tif, atomically, one slice in memory."""
    with TifStackWriter(path) as writer:
        for slice_2d in slices:
            writer.write(slice_2d)
    return Path(path)
