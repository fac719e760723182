"""Shared fixtures: tiny configurations that train in seconds on two CPU cores."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
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
