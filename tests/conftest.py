"""Shared fixtures: tiny configurations that train in seconds on two CPU cores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from domadapt.config import build_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# One thread per test process keeps results reproducible and avoids
# oversubscribing the two cores when a test spawns subprocesses.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache_in_tmp(tmp_path_factory):
    """Rendered synthetic volumes are cached in a folder of this test session, never in the
    user's cache (subprocesses inherit the variable)."""
    from domadapt.data.synthetic_cache import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("synthetic-cache")))
        yield


@pytest.fixture
def tiny_config(tmp_path):
    """Build a smoke-profile RunConfig writing under tmp_path (extra --set items allowed)."""

    def make(*overrides: str, **flags):
        flags.setdefault("out", str(tmp_path / "runs"))
        return build_config(profile="smoke", method=flags.pop("method", "baseline"),
                            overrides=["train.threads=1", *overrides], flags=flags)

    return make


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process; returns (exit code, stdout, stderr)."""
    from domadapt.cli import main

    monkeypatch.setattr(sys, "argv", ["domadapt", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def write_appearance_shift(folder: Path) -> Path:
    """Two volumes of one synthetic domain as tif files in ``folder``: the target differs
    from the source only in appearance (gamma 3, darker), with masks for both."""
    from domadapt.data import synthetic

    domain = synthetic.get_domain("synth-hippocampus")
    for name, split in (("src", "train"), ("tgt", "test")):
        volume = synthetic.make_volume(domain, split, shape=(10, 192, 192))
        image = volume.image if name == "src" else np.round((volume.image / 255.0) ** 3 * 255)
        tifffile.imwrite(folder / f"{name}.tif", image.astype(np.uint8))
        tifffile.imwrite(folder / f"{name}_mask.tif", volume.mask)
    return folder


def shift_config(folder: Path, method: str = "baseline", *overrides: str, out: str = "runs",
                 monitor: str = "source_val", criterion: str = "source_val_iou"):
    """A short run from the appearance-shift source to its target (150 steps, 64 px patches),
    with batch norm: the shift is what the methods under test must undo, and per-image
    normalisation in the first layers (``model.norm=ibn``, the default) absorbs much of it."""
    return build_config(
        profile="smoke", method=method,
        overrides=["train.threads=1", "data.pixel_size_nm=5", "train.steps=150", "model.norm=batch",
                   "train.eval_every=50", "data.patch_size=64", f"selection.monitors=[{monitor}]",
                   f"selection.criterion={criterion}", *overrides],
        flags={"source": str(folder / "src.tif"), "target": str(folder / "tgt.tif"),
               "out": str(folder / out),
               "data": {"source_mask": str(folder / "src_mask.tif"),
                        "target_mask": str(folder / "tgt_mask.tif"),
                        "source_voxel_size": [5, 5, 5], "target_voxel_size": [5, 5, 5]}})


def load_tool(name: str):
    """A maintainer script of tools/ as a module: the scripts are not part of the package."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
