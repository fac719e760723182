"""tools/harder_target.py: a run judged again on its own target repeats its choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from domadapt.pipeline import run, run_dir_for
from tests.conftest import load_tool


@pytest.fixture
def tool(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "tools"))
    return load_tool("harder_target")


def test_at_k_one_the_replay_repeats_the_runs_choice_and_score(tool, tiny_config):
    cfg = tiny_config("selection.monitors=[target]", "selection.criterion=target_consistency",
                      source="synth-hippocampus", target="synth-cortex")
    run(cfg, progress=False)
    run_dir = run_dir_for(cfg)
    again = tool.on_harder_target(run_dir, 1.0)
    assert again["chosen_step"] == again["recorded_step"]
    assert again["iou_slice_mean"] == pytest.approx(again["recorded_iou_slice_mean"], abs=1e-6)
    harder = tool.on_harder_target(run_dir, 3.0)
    assert harder["target"] == "synth-cortex-x3" and 0 <= harder["iou_slice_mean"] <= 1


def test_the_table_pairs_recipes_by_pair_and_seed(tool):
    def result(iou):
        return {"chosen_step": 10, "recorded_step": 10, "iou_slice_mean": iou,
                "recorded_iou_slice_mean": 0.9}

    results = {"current": {("a-to-b", 0): result(0.5), ("a-to-b", 1): result(0.6),
                           ("a-to-b", 2): result(0.7)},
               "shift": {("a-to-b", 0): result(0.6), ("a-to-b", 1): result(0.8)}}
    text = tool.table(results, "current", "shift", 2.0, 0.95)
    assert "| a-to-b | 0 |" in text and "| a-to-b | 2 |" not in text  # seed 2 has no pair
    assert "+0.150 [" in text and "n = 2" in text and "current mean 0.550" in text
