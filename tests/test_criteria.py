"""The criterion registry: directions honoured, new criteria, README table, a criterion added
from outside appears in `domadapt select`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from domadapt import criteria
from domadapt.criteria import REGISTRY, Criterion, TargetViews, nuclear_norm_score, register
from domadapt.selection import choose
from domadapt.training.target_monitor import intensity_changed

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_selection_honours_every_registered_direction(name):
    direction = REGISTRY[name].direction
    records = [{"step": s, name: v} for s, v in ((10, 0.3), (20, 0.9), (30, 0.1))]
    assert choose(records, name)["step"] == (20 if direction == "max" else 30)


def test_readme_table_lists_every_criterion_with_its_direction():
    rows = dict(re.findall(r"^\| `(\w+)` \| (max|min) \|", README.read_text(), flags=re.M))
    for name, criterion in REGISTRY.items():
        if name.startswith("source_val"):  # one README row holds both, "max / min"
            continue
        assert rows.get(name) == criterion.direction, name


def test_rank_sums_and_the_combined_criterion_on_a_history():
    records = [{"step": 100, "morph_ours": 2.0, "target_consistency": 0.9},
               {"step": 200, "morph_ours": 1.0, "target_consistency": 0.5},
               {"step": 300, "morph_ours": 1.0, "target_consistency": float("nan")},
               {"step": 400, "morph_ours": 3.0, "target_consistency": 0.95}]
    # morph_ours (min): 2.5 for the two 1.0s, then 3, 4; consistency (max): NaN last
    assert criteria.rank_sums(records, ("morph_ours", "target_consistency")) == [5.0, 4.5, 5.5, 5.0]
    filled = criteria.with_combined(records)
    assert "rank_morph_consistency" not in records[0]  # the input is not changed
    assert choose(filled, "rank_morph_consistency")["step"] == 200
    only_one = criteria.with_combined([{"step": 1, "morph_ours": 1.0}])
    assert "rank_morph_consistency" not in only_one[0]  # a part never logged: no value
    assert criteria.available({"morph_ours", "target_consistency"}) >= {"rank_morph_consistency"}
    assert "rank_morph_consistency" not in criteria.available({"morph_ours"})


def test_nuclear_norm_rewards_confident_diverse_predictions():
    assert nuclear_norm_score(np.zeros((4, 8, 8))) == pytest.approx(1.0)  # collapsed
    half = np.zeros((4, 8, 8))
    half[:, :4] = 1.0
    assert nuclear_norm_score(half) == pytest.approx(np.sqrt(2))  # confident, balanced
    assert nuclear_norm_score(np.full((4, 8, 8), 0.5)) < nuclear_norm_score(half)


def test_target_criteria_read_only_predictions():
    prob = np.random.default_rng(0).random((2, 16, 16))
    views = TargetViews(prob, prob, prob)
    scores = {c.name: c.score(views) for c in criteria.target_criteria()}
    assert scores["target_consistency"] == scores["target_aug_consistency"] == 1.0
    assert {"target_entropy", "target_im", "target_bnm"} <= set(scores)
    changed = intensity_changed(prob.astype(np.float32))
    assert changed.shape == prob.shape and not np.allclose(changed, prob)


def test_a_criterion_added_from_outside_reaches_select(tmp_path, monkeypatch, capsys):
    from conftest import run_cli

    @register
    class Sharpness(Criterion):
        name, direction = "target_sharpness_test", "max"
        description = "a test criterion"

        def score(self, views):
            return float(np.abs(views.prob - 0.5).mean())

    try:
        assert "target_sharpness_test" in {c.name for c in criteria.target_criteria()}
        stage = tmp_path / "run" / "checkpoints" / "segmentation"
        stage.mkdir(parents=True)
        history = [{"step": s, "epoch": i + 1, "target_sharpness_test": v}
                   for i, (s, v) in enumerate(((100, 0.2), (200, 0.4), (300, 0.3)))]
        (stage / "history.json").write_text(json.dumps(history))
        code, out, err = run_cli(monkeypatch, capsys, "select", str(tmp_path / "run"), "--no-labels")
        assert code == 0, err
        assert "target_sharpness_test (max)" in out and "0.4000*" in out
    finally:
        REGISTRY.pop("target_sharpness_test", None)
