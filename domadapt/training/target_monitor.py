"""Label-free criteria on unlabeled target slices, computed at every evaluation.

One monitor predicts a fixed, seeded sample of target slices (by default from
``target_train``; the reference paper monitors the target *test* images,
transductively, which ``selection.target_split`` allows), cropped to at most
``selection.target_crop`` pixels a side so large slices cost no more than small
ones, and scores the predictions without labels with every target criterion of the
registry (:mod:`domadapt.criteria`: entropy, information maximisation, flip and
intensity-change consistency, batch nuclear-norm) and with the morphological priors
fitted on the source masks (``morph_paper``, ``morph_ours``, each part logged).

The monitor only ever receives an :class:`UnlabeledVolume`: it has no way to
read target labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from domadapt.criteria import (
    TargetViews,
    agreement,
    information_maximization,
    mean_entropy,
    target_criteria,
)
from domadapt.data.volume import UnlabeledVolume
from domadapt.training.monitors import (
    EvalContext,
    Monitor,
    MonitorResult,
    fixed_crop_sample,
    image_grid,
    predict_stack,
)

__all__ = ["TargetCriteriaMonitor", "flip_consistency", "information_maximization", "mean_entropy",
           "intensity_changed"]


def flip_consistency(prob: np.ndarray, prob_flipped_back: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two binary predictions of the same slices (1.0 when both are empty)."""
    return agreement(prob, prob_flipped_back, threshold)


def intensity_changed(images: np.ndarray) -> np.ndarray:
    """The fixed intensity change of ``target_aug_consistency``: gamma 0.8, contrast x1.2 about
    each slice's mean, Gaussian blur sigma 0.7 px (in-plane)."""
    out = np.clip(images, 0, None) ** 0.8
    mean = out.mean(axis=(1, 2), keepdims=True)
    out = (out - mean) * 1.2 + mean
    return ndi.gaussian_filter(out, (0, 0.7, 0.7)).astype(np.float32)


class TargetCriteriaMonitor(Monitor):
    """The registered target criteria and the morphological priors on fixed target crops."""

    name = "target_criteria"

    def __init__(self, volume: UnlabeledVolume, priors: list, n_slices: int = 8, seed: int = 0,
                 threshold: float = 0.5, crop: int = 0) -> None:
        self.volume, self.priors, self.threshold = volume, priors, threshold
        self.sample = fixed_crop_sample(volume, n_slices, crop, seed)
        self.criteria = target_criteria()
        self.directions = {p.name: p.direction for p in priors}
        self.directions.update({c.name: c.direction for c in self.criteria})

    def evaluate(self, ctx: EvalContext) -> MonitorResult:
        images = self.sample.read(self.volume.image)
        prob = predict_stack(ctx, images)
        flipped = predict_stack(ctx, np.ascontiguousarray(images[:, ::-1, ::-1]))[:, ::-1, ::-1]
        augmented = (predict_stack(ctx, intensity_changed(images))
                     if any(c.augmented for c in self.criteria) else None)
        views = TargetViews(prob, flipped, augmented, self.threshold)
        metrics = {"target_fg_fraction": float(views.binary.mean())}
        metrics.update({c.name: c.score(views) for c in self.criteria})
        for prior in self.priors:
            value = prior.score(views.binary)
            if isinstance(value, tuple):
                value, parts = value
                metrics.update({f"{prior.name}/{k}": float(v) for k, v in parts.items()
                                if isinstance(v, (int, float))})
            metrics[prior.name] = float(value)
        grids = {}
        if ctx.want_images:
            z = int(np.argmax(views.binary.reshape(len(prob), -1).sum(1)))
            grids["target"] = image_grid(images[z], prob[z])
        return MonitorResult(metrics, grids)
