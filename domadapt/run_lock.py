"""One live process per run folder.

Two runs writing into one folder corrupt each other's checkpoints and metrics,
and ``--overwrite`` of a folder another run is still writing deletes files under
its feet. A run therefore holds an exclusive ``fcntl.flock`` on
``<run folder>/.lock`` for as long as it lives. The kernel releases the lock
when the process dies, however it dies, so a lock left by a killed run is
stale by construction and never blocks ``--resume``; the file's content (pid,
host) only serves the message.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from domadapt.errors import RunFolderError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded there
    fcntl = None  # type: ignore[assignment]


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock; remove what it created if the run wrote nothing."""
    created = _missing_parents(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = _acquire(path)
    try:
        yield
    finally:
        _release(handle, path, created)


def _missing_parents(run_dir: Path) -> list[Path]:
    """The folders (deepest first) that creating ``run_dir`` will make."""
    missing = []
    for folder in [run_dir, *run_dir.parents]:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _acquire(path: Path):
    """Open and lock ``path``; a lock held by a live process is a RunFolderError."""
    for _ in range(3):  # the file may be unlinked by its previous holder between open and lock
        handle = open(path, "a+")
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(path)
            handle.close()
            raise RunFolderError(
                f"Run folder {path.parent} is in use by another domadapt process ({holder}); "
                "wait for it to finish or stop it first."
            ) from None
        if _same_file(handle, path):
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            return handle
        handle.close()
    raise RunFolderError(f"Could not lock run folder {path.parent}; try again.")


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "pid unknown"
    except OSError:
        return "pid unknown"


def _release(handle, path: Path, created: list[Path]) -> None:
    """Unlock and remove the lock file, and the folders made for it if the run wrote nothing."""
    try:
        path.unlink(missing_ok=True)  # while still held: a process that opened it retries
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    finally:
        handle.close()
