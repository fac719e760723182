"""domadapt.data.synthetic_shift.farther: the same appearance shift, k times as far."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from domadapt.data import synthetic
from domadapt.data.synthetic_shift import farther
from domadapt.errors import ConfigError


def _pair():
    source = synthetic.get_domain("synth-hippocampus")
    target = replace(source, name="t", appearance=replace(
        source.appearance, gamma=0.5, blur_px=0.0, background=0.9, cristae_stain=0.7,
        polarity="bright", noise="poisson"))
    return source, target


def test_k_one_is_the_target_itself():
    source, target = _pair()
    assert farther(source, target, 1) is target


def test_scales_move_geometrically_stains_linearly_with_clips():
    source, target = _pair()
    app = farther(source, target, 2).appearance
    assert app.gamma == pytest.approx(0.25)  # 1 * (0.5 / 1) ** 2
    assert app.blur_px == 0.0  # 0.8 + 2 * (0 - 0.8) floored at 0
    assert app.background == 0.95  # 0.68 + 2 * 0.22 = 1.12, clipped
    assert app.cristae_stain == pytest.approx(1.5)  # -0.3 + 2 * 1.0 = 1.7, clipped
    assert app.membrane_stain == source.appearance.membrane_stain  # unshifted stays
    assert (app.polarity, app.noise) == ("bright", "poisson")  # the target's kinds


def test_the_geometry_stays_so_the_masks_do_and_only_the_look_moves():
    source = synthetic.get_domain("synth-hippocampus")
    target = synthetic.get_domain("synth-cortex")
    harder = farther(source, target, 2)
    assert harder.name == "synth-cortex-x2" and harder.geometry == target.geometry
    image_t, mask_t = synthetic.render(target, (2, 64, 64), seed=5)
    image_h, mask_h = synthetic.render(harder, (2, 64, 64), seed=5)
    assert np.array_equal(mask_t, mask_h)
    assert not np.array_equal(image_t, image_h)


def test_a_factor_that_is_not_positive_is_refused():
    source, target = _pair()
    with pytest.raises(ConfigError, match="positive"):
        farther(source, target, 0)


def test_the_grid_targets_moved_twice_as_far_are_registered_datasets():
    from domadapt.data.registry import dataset_names

    for source, target in synthetic.GRID_PAIRS:
        harder = synthetic.get_domain(f"{target}-x2")
        assert harder == farther(synthetic.get_domain(source), synthetic.get_domain(target), 2)
        assert harder.name in dataset_names()
