"""The augmentation recipe's options: each transform's strength and probability.

Kept apart from :mod:`domadapt.config` so that method sections (the
self-training student's strong view) can reuse the same keys. A strength of 0
turns a transform off; a probability of 1 applies it to every sample without
drawing a random number, so recipes without probabilities replay the random
stream of older runs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from domadapt.errors import ConfigError


@dataclass
class AugmentConfig:
    """Augmentations applied on the training device to every labeled batch."""

    flip: bool = True  # random horizontal/vertical flips
    rot90: bool = True  # random multiples of 90 degrees
    brightness: float = 0.1  # max additive shift, in normalised intensity units
    contrast: float = 0.1  # max relative contrast change
    gamma: float = 0.0  # max |log gamma|
    noise: float = 0.0  # max Gaussian noise std
    blur: float = 0.0  # max Gaussian blur sigma in pixels (0 disables)
    # Spatial deformation (image bilinear, labels nearest, mirrored borders), one resampling:
    rotate: float = 0.0  # max |rotation| in degrees (any angle, beyond the 90-degree turns)
    scale: float = 0.0  # max relative zoom in or out
    elastic: float = 0.0  # max displacement of a smooth 4x4-control-point field, in pixels
    # Texture and contrast changes that a global gain/offset cannot make:
    curve: float = 0.0  # random monotone intensity curve: max shift of its 5 knots (0-1 scale)
    gain_field: float = 0.0  # max amplitude of a smooth multiplicative field (uneven staining)
    # Probability per sample of each transform (1: always, with a random strength):
    brightness_p: float = 1.0
    contrast_p: float = 1.0
    gamma_p: float = 1.0
    noise_p: float = 1.0
    blur_p: float = 1.0
    deform_p: float = 1.0  # rotate, scale and elastic together
    curve_p: float = 1.0
    gain_field_p: float = 1.0


def validate_augment(cfg: AugmentConfig, section: str = "augment") -> None:
    """Strengths are >= 0 and probabilities in [0, 1]; the error names the key."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool):
            continue
        if f.name.endswith("_p") and not 0.0 <= value <= 1.0:
            raise ConfigError(f"Config key '{section}.{f.name}' must be in [0, 1], got {value}.")
        if value < 0:
            raise ConfigError(f"Config key '{section}.{f.name}' must be >= 0, got {value}.")
    if cfg.scale >= 1:
        raise ConfigError(f"Config key '{section}.scale' must be below 1, got {cfg.scale}.")
