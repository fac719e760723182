"""The target monitor: label-free criteria from predictions of unlabeled target slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from domadapt.data.prepare import prepare_labeled
from domadapt.data.synthetic import make_volume
from domadapt.morphology import MorphologyPrior, PaperSolidityCriterion
from domadapt.training.monitors import EvalContext
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
    oracle = MaskOracle(test.image[monitor.slices], masks[monitor.slices])
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
