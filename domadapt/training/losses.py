"""Segmentation losses that honour the ignore label.

Pixels whose mask equals :data:`~domadapt.data.volume.IGNORE_LABEL` (e.g.
Kasthuri++ outside-tissue) contribute nothing to any loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _valid(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(binary target as float, weight 1 on labeled pixels and 0 on ignored ones)."""
    weight = (mask != IGNORE_LABEL).float()
    target = (mask == 1).float()
    return target, weight


def bce_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over labeled pixels."""
    target, weight = _valid(mask)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight, reduction="sum")
    return loss / weight.sum().clamp_min(1.0)


def dice_loss(logits: torch.Tensor, mask: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the whole batch (batch Dice is stable with empty patches)."""
    target, weight = _valid(mask)
    prob = torch.sigmoid(logits.float()) * weight
    intersection = (prob * target).sum()
    return 1.0 - (2.0 * intersection + eps) / (prob.sum() + target.sum() + eps)


def bce_dice_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE for calibrated probabilities plus Dice for robustness to class imbalance."""
    return bce_loss(logits, mask) + dice_loss(logits, mask)


SEGMENTATION_LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
}


def segmentation_loss(name: str) -> LossFn:
    """Look up a segmentation loss by its config name."""
    try:
        return SEGMENTATION_LOSSES[name]
    except KeyError:
        valid = ", ".join(SEGMENTATION_LOSSES)
        raise ConfigError(f"Unknown loss '{name}'; valid losses: {valid}.") from None
