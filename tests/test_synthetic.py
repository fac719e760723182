"""Tests of the procedural EM domains (small shapes: the whole file runs in seconds)."""

from dataclasses import replace

import numpy as np
import pytest

from domadapt.data.synthetic import (
    DEFAULT_SHAPE,
    SYNTHETIC_DOMAINS,
    Appearance,
    SyntheticDomain,
    domain_names,
    get_domain,
    make_volume,
    render,
)
from domadapt.data.volume import Volume
from domadapt.errors import ConfigError, DataError

SMALL = (8, 128, 128)
MODERATE = (8, 256, 256)


@pytest.fixture(scope="module")
def moderate() -> dict[str, Volume]:
    """One moderate volume per named domain, rendered once for the whole module."""
    return {name: make_volume(name, "train", shape=MODERATE, seed=0) for name in domain_names()}


def test_registry_has_the_three_named_domains():
    assert {"synth-hippocampus", "synth-cortex", "synth-vnc"} <= set(domain_names())
    assert all(isinstance(d, SyntheticDomain) for d in SYNTHETIC_DOMAINS.values())
    assert get_domain("synth-cortex").geometry.voxel_size_nm == (30.0, 3.0, 3.0)
    assert len(DEFAULT_SHAPE) == 3


def test_same_name_split_seed_is_deterministic():
    a = make_volume("synth-hippocampus", "train", shape=SMALL, seed=3)
    b = make_volume("synth-hippocampus", "train", shape=SMALL, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_train_and_test_splits_differ():
    train = make_volume("synth-vnc", "train", shape=SMALL, seed=0)
    test = make_volume("synth-vnc", "test", shape=SMALL, seed=0)
    assert not np.array_equal(train.image, test.image)
    assert not np.array_equal(train.mask, test.mask)


def test_volume_types_and_voxel_size(moderate):
    for name, vol in moderate.items():
        assert vol.image.dtype == np.uint8 and vol.mask.dtype == np.uint8
        assert vol.shape == MODERATE
        assert set(np.unique(vol.mask).tolist()) <= {0, 1}
        assert vol.voxel_size_nm == get_domain(name).geometry.voxel_size_nm


@pytest.mark.parametrize("name", ["synth-hippocampus", "synth-cortex", "synth-vnc"])
def test_foreground_fraction_is_sane(moderate, name):
    assert 0.03 <= moderate[name].foreground_fraction() <= 0.15


def test_appearance_swap_keeps_masks_and_changes_images():
    hippo, cortex = get_domain("synth-hippocampus"), get_domain("synth-cortex")
    swapped = replace(hippo, appearance=cortex.appearance)
    img_a, mask_a = render(hippo, SMALL, seed=5)
    img_b, mask_b = render(swapped, SMALL, seed=5)
    assert mask_a.any()
    assert np.array_equal(mask_a, mask_b)
    assert not np.array_equal(img_a, img_b)


def test_geometry_swap_changes_masks():
    hippo, vnc = get_domain("synth-hippocampus"), get_domain("synth-vnc")
    swapped = replace(hippo, geometry=vnc.geometry)
    assert not np.array_equal(render(hippo, SMALL, seed=5)[1], render(swapped, SMALL, seed=5)[1])
    assert make_volume(swapped, shape=SMALL).voxel_size_nm == vnc.geometry.voxel_size_nm


def test_mitochondria_darker_than_cytoplasm_in_hippocampus(moderate):
    vol = moderate["synth-hippocampus"]
    inside = vol.mask == 1
    assert vol.image[inside].mean() < vol.image[~inside].mean() - 20


def test_bright_polarity_flips_mitochondria_contrast():
    hippo = get_domain("synth-hippocampus")
    bright = replace(hippo, appearance=replace(hippo.appearance, polarity="bright"))
    image, mask = render(bright, SMALL, seed=1)
    inside = mask == 1
    assert inside.any()
    assert image[inside].mean() > image[~inside].mean() + 20


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError) as info:
        make_volume("synth-nowhere", shape=SMALL)
    message = str(info.value)
    assert "synth-nowhere" in message
    assert all(name in message for name in domain_names())


def test_bad_split_shape_and_appearance_are_user_errors():
    with pytest.raises(DataError):
        make_volume("synth-vnc", "trian", shape=SMALL)
    with pytest.raises(DataError):
        make_volume("synth-vnc", shape=(8, 0, 128))
    with pytest.raises(ConfigError):
        Appearance(noise="speckle")


@pytest.mark.parametrize("name", ["synth-hippocampus", "synth-cortex", "synth-vnc"])
def test_intensity_threshold_alone_does_not_segment(moderate, name):
    """Dark look-alikes (membranes, blobs, ER) make darkness alone a poor segmenter."""
    vol = moderate[name]
    inside = vol.mask == 1
    threshold = np.percentile(vol.image[inside], 90)  # captures 90% of mitochondria pixels
    selected = vol.image <= threshold
    precision = (selected & inside).sum() / selected.sum()
    assert precision < 0.8
    assert (selected & ~inside).sum() > 0.25 * inside.sum()
