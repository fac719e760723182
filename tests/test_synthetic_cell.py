"""The cultured-cell domain: only mitochondria are labeled, and a nucleus is caught.

A target from another tissue where the model labels the nucleus as mitochondria
must not look good to the default criterion, and the trust panel must say so.
"""

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from domadapt import criteria
from domadapt.config import SelectionConfig
from domadapt.data.prepare import prepare_labeled
from domadapt.data.synthetic import get_domain, make_volume, render
from domadapt.data.synthetic_cell import CellGeometry
from domadapt.morphology import PaperSolidityCriterion
from domadapt.morphology_prior import MorphologyPrior
from domadapt.selection import choose
from domadapt.trust import trust_panel

#: The default field in y/x (8 µm at 10 nm) with a few sections: a nucleus and cytoplasm.
SHAPE = (4, 800, 800)
PIXEL_NM = 10.0


def _scene(split: str = "test", seed: int = 0):
    """The structure fields behind make_volume("synth-cell", split, shape=SHAPE, seed)."""
    digest = hashlib.sha256(f"synth-cell|{split}|{seed}".encode()).digest()
    return get_domain("synth-cell").geometry.build(SHAPE, int.from_bytes(digest[:8], "little"))


@pytest.fixture(scope="module")
def cell():
    volume = make_volume("synth-cell", "test", shape=SHAPE, seed=0)
    return volume, _scene()


#: The real Lucchi++ copy beside the repository (../shared/data), when there is one.
LUCCHI = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module", params=["synth-hippocampus", "lucchi"])
def source_masks(request) -> np.ndarray:
    """Source masks at the working pixel size: synthetic Lucchi++-like ones, and the real
    Lucchi++ training masks where the data is present."""
    if request.param == "lucchi":
        if not (LUCCHI / "lucchi" / "Lucchi++").is_dir():
            pytest.skip(f"no Lucchi++ copy under {LUCCHI}")
        from domadapt.data.registry import load_split

        volume = load_split("lucchi", "train", LUCCHI)
    else:
        volume = make_volume("synth-hippocampus", "train", shape=(8, 384, 384))
    return prepare_labeled(volume, PIXEL_NM)[0].mask


def test_mask_marks_mitochondria_only(cell):
    volume, scene = cell
    mito = volume.mask == 1
    assert np.array_equal(mito, scene.mask)
    assert 0.01 < mito.mean() < 0.12
    assert scene.nucleus.mean() > 0.15  # a large nucleus is in the field ...
    for name in ("nucleus", "lipid", "blob", "er", "envelope"):
        other = getattr(scene, name) > 0.5
        assert other.any(), f"no {name} in the field"
        assert not (mito & other).any(), f"{name} pixels are labeled as mitochondria"
    assert not (mito & (scene.chromatin > 0.5)).any()


def test_nucleus_sits_in_the_middle_and_cytoplasm_around_it(cell):
    _, scene = cell
    z, y, x = np.nonzero(scene.nucleus > 0.5)
    centre = np.array([y.mean(), x.mean()]) / np.array(SHAPE[1:])
    assert np.all(np.abs(centre - 0.5) < 0.15)
    ring = np.ones(SHAPE[1:], bool)
    ring[100:-100, 100:-100] = False
    assert scene.mask[:, ring].any()  # mitochondria in the cytoplasm around the nucleus


def test_deterministic_and_appearance_independent_masks():
    a = make_volume("synth-cell", "train", shape=SHAPE, seed=2)
    b = make_volume("synth-cell", "train", shape=SHAPE, seed=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    domain = get_domain("synth-cell")
    dark = replace(domain, appearance=replace(domain.appearance, polarity="bright"))
    image, mask = render(dark, SHAPE, seed=5)
    _, same_mask = render(domain, SHAPE, seed=5)
    assert np.array_equal(mask, same_mask)
    assert isinstance(domain.geometry, CellGeometry)
    assert domain.geometry.voxel_size_nm == (40.0, 10.0, 10.0)
    assert make_volume("synth-cell", "val", shape=(2, 600, 600)).shape == (2, 600, 600)


def _truth_and_nucleus(cell) -> tuple[np.ndarray, np.ndarray]:
    volume, scene = cell
    truth = (volume.mask == 1).astype(np.uint8)
    return truth, (truth | (scene.nucleus > 0.5)).astype(np.uint8)


def test_default_criterion_prefers_the_truth_to_a_mask_that_adds_the_nucleus(cell, source_masks):
    """The default must read the target prediction: a nucleus is invisible to a source-side one.

    Each mask is scored as a prediction that does not change under flips or the intensity
    change (the criteria comparing two predictions see two equal ones); a combined default
    ranks the two masks by its parts, the nucleus listed first so a tie cannot pass."""
    truth, with_nucleus = _truth_and_nucleus(cell)
    name = SelectionConfig().criterion
    fitted = {"morph_ours": lambda: MorphologyPrior().fit(source_masks, PIXEL_NM),
              "morph_paper": lambda: PaperSolidityCriterion().fit(source_masks)}
    parts = criteria.REGISTRY[name].parts or (name,)
    assert set(parts) & set(fitted), f"the default {name} does not score target masks"

    def score(part, mask):
        if part in fitted:
            value = fitted[part]().score(mask)
            return value[0] if isinstance(value, tuple) else value
        prob = mask.astype(np.float32)
        return criteria.REGISTRY[part].score(criteria.TargetViews(prob, prob, prob))

    records = [{"step": step, **{p: score(p, mask) for p in parts}}
               for step, mask in ((1, with_nucleus), (2, truth))]
    assert choose(criteria.with_combined(records), name)["step"] == 2


def test_morph_paper_is_fooled_by_the_nucleus(cell, source_masks):
    """Documented weakness: a convex nucleus has the solidity of a mitochondrion."""
    truth, with_nucleus = _truth_and_nucleus(cell)
    crit = PaperSolidityCriterion().fit(source_masks)
    assert crit.score(with_nucleus) < crit.score(truth)
    prior = MorphologyPrior().fit(source_masks, PIXEL_NM)
    assert prior.score(truth)[0] < prior.score(with_nucleus)[0]


def test_trust_panel_warns_on_the_nucleus_and_not_on_the_truth(cell, source_masks):
    truth, with_nucleus = _truth_and_nucleus(cell)
    quiet = trust_panel(truth.astype(np.float32), 0.5, (PIXEL_NM, PIXEL_NM), source_masks, PIXEL_NM)
    loud = trust_panel(with_nucleus.astype(np.float32), 0.5, (PIXEL_NM, PIXEL_NM), source_masks,
                       PIXEL_NM)
    assert quiet["warnings"] == []
    assert any("nucleus" in w for w in loud["warnings"])
    assert loud["oversized_share"] > 0.5
