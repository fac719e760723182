"""Test-time augmentation: average a segmenter's probabilities over flips and right-angle turns.

A network trained on flipped and rotated patches should give every such view of a tile
the same mask; where it does not (most often on an unfamiliar target domain), the mean
of the views' probabilities is a steadier estimate than any one view, as nnU-Net's
mirroring and BiaPy's eight-view averaging use it. Each view costs one forward pass:
``flips`` predicts at about a quarter of the speed, ``d4`` at about an eighth. Views are
applied to square tiles, so a quarter turn keeps every tile's shape.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from domadapt.errors import ConfigError

#: A view: (quarter turns counter-clockwise, mirrored left-right first).
View = tuple[int, bool]

#: ``none``: the tile as it is; ``flips``: the four mirror images (left-right, up-down,
#: both); ``d4``: all eight symmetries of the square (four turns, each mirrored or not).
_VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, False),),
    # a half turn of a left-right mirror image is the up-down mirror image
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((turns, mirror) for turns in range(4) for mirror in (False, True)),
}

TTA_MODES = tuple(_VIEWS)


def tta_views(mode: str) -> tuple[View, ...]:
    """The views a mode averages over; an unknown mode is a ConfigError naming the choices."""
    if mode not in _VIEWS:
        raise ConfigError(f"inference.tta must be one of {', '.join(TTA_MODES)}, got {mode!r}.")
    return _VIEWS[mode]


def to_view(batch: np.ndarray, view: View) -> np.ndarray:
    """A (..., H, W) batch as seen in ``view``: mirrored left-right if asked, then turned."""
    turns, mirror = view
    out = batch[..., ::-1] if mirror else batch
    return np.rot90(out, turns, axes=(-2, -1))


def from_view(batch: np.ndarray, view: View) -> np.ndarray:
    """Undo :func:`to_view`, so an output computed in ``view`` lies on the input's grid."""
    turns, mirror = view
    out = np.rot90(batch, -turns, axes=(-2, -1))
    return out[..., ::-1] if mirror else out


def with_tta(fn: Callable[[np.ndarray], np.ndarray], mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` (a (B, T, T) batch to (B, T, T) probabilities) averaged over ``mode``'s views."""
    views = tta_views(mode)
    if len(views) == 1:
        return fn

    def averaged(batch: np.ndarray) -> np.ndarray:
        total = np.zeros(batch.shape, dtype=np.float32)
        for view in views:
            total += from_view(fn(np.ascontiguousarray(to_view(batch, view))), view)
        return total / len(views)

    return averaged
