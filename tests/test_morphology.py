"""The morphological priors: corrupted masks score worse than the truth, degenerate cases are finite.

Test data: the synth-hippocampus geometry rendered at 10 nm pixels (the
pipeline resamples to a common pixel size anyway). At its native 5 nm a
256 x 256 slice is 1.3 um wide and holds only a couple of mitochondria away
from the border (200-500 nm wide); at 10 nm a (12, 256, 256) volume gives
60-100 measurable objects, enough for distributions. The priors are fitted on
the train volume and scored on test volumes of the same domain.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.morphology import disk

from domadapt.data.synthetic import get_domain, make_volume
from domadapt.data.volume import IGNORE_LABEL
from domadapt.errors import DataError
from domadapt.morphology import (
    SHAPE_FEATURES,
    WORST_SCORE,
    PaperSolidityCriterion,
    _measure,
    object_features,
    paper_solidity,
)
from domadapt.morphology_prior import MorphologyPrior

SHAPE = (12, 256, 256)


def _domain():
    d = get_domain("synth-hippocampus")
    return dataclasses.replace(d, geometry=dataclasses.replace(d.geometry,
                                                               voxel_size_nm=(40.0, 10.0, 10.0)))


def _per_slice(fn, masks):
    return np.stack([fn(s) for s in masks])


def dilate(m, r):
    return _per_slice(lambda s: ndimage.binary_dilation(s, disk(r)), m) if r else m.copy()


def erode(m, r):
    return _per_slice(lambda s: ndimage.binary_erosion(s, disk(r)), m)


def over_segment(m):
    """Swollen objects (dilation by 3 px) merged with their neighbours (closing, disk 8)."""
    return _per_slice(lambda s: ndimage.binary_closing(ndimage.binary_dilation(s, disk(3)),
                                                       disk(8)), m)


def speckle(m, p, seed=1):
    """Add small false-positive blobs (discs of 13 px, above the 10 px minimum object size)."""
    salt = np.random.default_rng(seed).random(m.shape) < p
    return m.astype(bool) | dilate(salt, 2)


def under_segment(m):
    """Thin objects (erosion by 2 px) broken by pepper cuts, plus salt speckle."""
    cuts = np.random.default_rng(0).random(m.shape) < 0.02
    return speckle(erode(m, 2) & ~cuts, 0.002)


@pytest.fixture(scope="module")
def data():
    vol = make_volume(_domain(), "train", shape=SHAPE, seed=0)
    ps = vol.voxel_size_nm[1]
    gt = {s: make_volume(_domain(), "test", shape=SHAPE, seed=s).mask for s in (0, 2)}
    ours = MorphologyPrior().fit(vol.mask, ps)
    paper = PaperSolidityCriterion().fit(vol.mask)
    return {"ps": ps, "gt": gt[0], "gt2": gt[2], "ours": ours, "paper": paper}


def _scores(data, masks):
    return (data["ours"].score(masks)[0], data["paper"].score(masks))


def test_corruptions_score_worse_than_ground_truth(data):
    gt = data["gt"]
    cases = {"over": over_segment(gt), "under": under_segment(gt),
             "empty": np.zeros_like(gt), "all_foreground": np.ones_like(gt)}
    ours_gt, paper_gt = _scores(data, gt)
    for name, masks in cases.items():
        ours, paper = _scores(data, masks)
        assert ours > ours_gt + 0.3, name  # a clear margin, not a tie-break
        # The paper's criterion also ranks these below the truth on this volume
        # (but see test_paper_criterion_misses_shrunken_objects).
        assert paper > paper_gt, name


def test_paper_criterion_misses_shrunken_objects(data):
    """Documents the paper's weakness: solidity is blind to size.

    Eroding convex objects by 3 px (30 nm; a model that under-predicts the
    membrane) barely changes their solidity, so across two ground-truth
    volumes the paper's score cannot separate truth from shrunken truth, and
    on one volume it even prefers the eroded mask. Ours sees the size shift.
    """
    truths = [data["gt"], data["gt2"]]
    ours_gt, paper_gt = zip(*(_scores(data, m) for m in truths))
    ours_ero, paper_ero = zip(*(_scores(data, erode(m, 3)) for m in truths))
    assert max(ours_gt) < min(ours_ero)
    assert max(paper_gt) > min(paper_ero)
    assert paper_ero[1] < paper_gt[1]


def test_checkpoint_sequences_rank_in_order(data):
    """Increasing swelling and increasing speckle: ours has Spearman 1, the best is the truth."""
    gt = data["gt"]
    sequences = {"dilation": [dilate(gt, k) for k in range(5)],
                 "speckle": [gt.astype(bool)] + [speckle(gt, p) for p in (2e-4, 5e-4, 1e-3, 2e-3)]}
    for name, seq in sequences.items():
        ours, paper = (np.array(s) for s in zip(*(_scores(data, m) for m in seq)))
        assert np.all(np.diff(ours) > 0), (name, ours)
        # The paper's criterion picks the truth here but does not rank the
        # rest (its scores are not monotone in the corruption).
        assert np.argmin(paper) == 0, (name, paper)


def test_degenerate_predictions_are_worst_and_finite(data):
    gt = data["gt"]
    few = np.zeros_like(gt)
    few[0, 50:60, 50:60] = 1  # one object: too few to compare distributions
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from empty means or log(0)
        for masks, reason in [(np.zeros_like(gt), 1), (np.ones_like(gt), 2), (few, 3),
                              (np.full_like(gt, IGNORE_LABEL), 1)]:
            total, parts = data["ours"].score(masks)
            assert total == WORST_SCORE and parts["degenerate"] == reason
            assert all(np.isfinite(v) for v in parts.values())
        # One convex square has about the source's mean solidity; the paper's criterion
        # scored it near-perfect until it too refused fewer than MIN_SCORED_OBJECTS objects.
        for masks in (np.zeros_like(gt), np.ones_like(gt), few, np.full_like(gt, IGNORE_LABEL)):
            assert data["paper"].score(masks) == WORST_SCORE
        ours, paper = _scores(data, gt)
    assert 0 <= ours < WORST_SCORE and 0 <= paper < WORST_SCORE


def test_ignore_label_creates_no_objects_and_cuts_shapes():
    m = np.zeros((2, 64, 64), dtype=np.uint8)
    m[:, :, :16] = IGNORE_LABEL          # an unlabeled band
    m[:, 30:40, 30:40] = 1               # a measurable object
    m[:, 5:15, 16:26] = 1                # touches the band: counted, not measured
    m[1] = IGNORE_LABEL                  # a slice without labels
    f = object_features(m, 10.0)
    assert len(f["area_nm2"]) == 1 and f["area_nm2"][0] == pytest.approx(100 * 100.0)
    labeled_um2 = 64 * 48 * 1e-4
    assert f["objects_per_um2"][0] == pytest.approx(2 / labeled_um2)
    assert f["foreground_fraction"][0] == pytest.approx(200 / (64 * 48))
    assert np.isnan(f["foreground_fraction"][1])
    assert object_features(np.full((32, 32), IGNORE_LABEL, np.uint8), 5.0)["area_nm2"].size == 0
    assert np.isnan(paper_solidity(np.full((32, 32), IGNORE_LABEL, np.uint8)))


def test_round_trip_gives_identical_scores(data):
    masks = over_segment(data["gt"])
    for crit in (data["ours"], data["paper"]):
        d = json.loads(json.dumps(crit.to_dict()))
        again = type(crit).from_dict(d)
        assert again.score(masks) == crit.score(masks)
        assert again.name == crit.name and again.direction == "min"
    with pytest.raises(DataError):
        MorphologyPrior.from_dict(data["paper"].to_dict())


def test_physical_units_scale_with_pixel_size(data):
    f5, f10 = object_features(data["gt"], 5.0), object_features(data["gt"], 10.0)
    np.testing.assert_allclose(f10["area_nm2"], 4 * f5["area_nm2"])
    np.testing.assert_allclose(f10["major_axis_nm"], 2 * f5["major_axis_nm"])
    np.testing.assert_allclose(f10["objects_per_um2"], f5["objects_per_um2"] / 4)
    for k in ("solidity", "eccentricity", "extent", "circularity"):
        np.testing.assert_array_equal(f10[k], f5[k])
    assert set(SHAPE_FEATURES) <= set(f5)


def test_vectorised_measurement_matches_regionprops(data):
    lab = label(under_segment(data["gt"])[0], connectivity=2)
    ours = _measure(lab)
    ref = regionprops(lab)
    for key, prop in [("area", "area"), ("major", "axis_major_length"),
                      ("minor", "axis_minor_length"), ("extent", "extent"),
                      ("perimeter", "perimeter")]:
        np.testing.assert_allclose(ours[key], [getattr(r, prop) for r in ref], atol=1e-6)
    np.testing.assert_allclose(ours["eccentricity"], [r.eccentricity for r in ref], atol=1e-4)
    # Digital convex hull (pixel centres) lies inside scikit-image's corner hull.
    sk = np.array([r.solidity for r in ref])
    assert np.all(ours["solidity"] >= sk - 1e-9) and np.all(ours["solidity"] <= 1)
    big = ours["area"] > 200
    assert big.any() and np.all(ours["solidity"][big] - sk[big] < 0.06)


def test_object_subsampling_and_fit_errors(data):
    f = object_features(speckle(data["gt"], 2e-3), 10.0, max_objects=50, seed=3)
    g = object_features(speckle(data["gt"], 2e-3), 10.0, max_objects=50, seed=3)
    assert len(f["area_nm2"]) == 50
    np.testing.assert_array_equal(f["area_nm2"], g["area_nm2"])
    with pytest.raises(DataError):
        MorphologyPrior().fit(np.zeros((2, 32, 32), np.uint8), 5.0)
    with pytest.raises(DataError):
        PaperSolidityCriterion().fit(np.zeros((2, 32, 32), np.uint8))
