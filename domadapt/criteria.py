"""Every label-free selection criterion in one registry: name, direction, what it reads.

The trainer's target monitor computes the registered target criteria, ``domadapt
select`` and the benchmark's regret table read their directions here, and a test keeps
the README's criterion table in step. A new criterion is one class with
:func:`register`: a ``score`` of the target predictions (:class:`TargetViews`) for
target criteria, or an entry whose values another monitor logs (source validation,
the morphological priors fitted on the source masks), or a *combined* criterion that
ranks a run's checkpoints by other criteria (``parts``) and sums the ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

EPS = 1e-6


@dataclass
class TargetViews:
    """A model's predictions of the fixed target crops: as they are, flipped (then flipped
    back), and after a fixed intensity change (gamma, contrast, blur); probabilities in [0, 1]."""

    prob: np.ndarray
    flipped: np.ndarray
    augmented: np.ndarray | None
    threshold: float = 0.5

    @cached_property
    def binary(self) -> np.ndarray:
        return (self.prob >= self.threshold).astype(np.uint8)


class Criterion:
    """A registered criterion; target criteria implement :meth:`score`."""

    name: str = ""
    direction: str = "min"  # "max" or "min": never implied by the name
    needs: str = "target images"
    description: str = ""
    augmented: bool = False  # needs TargetViews.augmented (one more prediction per evaluation)
    # A combined criterion: the sum of a checkpoint's ranks under these criteria among the
    # checkpoints compared (1 = best); its value depends on every checkpoint, not one.
    parts: tuple[str, ...] = ()

    def score(self, views: TargetViews) -> float:  # pragma: no cover - logged by another monitor
        raise NotImplementedError(f"{self.name} is computed by another monitor.")


REGISTRY: dict[str, Criterion] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    """Class decorator: one instance of ``cls`` joins the registry under ``cls.name``."""
    if cls.direction not in ("max", "min") or not cls.name:
        raise ValueError(f"Criterion {cls.__name__} needs a name and a direction 'max' or 'min'.")
    REGISTRY[cls.name] = cls()
    return cls


def directions() -> dict[str, str]:
    """Every registered criterion and its direction."""
    return {name: c.direction for name, c in REGISTRY.items()}


def target_criteria() -> list[Criterion]:
    """The criteria the target monitor computes from predictions."""
    return [c for c in REGISTRY.values() if type(c).score is not Criterion.score]


def combined_criteria() -> list[Criterion]:
    """The registered criteria computed from other criteria's values over many checkpoints."""
    return [c for c in REGISTRY.values() if c.parts]


def available(logged: set[str] | dict) -> set[str]:
    """The logged criteria plus every combined criterion whose parts are all logged."""
    return set(logged) | {c.name for c in combined_criteria() if set(c.parts) <= set(logged)}


def ranks(values: list, direction: str) -> np.ndarray:
    """Rank 1 = best under ``direction``; equal values share their average rank, and a missing
    or non-finite value ranks after every finite one."""
    from scipy.stats import rankdata

    sign = 1.0 if direction == "min" else -1.0
    keyed = [sign * v if isinstance(v, (int, float)) and math.isfinite(v) else math.inf
             for v in values]
    return rankdata(keyed, method="average")


def rank_sums(records: list[dict], parts: tuple[str, ...]) -> list[float]:
    """Per record, the sum of its ranks under each of ``parts`` among ``records``."""
    if not records:
        return []
    dirs = directions()
    total = sum(ranks([r.get(p) for r in records], dirs[p]) for p in parts)
    return [float(v) for v in total]


def with_combined(records: list[dict]) -> list[dict]:
    """Copies of ``records`` holding every combined criterion whose parts were all logged
    (in at least one record), ranked among these records."""
    logged = {k for r in records for k in r}
    out = [dict(r) for r in records]
    for crit in combined_criteria():
        if set(crit.parts) <= logged:
            for record, value in zip(out, rank_sums(records, crit.parts)):
                record[crit.name] = value
    return out


# ---------------------------------------------------------------------- building blocks


def binary_entropy(prob: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (nats) of Bernoulli probabilities."""
    p = np.clip(prob, EPS, 1 - EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def mean_entropy(prob: np.ndarray) -> float:
    return float(binary_entropy(prob).mean())


def information_maximization(prob: np.ndarray) -> float:
    """Mean entropy minus the entropy of the mean prediction: confident, not collapsed."""
    return mean_entropy(prob) - float(binary_entropy(np.array([prob.mean()]))[0])


def agreement(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    """IoU of two binary predictions of the same pixels (1.0 when both are empty)."""
    a, b = a >= threshold, b >= threshold
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def nuclear_norm_score(prob: np.ndarray) -> float:
    """||A||_* / sqrt(N) of the N x 2 matrix of class probabilities [p, 1 - p] (from its 2 x 2
    Gram matrix): 1 for a collapsed prediction, up to sqrt(2) for confident, balanced classes."""
    p = prob.reshape(-1).astype(np.float64)
    a = np.stack([p, 1 - p], axis=1)
    eig = np.clip(np.linalg.eigvalsh(a.T @ a), 0, None)
    return float(np.sqrt(eig).sum() / np.sqrt(len(p)))


# ---------------------------------------------------------------------- the criteria


@register
class MorphOurs(Criterion):
    name, direction, needs = "morph_ours", "min", "source masks + target images"
    description = ("our morphological prior: per-feature 1-D Wasserstein distances (area, diameters, "
                   "axes, solidity, eccentricity, extent, circularity; physical units) between "
                   "predicted target objects and source objects, normalised by the source IQR, plus "
                   "foreground-fraction and object-density penalties")


@register
class MorphPaper(Criterion):
    name, direction, needs = "morph_paper", "min", "source masks + target images"
    description = ("the reference paper's criterion: \\|mean solidity of predicted objects - mean "
                   "solidity of source objects\\|")


@register
class RankMorphConsistency(Criterion):
    name, direction, needs = "rank_morph_consistency", "min", "source masks + target images"
    parts = ("morph_ours", "target_consistency")
    description = ("rank under `morph_ours` plus rank under `target_consistency` among the "
                   "checkpoints compared (lowest sum kept, the earlier on ties): the morphology "
                   "prior misjudges translators, flip consistency source-only runs, rarely both")


@register
class SourceValIoU(Criterion):
    name, direction, needs = "source_val_iou", "max", "source validation labels"
    description = "IoU on the held-out source slices"


@register
class SourceValLoss(Criterion):
    name, direction, needs = "source_val_loss", "min", "source validation labels"
    description = "segmentation loss on the held-out source slices"


@register
class TargetEntropy(Criterion):
    name, direction = "target_entropy", "min"
    description = "mean per-pixel prediction entropy on target slices"

    def score(self, views: TargetViews) -> float:
        return mean_entropy(views.prob)


@register
class TargetIM(Criterion):
    name, direction = "target_im", "min"
    description = "information maximisation: mean entropy minus entropy of the mean prediction"

    def score(self, views: TargetViews) -> float:
        return information_maximization(views.prob)


@register
class TargetConsistency(Criterion):
    name, direction = "target_consistency", "max"
    description = "IoU of the prediction with the prediction of the flipped slices"

    def score(self, views: TargetViews) -> float:
        return agreement(views.prob, views.flipped, views.threshold)


@register
class TargetAugConsistency(Criterion):
    name, direction, augmented = "target_aug_consistency", "max", True
    description = ("IoU of the prediction with the prediction of the same slices after a fixed "
                   "intensity change (gamma 0.8, contrast x1.2, blur sigma 0.7 px)")

    def score(self, views: TargetViews) -> float:
        return agreement(views.prob, views.augmented, views.threshold)


@register
class TargetBNM(Criterion):
    name, direction = "target_bnm", "max"
    description = ("batch nuclear-norm (BNM, Cui et al. 2020) of the pixels' class probabilities: "
                   "confident and diverse; it favours balanced classes, i.e. more foreground")

    def score(self, views: TargetViews) -> float:
        return nuclear_norm_score(views.prob)
