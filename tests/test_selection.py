"""Label-free selection: directions, picks, regret and rank correlation."""

from __future__ import annotations

import numpy as np
import pytest

from domadapt.selection import choose, regret_table, render_table, spearman
from domadapt.training.target_monitor import (
    flip_consistency,
    information_maximization,
    mean_entropy,
)

RECORDS = [
    {"step": 10, "source_val_iou": 0.60, "morph_ours": 0.9},
    {"step": 20, "source_val_iou": 0.80, "morph_ours": 0.2},
    {"step": 30, "source_val_iou": 0.85, "morph_ours": 0.5},
]
TARGET_IOU = {10: 0.30, 20: 0.55, 30: 0.40}


def test_choose_respects_declared_direction():
    assert choose(RECORDS, "source_val_iou", "max")["step"] == 30
    assert choose(RECORDS, "morph_ours", "min")["step"] == 20
    assert choose(RECORDS, "target_entropy", "min") is None  # never logged


def test_regret_and_spearman():
    table = regret_table(RECORDS, TARGET_IOU, {"source_val_iou": "max", "morph_ours": "min"})
    assert table["morph_ours"]["regret"] == pytest.approx(0.0)
    assert table["source_val_iou"]["regret"] == pytest.approx(0.15)
    assert table["morph_ours"]["spearman"] == pytest.approx(1.0)  # oriented: +1 = perfect
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_markdown_table_marks_picks():
    report = {"criteria": {"source_val_iou": "max", "morph_ours": "min"}, "records": RECORDS,
              "picks": {"source_val_iou": 30, "morph_ours": 20}}
    text = render_table(report)
    assert "0.8500*" in text and "0.2000*" in text


def test_unsupervised_target_scores():
    confident = np.array([0.0, 0.0, 1.0, 1.0])
    unsure = np.full(4, 0.5)
    assert mean_entropy(confident) < mean_entropy(unsure)
    collapsed = np.zeros(4)  # confident but all background: IM must not reward it over balance
    assert information_maximization(confident) < information_maximization(collapsed) + 1e-9
    assert flip_consistency(confident, confident) == 1.0
    assert flip_consistency(confident, 1 - confident) == 0.0
