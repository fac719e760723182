"""tools/label_free_preference.py: which recipe the criterion's parts prefer, on constructed runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_tool

PARTS = ("morph_ours", "target_consistency")  # lower is better, higher is better


def _tool():
    return load_tool("label_free_preference")


def test_preferred_only_when_better_on_every_part():
    pref = _tool().preference
    ref = {"morph_ours": 0.30, "target_consistency": 0.80}
    assert pref(ref, {"morph_ours": 0.20, "target_consistency": 0.90}, PARTS) == "candidate"
    assert pref(ref, {"morph_ours": 0.40, "target_consistency": 0.70}, PARTS) == "reference"
    assert pref(ref, {"morph_ours": 0.20, "target_consistency": 0.70}, PARTS) == "split"
    assert pref(ref, {"morph_ours": 0.30, "target_consistency": 0.90}, PARTS) == "split"  # a tie


def _run(root: Path, recipe: str, seed: int, chosen: dict, iou: float, wall: float) -> None:
    """A finished source-only run whose chosen checkpoint logged ``chosen``'s parts."""
    folder = root / recipe / "a-to-b" / "baseline" / f"seed{seed}"
    stage = folder / "checkpoints" / "segmentation"
    stage.mkdir(parents=True)
    worse = {"morph_ours": 9.0, "target_consistency": 0.0}
    stage.joinpath("history.json").write_text(json.dumps([{"step": 10, **worse}, {"step": 20, **chosen}]))
    folder.joinpath("metrics.json").write_text(json.dumps(
        {"selection_criterion": "rank_morph_consistency", "selected_step": 20,
         "selected_checkpoint": "checkpoints/segmentation/step-0000020.pt",
         "target_iou_slice_mean": iou, "trust_warnings": 0, "wall_time_s": wall}))


def test_report_counts_votes_pairs_by_seed_and_gives_the_cost_ratio(tmp_path):
    for seed, (ref_parts, cand_parts) in enumerate([
            ((0.3, 0.8), (0.2, 0.9)),   # candidate better on both
            ((0.3, 0.8), (0.2, 0.7)),   # split
            ((0.3, 0.8), (0.4, 0.6))]):  # reference better on both
        _run(tmp_path, "current", seed, dict(zip(PARTS, ref_parts)), 0.5, 60.0)
        _run(tmp_path, "shift", seed, dict(zip(PARTS, cand_parts)), 0.5 + 0.1 * seed, 90.0)
    _run(tmp_path, "current", 7, dict(zip(PARTS, (0.3, 0.8))), 0.5, 60.0)  # no partner: left out
    text = _tool().report(tmp_path, "current", "shift")
    assert "shift preferred on 1 of 3 pair-seeds, current on 1, split 1." in text
    assert "r = 1.500" in text
    assert "= +0.100 [" in text  # the report-only paired IoU difference, mean of 0.0, 0.1, 0.2
