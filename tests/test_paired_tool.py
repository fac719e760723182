"""tools/paired_vs_source_only.py: the paired interval on constructed numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domadapt.paired import t_interval
from tests.conftest import load_tool


def _tool():
    return load_tool("paired_vs_source_only")


def test_t_interval_known_answer():
    mean, low, high = t_interval(np.array([0.1, 0.2, 0.3]))
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2 - half)
    assert high == pytest.approx(0.2 + half)


def test_a_stricter_level_widens_the_interval_by_the_known_quantile():
    mean, low, high = t_interval([0.1, 0.2, 0.3], level=1 - 0.05 / 3)
    half = 7.6489 * 0.1 / np.sqrt(3)  # t(1 - 0.05 / 6, 2) * sd / sqrt(n)
    assert mean == pytest.approx(0.2) and high == pytest.approx(0.2 + half, abs=1e-4)
    assert low == pytest.approx(0.2 - half, abs=1e-4)


def test_table_pairs_runs_by_seed_and_calls_a_win_only_when_the_interval_excludes_zero(tmp_path):
    def write(method, seed, iou):
        folder = tmp_path / "runs" / "a-to-b" / method / f"seed{seed}"
        folder.mkdir(parents=True)
        folder.joinpath("metrics.json").write_text(json.dumps(
            {"source": "a", "target": "b", "method": method, "seed": seed,
             "target_iou_slice_mean": iou, "wall_time_s": 60.0}))

    for seed, base in enumerate([0.2, 0.5, 0.3]):
        write("baseline", seed, base)
        write("steady", seed, base + 0.1 + 0.001 * seed)  # same gain on every seed
        write("noisy", seed, base + (0.3 if seed == 0 else -0.2))
    table = _tool().table(_tool().load(tmp_path), "target_iou_slice_mean")
    steady = next(line for line in table.splitlines() if "| steady |" in line)
    noisy = next(line for line in table.splitlines() if "| noisy |" in line)
    assert "+0.101" in steady and "| win |" in steady
    assert "no difference shown" in noisy
