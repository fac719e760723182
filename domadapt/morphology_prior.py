"""Our morphological prior (``morph_ours``): do the predicted objects' shape distributions
match the source mitochondria's?

The paper's criterion (:class:`domadapt.morphology.PaperSolidityCriterion`) compares one
mean; this one compares whole per-object distributions in physical units, plus the
foreground fraction and the object density, so swollen or merged objects, fragments and
speckle, empty outputs and a labeled nucleus are all penalised. It is fitted on SOURCE
training masks only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from domadapt.errors import DataError
from domadapt.morphology import (
    ALL_FOREGROUND_FRACTION,
    MIN_OBJECT_AREA_PX,
    MIN_SCORED_OBJECTS,
    SHAPE_FEATURES,
    WORST_SCORE,
    _check_name,
    _foreground_fraction,
    object_features,
    pool_image_features,
)


def _log_ratio(pred: float, src: float, eps: float) -> float:
    return abs(math.log((pred + eps) / (src + eps)))


class MorphologyPrior:
    """Distance between predicted and source mitochondria shape statistics (ours).

    ``score`` = WORST_SCORE * tanh(raw / WORST_SCORE), with

        raw = W_SHAPE * mean_f [ W1(pred_f, src_f) / scale_f ]
            + W_FOREGROUND * |log((ff_pred + 1e-3) / (ff_src + 1e-3))|
            + W_DENSITY * |log((n_pred + eps_n) / (n_src + eps_n))|

    over the :data:`SHAPE_FEATURES` f, where W1 is the 1-D Wasserstein (earth
    mover's) distance (scipy.stats.wasserstein_distance), scale_f the source
    inter-quartile range, ff the pooled foreground fraction and n the kept
    objects per um^2 (eps_n = 1 % of the source density). Dividing by the IQR
    makes nm^2, nm and unitless ratios commensurable; its floor (0.05 for the
    unitless features, 10 % of the median for sizes) stops a nearly constant
    source feature (e.g. eccentricity of regular tubes) from dominating.

    Whole distributions rather than means catch failures a mean hides:
    merging and swelling shift sizes up and solidity down; fragments and
    speckle shift sizes down and density up. The log penalties are symmetric
    in ratio (twice too much = half too little) and see what the shape term
    skips by design (objects cut by borders, speckle under
    :data:`MIN_OBJECT_AREA_PX`). Weights: the shape term is the primary
    evidence (1.0); the two density terms (0.5 each) are coarser and also
    move with genuine source/target differences in mitochondria density. The
    tanh keeps scores below WORST_SCORE (degenerate outputs never win) and
    preserves order (score ~ raw while raw is small).
    """

    name = "morph_ours"
    direction = "min"
    W_SHAPE = 1.0
    W_FOREGROUND = 0.5
    W_DENSITY = 0.5
    #: Objects measured per scored sample at most (speed; see :func:`object_features`).
    MAX_SCORED_OBJECTS = 1000

    def __init__(self, max_samples: int = 2000, seed: int = 0,
                 min_area_px: int = MIN_OBJECT_AREA_PX) -> None:
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.min_area_px = int(min_area_px)
        self.pixel_size_nm: float | None = None
        self.samples: dict[str, np.ndarray] = {}
        self.image_stats: dict[str, float] = {}
        self._scale: dict[str, float] = {}

    def fit(self, source_masks: np.ndarray, pixel_size_nm: float) -> MorphologyPrior:
        """Store source per-object samples (at most ``max_samples``, seeded) and pooled image stats."""
        feats = object_features(source_masks, pixel_size_nm, self.min_area_px)
        n = len(feats["area_nm2"])
        if n < MIN_SCORED_OBJECTS:
            raise DataError(f"The source masks contain only {n} measurable objects (at least "
                            f"{MIN_SCORED_OBJECTS} needed away from borders); cannot fit the prior.")
        idx = np.arange(n)
        if n > self.max_samples:  # the same objects for every feature
            idx = np.sort(np.random.default_rng(self.seed).choice(n, self.max_samples, replace=False))
        self.pixel_size_nm = float(pixel_size_nm)
        self.samples = {k: feats[k][idx] for k in SHAPE_FEATURES}
        self.image_stats = pool_image_features(feats)
        self._update_scale()
        return self

    def _update_scale(self) -> None:
        self._scale = {}
        for k, v in self.samples.items():
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            floor = 0.1 * abs(float(med)) if k.endswith("nm") or k.endswith("nm2") else 0.05
            self._scale[k] = max(float(q3 - q1), floor, 1e-6)

    def score(self, pred_masks: np.ndarray) -> tuple[float, dict[str, float]]:
        """(total, parts) for a sample of predicted masks (lower is better, never NaN).

        ``parts`` holds each feature's normalised W1 (``w1_<feature>``),
        ``shape``, ``foreground``, ``density``, ``raw``, ``n_objects`` and
        ``foreground_fraction``; for degenerate predictions (empty, all
        foreground, fewer than :data:`MIN_SCORED_OBJECTS` measurable objects)
        the total is :data:`WORST_SCORE` and ``parts["degenerate"]`` is 1 for
        empty, 2 for all foreground, 3 for too few objects (0 otherwise).
        """
        if self.pixel_size_nm is None:
            raise RuntimeError("MorphologyPrior.score() called before fit().")
        ff = _foreground_fraction(pred_masks)
        if ff == 0:
            return WORST_SCORE, {"degenerate": 1.0, "foreground_fraction": 0.0}
        if ff >= ALL_FOREGROUND_FRACTION:
            return WORST_SCORE, {"degenerate": 2.0, "foreground_fraction": ff}
        feats = object_features(pred_masks, self.pixel_size_nm, self.min_area_px,
                                max_objects=self.MAX_SCORED_OBJECTS, seed=self.seed)
        n = len(feats["area_nm2"])
        if n < MIN_SCORED_OBJECTS:
            return WORST_SCORE, {"degenerate": 3.0, "foreground_fraction": ff, "n_objects": float(n)}
        parts = {f"w1_{k}": float(wasserstein_distance(feats[k], self.samples[k]) / self._scale[k])
                 for k in SHAPE_FEATURES}
        parts["shape"] = float(np.mean(list(parts.values())))
        stats = pool_image_features(feats)
        src_ff, src_n = self.image_stats["foreground_fraction"], self.image_stats["objects_per_um2"]
        parts["foreground"] = _log_ratio(stats["foreground_fraction"], src_ff, 1e-3)
        parts["density"] = _log_ratio(stats["objects_per_um2"], src_n, 0.01 * src_n + 1e-9)
        raw = (self.W_SHAPE * parts["shape"] + self.W_FOREGROUND * parts["foreground"]
               + self.W_DENSITY * parts["density"])
        parts.update(raw=raw, n_objects=float(n), foreground_fraction=ff, degenerate=0.0)
        if not math.isfinite(raw):
            return WORST_SCORE, parts
        return float(WORST_SCORE * math.tanh(raw / WORST_SCORE)), parts

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: floats, ints, strings, lists and dicts only."""
        return {"name": self.name, "version": 1, "pixel_size_nm": self.pixel_size_nm,
                "min_area_px": self.min_area_px, "max_samples": self.max_samples,
                "seed": self.seed, "image_stats": dict(self.image_stats),
                "samples": {k: v.tolist() for k, v in self.samples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MorphologyPrior:
        _check_name(d, cls.name)
        prior = cls(max_samples=d["max_samples"], seed=d["seed"], min_area_px=d["min_area_px"])
        prior.pixel_size_nm = None if d["pixel_size_nm"] is None else float(d["pixel_size_nm"])
        prior.image_stats = {k: float(v) for k, v in d["image_stats"].items()}
        prior.samples = {k: np.asarray(d["samples"][k], dtype=float) for k in d["samples"]}
        if set(prior.samples) != set(SHAPE_FEATURES) and prior.pixel_size_nm is not None:
            raise DataError(f"A fitted '{cls.name}' prior must hold samples of "
                            f"{', '.join(SHAPE_FEATURES)}.")
        prior._update_scale()
        return prior
