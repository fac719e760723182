"""A synthetic target moved further from its source: the same shift, k times as far.

The shipped synthetic pairs are easy for a well-trained source-only model, so a recipe
meant to bridge large shifts cannot show there what it does. Scaling a pair's appearance
shift by one number gives harder targets without hand-picking any imaging parameter: the
geometry (what is where) stays the target's, only the look moves on along the line from
the source's look to the target's.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from domadapt.errors import ConfigError

if TYPE_CHECKING:  # synthetic.py builds its harder domains with farther(), so no import cycle
    from domadapt.data.synthetic import SyntheticDomain

#: Fields that scale: moved geometrically while both ends are positive, so they never
#: cross zero (a negative blur or noise level means nothing).
SCALE_FIELDS = ("gamma", "contrast", "texture", "texture_scale_nm", "noise_level", "blur_px",
                "cell_tone", "slice_jitter")
BACKGROUND_RANGE = (0.05, 0.95)
STAIN_RANGE = (-1.0, 1.5)


def farther(source: SyntheticDomain, target: SyntheticDomain, k: float) -> SyntheticDomain:
    """``target``'s geometry seen through an appearance k times as far from ``source``'s.

    k = 1 is ``target`` itself; the name gains ``-x{k}`` so its volumes are new draws.
    """
    if not k > 0:
        raise ConfigError(f"The shift factor k must be positive, got {k!r}.")
    if k == 1:
        return target
    src, tgt = asdict(source.appearance), asdict(target.appearance)
    moved = {name: _move(name, src[name], value, k) for name, value in tgt.items()
             if isinstance(value, float)}
    return replace(target, name=f"{target.name}-x{k:g}", appearance=replace(target.appearance, **moved),
                   description=f"{target.name}'s geometry, its look {k:g}x as far from "
                               f"{source.name}'s.")


def _move(name: str, a: float, b: float, k: float) -> float:
    if name in SCALE_FIELDS:
        return a * (b / a) ** k if a > 0 and b > 0 else max(a + k * (b - a), 0.0)
    value = a + k * (b - a)
    low, high = BACKGROUND_RANGE if name == "background" else STAIN_RANGE
    return min(max(value, low), high)
