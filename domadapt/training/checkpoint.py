"""Checkpoint files: plain dicts, written atomically, loadable with ``weights_only=True``.

A checkpoint carries everything needed to predict with it (model spec and
weights, the pixel size and normalisation it was trained with, the resolved
config as plain data, the package version), so ``domadapt predict`` needs
nothing else.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from domadapt.data.atomic import atomic_path
from domadapt.errors import CheckpointError, RunFolderError, write_failure

FORMAT = "domadapt-checkpoint-v1"


def package_version() -> str:
    from domadapt import __version__

    return __version__


def save_atomic(payload: dict, path: str | Path) -> Path:
    """torch.save through the package's atomic writer: a killed write never leaves a half file."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (RuntimeError, OSError) as exc:  # torch reports a full disk as a RuntimeError
        raise write_failure(path, exc) from None
    return path


def copy_atomic(source: str | Path, path: str | Path) -> Path:
    """Copy a checkpoint file through the atomic writer (a best-of file pointing back in time)."""
    import shutil

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
    except OSError as exc:
        raise write_failure(path, exc) from None
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and check one of our checkpoints; anything else is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as exc:
        kind = "truncated or corrupt" if "zip" in str(exc).lower() or isinstance(
            exc, (EOFError, zipfile.BadZipFile)) else "not a domadapt checkpoint"
        raise CheckpointError(f"Checkpoint '{path}' is {kind} and cannot be loaded.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a domadapt checkpoint (no '{FORMAT}' marker).")
    return payload


def checkpoint_of(ref: str | Path) -> Path:
    """A finished run folder's selected checkpoint, or the checkpoint file given."""
    path = Path(ref).expanduser()
    if path.is_dir():
        metrics = path / "metrics.json"
        if not metrics.is_file():
            raise RunFolderError(f"{path} is not a finished domadapt run folder (no metrics.json).")
        chosen = Path(json.loads(metrics.read_text())["selected_checkpoint"])
        return chosen if chosen.is_absolute() else path / chosen
    if not path.is_file():
        raise RunFolderError(f"{path}: no such run folder or checkpoint.")
    return path
