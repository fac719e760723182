"""Label-free criteria on unlabeled target slices, computed at every evaluation.

One monitor predicts a fixed, seeded sample of target slices (by default from
``target_train``; the reference paper monitors the target *test* images,
transductively, which ``selection.target_split`` allows), cropped to at most
``selection.target_crop`` pixels a side so large slices cost no more than small
ones, and scores the predictions without labels:

- ``morph_paper`` (min): |mean solidity of predicted objects - source mean|,
  the criterion of Franco-Barranco et al. 2022;
- ``morph_ours`` (min): our morphological prior (per-feature Wasserstein
  distances to the source objects plus foreground-fraction and density
  penalties), with each part logged;
- ``target_entropy`` (min): mean per-pixel prediction entropy;
- ``target_im`` (min): information-maximisation loss, mean entropy minus the
  entropy of the mean prediction (confident but not collapsed);
- ``target_consistency`` (max): IoU between the prediction and the prediction
  of the flipped slices flipped back.

The monitor only ever receives an :class:`UnlabeledVolume`: it has no way to
read target labels.
"""

from __future__ import annotations

import numpy as np

from domadapt.data.volume import UnlabeledVolume
from domadapt.training.monitors import (
    EvalContext,
    Monitor,
    MonitorResult,
    fixed_crop_sample,
    image_grid,
    predict_stack,
)

EPS = 1e-6


def binary_entropy(prob: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (nats) of Bernoulli probabilities."""
    p = np.clip(prob, EPS, 1 - EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def mean_entropy(prob: np.ndarray) -> float:
    """Lower means a more confident model on this data."""
    return float(binary_entropy(prob).mean())


def information_maximization(prob: np.ndarray) -> float:
    """Mean entropy minus the entropy of the mean prediction (lower is better).

    Rewards confident predictions that do not collapse to one class.
    """
    return mean_entropy(prob) - float(binary_entropy(np.array([prob.mean()]))[0])


def flip_consistency(prob: np.ndarray, prob_flipped_back: np.ndarray,
                     threshold: float = 0.5) -> float:
    """IoU of two binary predictions of the same slices (1.0 when both are empty)."""
    a, b = prob >= threshold, prob_flipped_back >= threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class TargetCriteriaMonitor(Monitor):
    """Morphology, entropy, IM and consistency on a fixed sample of target slices."""

    name = "target_criteria"

    def __init__(self, volume: UnlabeledVolume, priors: list, n_slices: int = 8, seed: int = 0,
                 threshold: float = 0.5, crop: int = 0) -> None:
        self.volume, self.priors, self.threshold = volume, priors, threshold
        self.sample = fixed_crop_sample(volume, n_slices, crop, seed)
        self.directions = {p.name: p.direction for p in priors}
        self.directions.update(target_entropy="min", target_im="min", target_consistency="max")

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        images = self.sample.read(self.volume.image)
        prob = predict_stack(ctx, images)
        flipped = predict_stack(ctx, np.ascontiguousarray(images[:, ::-1, ::-1]))[:, ::-1, ::-1]
        binary = (prob >= self.threshold).astype(np.uint8)
        metrics = {"target_fg_fraction": float(binary.mean()),
                   "target_entropy": mean_entropy(prob),
                   "target_im": information_maximization(prob),
                   "target_consistency": flip_consistency(prob, flipped, self.threshold)}
        for prior in self.priors:
            value = prior.score(binary)
            if isinstance(value, tuple):
                value, parts = value
                metrics.update({f"{prior.name}/{k}": float(v) for k, v in parts.items()
                                if isinstance(v, (int, float))})
            metrics[prior.name] = float(value)
        grids = {}
        if ctx.want_images:
            z = int(np.argmax(binary.reshape(len(binary), -1).sum(1)))
            grids["target"] = image_grid(images[z], prob[z])
        return MonitorResult(metrics, grids)
