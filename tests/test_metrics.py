"""Hand-computed checks of the segmentation scores, ignore pixels and empty cases."""

import numpy as np
import pytest

from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import DataError
from domadapt.metrics import confusion, dice, iou, segmentation_scores, slice_mean_iou

IGN = IGNORE_LABEL
# tp at (0,0); fp at (0,1); fn at (1,0); tn at (0,2), (1,1); (1,2) ignored.
PRED = np.array([[1, 1, 0], [0, 0, 1]], dtype=bool)
TARGET = np.array([[1, 0, 0], [1, 0, IGN]], dtype=np.uint8)


def test_confusion_iou_dice_by_hand():
    assert confusion(PRED, TARGET) == (1, 1, 1, 2)
    assert iou(PRED, TARGET) == pytest.approx(1 / 3)
    assert dice(PRED, TARGET) == pytest.approx(2 / 4)


def test_slice_mean_skips_empty_slices_and_differs_from_volume_iou():
    empty = np.zeros((2, 3), dtype=np.uint8)
    perfect = np.array([[1, 1, 1], [0, 0, 0]], dtype=np.uint8)
    pred = np.stack([PRED, empty.astype(bool), perfect.astype(bool)])
    target = np.stack([TARGET, empty, perfect])
    # slice IoUs: 1/3, skipped (empty union), 1 -> mean 2/3
    assert slice_mean_iou(pred, target) == pytest.approx(2 / 3)
    # volume: tp = 1 + 3, fp = 1, fn = 1
    assert iou(pred, target) == pytest.approx(4 / 6)
    assert dice(pred, target) == pytest.approx(8 / 10)


def test_prediction_differing_only_on_ignore_pixels_scores_one():
    target = np.array([[[1, 0, IGN], [IGN, 1, 0]]], dtype=np.uint8)
    pred = np.array([[[1, 0, 1], [0, 1, 0]]], dtype=bool)
    scores = segmentation_scores(pred, target)
    for key in ("iou", "dice", "iou_slice_mean", "precision", "recall"):
        assert scores[key] == 1.0, key
    assert scores["foreground_fraction_pred"] == scores["foreground_fraction_true"] == 0.5


def test_empty_cases():
    empty = np.zeros((2, 4, 4), dtype=np.uint8)
    assert iou(empty, empty) == dice(empty, empty) == slice_mean_iou(empty, empty) == 1.0
    target = empty.copy()
    target[0, 0, 0] = 1
    scores = segmentation_scores(empty.astype(bool), target)
    assert scores["iou"] == scores["dice"] == scores["iou_slice_mean"] == scores["recall"] == 0.0
    assert scores["precision"] == 1.0  # nothing predicted, so no false alarm
    all_ignored = np.full((4, 4), IGN, dtype=np.uint8)
    scores = segmentation_scores(np.ones((4, 4), dtype=bool), all_ignored)
    assert scores["iou"] == 1.0 and scores["foreground_fraction_true"] == 0.0


def test_uint8_and_float_probabilities_are_thresholded():
    target = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    as_uint8 = np.array([[128, 255, 127, 0]], dtype=np.uint8)  # 127.5 is the cut
    as_float = np.array([[0.5, 0.9, 0.49, 0.0]], dtype=np.float32)
    for pred in (as_uint8, as_float):
        assert segmentation_scores(pred, target)["iou"] == 1.0
    assert segmentation_scores(as_float, target, threshold=0.6)["iou"] == 0.5
    assert segmentation_scores(as_uint8, target, threshold=0.6)["recall"] == 0.5


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError):
        iou(np.zeros((2, 3), dtype=bool), np.zeros((3, 2), dtype=np.uint8))
