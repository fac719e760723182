"""The disk cache of rendered synthetic volumes: same pixels, renders again when it must."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from domadapt.data import synthetic
from domadapt.data.synthetic_cache import CACHE_ENV

SHAPE = (3, 48, 48)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path / "synthetic"


@pytest.fixture
def renders(monkeypatch):
    """Counts the calls of the renderer."""
    calls = []
    original = synthetic.render

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render", counting)
    return calls


def test_second_call_reads_the_same_pixels_from_disk(cache, renders):
    first = synthetic.make_volume("synth-cortex", "train", shape=SHAPE, seed=1)
    second = synthetic.make_volume("synth-cortex", "train", shape=SHAPE, seed=1)
    assert len(renders) == 1
    assert len(list(cache.glob("*.npz"))) == 1
    assert not list(cache.glob("*.partial"))
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.mask, second.mask)
    fresh = synthetic.render(synthetic.get_domain("synth-cortex"), SHAPE, renders[0][2])
    np.testing.assert_array_equal(second.image, fresh[0])
    np.testing.assert_array_equal(second.mask, fresh[1])


def test_anything_the_pixels_depend_on_renders_anew(cache, renders):
    domain = synthetic.get_domain("synth-cortex")
    base = synthetic.make_volume(domain, "train", shape=SHAPE, seed=0)
    brighter = replace(domain, appearance=replace(domain.appearance, contrast=domain.appearance.contrast / 2))
    others = [synthetic.make_volume(brighter, "train", shape=SHAPE, seed=0),
              synthetic.make_volume(domain, "test", shape=SHAPE, seed=0),
              synthetic.make_volume(domain, "train", shape=SHAPE, seed=1),
              synthetic.make_volume(domain, "train", shape=(2, 48, 48), seed=0)]
    assert len(renders) == 5
    assert len(list(cache.glob("*.npz"))) == 5
    assert not np.array_equal(base.image, others[0].image)
    np.testing.assert_array_equal(base.mask, others[0].mask)  # same geometry, another look


def test_a_damaged_entry_is_rendered_again_and_replaced(cache, renders):
    good = synthetic.make_volume("synth-vnc", "train", shape=SHAPE, seed=0)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"not a volume")
    again = synthetic.make_volume("synth-vnc", "train", shape=SHAPE, seed=0)
    assert len(renders) == 2
    np.testing.assert_array_equal(good.image, again.image)
    with np.load(entry) as stored:
        np.testing.assert_array_equal(stored["image"], good.image)


def test_switched_off_it_writes_nothing(tmp_path, monkeypatch, renders):
    monkeypatch.setenv(CACHE_ENV, "off")
    monkeypatch.chdir(tmp_path)
    synthetic.make_volume("synth-vnc", "train", shape=SHAPE, seed=0)
    synthetic.make_volume("synth-vnc", "train", shape=SHAPE, seed=0)
    assert len(renders) == 2
    assert not list(tmp_path.rglob("*.npz"))
