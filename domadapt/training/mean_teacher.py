"""Mean-teacher building blocks: confident pseudo-labels, label statistics, the loss ramp-up.

The teacher is an exponential moving average of the student (``weight_average.ema_update``; Tarvainen &
Valpola 2017): it changes slowly, so its predictions on unlabeled images are
steadier targets than the student's own. Only pixels where the teacher is
confident become pseudo-labels; the rest carry the ignore label, which every
segmentation loss of the package already skips.
"""

from __future__ import annotations

import math

import torch

from domadapt.data.volume import IGNORE_LABEL


def pseudo_labels(prob: torch.Tensor, threshold: float, class_keep: float = 0.0) -> torch.Tensor:
    """uint8 mask of the confident pixels: 1 (foreground), 0 (background), else IGNORE_LABEL.

    A pixel is confident when ``max(p, 1 - p) >= threshold``. A teacher that is never
    that sure of one class (a young source-only model often keeps background
    around 0.2) would hand out labels of the other class only and teach the
    student to call everything mitochondria; ``class_keep`` > 0 also labels the
    most confident ``class_keep`` share of the pixels it assigns to each class.
    """
    foreground = prob >= 0.5
    confidence = torch.where(foreground, prob, 1.0 - prob)
    keep = confidence >= threshold
    if class_keep > 0:
        for members in (foreground, ~foreground):
            if members.any():
                cut = torch.quantile(confidence[members].float(), 1.0 - class_keep)
                keep |= members & (confidence >= cut)
    mask = torch.full(prob.shape, IGNORE_LABEL, dtype=torch.uint8, device=prob.device)
    mask[keep & foreground] = 1
    mask[keep & ~foreground] = 0
    return mask


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) for t = step / length, the mean-teacher ramp-up; 1 after ``length``."""
    if length <= 0 or step >= length:
        return 1.0
    t = step / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def label_stats(mask: torch.Tensor, student_logits: torch.Tensor) -> dict[str, float]:
    """Coverage of the pseudo-labels, their foreground share, and the student's agreement."""
    labeled = mask != IGNORE_LABEL
    n = int(labeled.sum())
    if n == 0:
        return {"pseudo_coverage": 0.0, "pseudo_foreground": 0.0, "pseudo_agreement": 0.0}
    student = (student_logits.detach() >= 0).to(torch.uint8)
    return {"pseudo_coverage": n / mask.numel(),
            "pseudo_foreground": float((mask[labeled] == 1).float().mean()),
            "pseudo_agreement": float((student[labeled] == mask[labeled]).float().mean())}
