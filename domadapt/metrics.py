"""Foreground segmentation scores for mitochondria masks, ignore pixels excluded.

Targets are uint8 masks with 0 = background, 1 = mitochondria and
:data:`~domadapt.data.volume.IGNORE_LABEL` (255) for unlabeled pixels, which
no score counts. Everything is computed slice by slice from integer counts, so
volumes larger than memory (memmaps) can be scored without float or boolean
copies of the whole volume.

Empty cases follow one rule: a ratio whose denominator is zero means there was
nothing to get wrong, and scores 1.0. Thus IoU and Dice are 1.0 when both the
prediction and the target are empty, precision is 1.0 when nothing is
predicted, and recall is 1.0 when there is no true foreground.
"""

from __future__ import annotations

import numpy as np

from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import DataError


def confusion(pred_binary: np.ndarray, target_mask: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts over labeled pixels (target != IGNORE_LABEL).

    ``pred_binary`` is read as foreground where nonzero; both arrays are
    (Z, Y, X) or (Y, X) of the same shape.
    """
    tp, fp, fn, tn = (int(c) for c in _slice_counts(pred_binary, target_mask).sum(axis=0))
    return tp, fp, fn, tn


def iou(pred_binary: np.ndarray, target_mask: np.ndarray) -> float:
    """Foreground Jaccard index tp / (tp + fp + fn) over the whole volume (1.0 if both empty)."""
    tp, fp, fn, _ = confusion(pred_binary, target_mask)
    return _ratio(tp, tp + fp + fn)


def dice(pred_binary: np.ndarray, target_mask: np.ndarray) -> float:
    """Foreground Dice 2 tp / (2 tp + fp + fn) over the whole volume (1.0 if both empty)."""
    tp, fp, fn, _ = confusion(pred_binary, target_mask)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def slice_mean_iou(pred_binary: np.ndarray, target_mask: np.ndarray) -> float:
    """Mean over z of the per-slice foreground IoU, as reported by Franco-Barranco et al. 2022.

    Slices where prediction and target are both empty (empty union) are
    skipped rather than counted as 1.0, which would inflate the mean of
    volumes with many mitochondria-free slices; if every slice is skipped the
    result is 1.0, consistent with :func:`iou`.
    """
    return _slice_mean_iou_from_counts(_slice_counts(pred_binary, target_mask))


def segmentation_scores(prob_or_binary: np.ndarray, target_mask: np.ndarray,
                        threshold: float = 0.5) -> dict[str, float]:
    """All scores of a prediction against a target mask, in one pass over the slices.

    ``prob_or_binary`` may be bool (used as is), float probabilities in [0, 1]
    (foreground where >= ``threshold``) or uint8 on the 0-255 scale written by
    :func:`domadapt.inference.predict_to_tif` (foreground where >=
    ``threshold * 255``). A uint8 0/1 mask would thus read as all background:
    pass it as bool. Returns ``iou``, ``dice``, ``iou_slice_mean``,
    ``precision``, ``recall``, ``foreground_fraction_pred`` and
    ``foreground_fraction_true`` (fractions of the labeled pixels).
    """
    counts = _slice_counts(prob_or_binary, target_mask, threshold)
    tp, fp, fn, tn = (int(c) for c in counts.sum(axis=0))
    labeled = tp + fp + fn + tn
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou_slice_mean": _slice_mean_iou_from_counts(counts),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "foreground_fraction_pred": (tp + fp) / labeled if labeled else 0.0,
        "foreground_fraction_true": (tp + fn) / labeled if labeled else 0.0,
    }


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, and 1.0 when there was nothing to count."""
    return float(numerator / denominator) if denominator else 1.0


def _slice_mean_iou_from_counts(counts: np.ndarray) -> float:
    """Mean IoU of the slices with a non-empty union, from (Z, 4) tp/fp/fn/tn counts."""
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    union = tp + fp + fn
    kept = union > 0
    if not kept.any():
        return 1.0
    return float(np.mean(tp[kept] / union[kept]))


def _slice_counts(pred: np.ndarray, target: np.ndarray,
                  threshold: float | None = None) -> np.ndarray:
    """(Z, 4) int64 tp, fp, fn, tn per slice; binarises ``pred`` with ``threshold`` if given."""
    if pred.shape != target.shape:
        raise DataError(f"Prediction shape {pred.shape} differs from mask shape {target.shape}.")
    if len(target.shape) not in (2, 3):
        raise DataError(f"Scores need (Y, X) or (Z, Y, X) arrays, got shape {target.shape}.")
    if len(target.shape) == 2:
        pred, target = pred[None], target[None]
    counts = np.empty((target.shape[0], 4), dtype=np.int64)
    for z in range(target.shape[0]):
        pred_z = np.asarray(pred[z])
        pred_z = _binarize(pred_z, threshold) if threshold is not None else pred_z != 0
        counts[z] = _counts(pred_z, np.asarray(target[z]))
    return counts


def _binarize(pred: np.ndarray, threshold: float) -> np.ndarray:
    """Foreground indicator of a bool, float [0, 1] or uint8 [0, 255] prediction."""
    if pred.dtype == bool:
        return pred
    if pred.dtype == np.uint8:
        return pred >= threshold * 255.0
    return pred >= threshold


def _counts(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    """tp, fp, fn, tn of one boolean slice against one mask slice, ignore pixels excluded."""
    labeled = target != IGNORE_LABEL
    true_fg = target == 1
    tp = np.count_nonzero(pred & true_fg)
    fp = np.count_nonzero(pred & labeled) - tp
    fn = np.count_nonzero(true_fg) - tp
    tn = np.count_nonzero(labeled) - tp - fp - fn
    return tp, fp, fn, tn
