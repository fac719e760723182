"""The target monitor: label-free criteria from predictions of unlabeled target slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from domadapt.data.prepare import prepare_labeled
from domadapt.data.synthetic import make_volume
from domadapt.data.volume import UnlabeledVolume
from domadapt.morphology import PaperSolidityCriterion
from domadapt.morphology_prior import MorphologyPrior
from domadapt.training.monitors import EvalContext, fixed_crop_sample, fixed_slice_sample
from domadapt.training.target_monitor import TargetCriteriaMonitor

PIXEL = 10.0


class MaskOracle(nn.Module):
    """A 'model' that outputs a chosen mask for each known slice (and its flipped copy)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        super().__init__()
        self.images, self.masks = images, masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x, -10.0)
        h, w = self.images.shape[1:]
        for b in range(x.shape[0]):
            crop = x[b, 0, :h, :w].numpy()
            for image, mask in zip(self.images, self.masks):
                for flip in (False, True):
                    ref = image[::-1, ::-1] if flip else image
                    if np.array_equal(crop, ref):
                        m = mask[::-1, ::-1] if flip else mask
                        out[b, 0, :h, :w] = torch.from_numpy(20.0 * (m.astype(np.float32) - 0.5))
        return out


@pytest.fixture(scope="module")
def target():
    source, _ = prepare_labeled(make_volume("synth-hippocampus", "train", shape=(6, 512, 512)), PIXEL)
    test, _ = prepare_labeled(make_volume("synth-hippocampus", "test", shape=(4, 512, 512)), PIXEL)
    priors = [PaperSolidityCriterion().fit(source.mask), MorphologyPrior().fit(source.mask, PIXEL)]
    return test, priors


def _evaluate(test, priors, masks):
    monitor = TargetCriteriaMonitor(test.without_labels(), priors, n_slices=4, seed=0)
    oracle = MaskOracle(test.image[monitor.sample.slices], masks[monitor.sample.slices])
    ctx = EvalContext({"net": oracle}, oracle, torch.device("cpu"), False, step=1, tile=256,
                      overlap=0)
    return monitor.evaluate(ctx).metrics


def test_monitor_prefers_true_masks_over_degraded_ones(target):
    test, priors = target
    truth = _evaluate(test, priors, test.mask)
    swollen = _evaluate(test, priors, ndimage.binary_dilation(test.mask, iterations=4,
                                                              structure=np.ones((1, 3, 3))))
    empty = _evaluate(test, priors, np.zeros_like(test.mask))
    assert truth["morph_ours"] < swollen["morph_ours"] < empty["morph_ours"]
    assert np.isfinite(empty["morph_paper"]) and empty["morph_paper"] >= truth["morph_paper"]
    assert truth["target_consistency"] == pytest.approx(1.0)
    assert {"morph_ours/foreground", "target_entropy", "target_im"} <= set(truth)


def test_monitor_receives_no_labels(target):
    test, priors = target
    monitor = TargetCriteriaMonitor(test.without_labels(), priors)
    assert not hasattr(monitor.volume, "mask")
    assert monitor.directions["morph_ours"] == "min"
    assert monitor.directions["target_consistency"] == "max"


def test_slices_no_larger_than_the_crop_are_monitored_whole_as_before():
    volume = UnlabeledVolume(np.zeros((10, 200, 300), np.float32), (30, 10, 10))
    sample = fixed_crop_sample(volume, 4, 512, seed=3)
    np.testing.assert_array_equal(sample.slices, fixed_slice_sample(volume, 4, 3))
    assert (sample.height, sample.width) == (200, 300) and set(sample.offsets) == {(0, 0)}


def test_large_slices_get_fixed_seeded_crops_inside_the_slice():
    volume = UnlabeledVolume(np.zeros((6, 2000, 1500), np.float32), (30, 10, 10))
    first, again = (fixed_crop_sample(volume, 4, 512, seed=0) for _ in range(2))
    assert np.array_equal(first.slices, again.slices) and first.offsets == again.offsets
    assert (first.height, first.width) == (512, 512)
    assert all(0 <= y <= 2000 - 512 and 0 <= x <= 1500 - 512 for y, x in first.offsets)
    assert len(set(first.offsets)) > 1
    whole = fixed_crop_sample(volume, 4, 0, seed=0)
    assert (whole.height, whole.width) == (2000, 1500)


@pytest.mark.parametrize("side", [700, 2400])
def test_an_evaluation_costs_the_same_on_any_slice_size(side, monkeypatch):
    import domadapt.training.monitors as monitors

    pixels = []
    predict = monitors.predict_slice
    monkeypatch.setattr(monitors, "predict_slice",
                        lambda model, image, **kw: pixels.append(image.size) or predict(model, image, **kw))
    rng = np.random.default_rng(0)
    volume = UnlabeledVolume(rng.random((5, side, side), dtype=np.float32), (30, 10, 10))
    monitor = TargetCriteriaMonitor(volume, [], n_slices=4, seed=0, crop=512)
    net = nn.Conv2d(1, 1, 1)
    ctx = EvalContext({"net": net}, net, torch.device("cpu"), False, step=1, tile=256, overlap=0)
    monitor.evaluate(ctx)
    assert sum(pixels) == 3 * 4 * 512 * 512  # the crops, their flipped and intensity-changed copies
