"""The label-free trust panel: morphology of a prediction against the source's labels, warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domadapt.pipeline import run, run_dir_for
from domadapt.trust import morphology, trust_panel

PX = (10.0, 10.0)


def _disks(depth=4, size=200, radius=6, spacing=40) -> np.ndarray:
    """A grid of equal disks (mitochondria-sized at 10 nm pixels), the same in every slice."""
    yy, xx = np.mgrid[:size, :size]
    plane = np.zeros((size, size), bool)
    for cy in range(spacing // 2, size, spacing):
        for cx in range(spacing // 2, size, spacing):
            plane |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    return np.repeat(plane[None], depth, axis=0)


def test_morphology_counts_objects_and_measures_areas_in_um2():
    disks = _disks()
    m = morphology(disks, PX)
    assert m.n_objects == 4 * 25
    area = disks[0].sum() / 25 * 1e-4  # one disk, pixels x (0.01 µm)²
    assert m.area_um2_median == pytest.approx(area)
    assert m.objects_per_um2 == pytest.approx(25 / (200 * 200 * 1e-4))
    assert m.foreground_fraction == pytest.approx(disks.mean())


def test_a_prediction_like_the_source_raises_no_warning():
    source = _disks().astype(np.uint8)
    panel = trust_panel(_disks().astype(np.float32), 0.5, PX, source, 10.0,
                        {"morph_paper": 0.1, "source_val_iou": 0.9})
    assert panel["warnings"] == []
    assert panel["coverage_ratio"] == pytest.approx(1.0)
    assert panel["criteria"] == {"morph_paper": 0.1}  # only the label-free target criteria


def test_a_nucleus_called_mitochondria_is_flagged():
    """The failure seen on a cultured-cell target: a large blob predicted as foreground."""
    source = _disks().astype(np.uint8)
    prediction = _disks().astype(np.uint8) * 255
    yy, xx = np.mgrid[:200, :200]
    prediction[:, (yy - 100) ** 2 + (xx - 100) ** 2 <= 70 ** 2] = 255  # the nucleus
    for z in range(4):  # and the cytoplasm gets large blobs too
        prediction[z, :30, :] = 255
    panel = trust_panel(prediction, 0.5, PX, source, 10.0)
    assert any("covers" in w and "nucleus" in w for w in panel["warnings"])
    assert any("95th-percentile" in w for w in panel["warnings"])


def test_an_empty_or_speckled_prediction_is_flagged():
    source = _disks().astype(np.uint8)
    empty = trust_panel(np.zeros((4, 200, 200), np.float32), 0.5, PX, source, 10.0)
    assert any("miss most" in w for w in empty["warnings"])
    speckle = np.zeros((4, 200, 200), np.float32)
    speckle[:, ::3, ::3] = 1.0  # single pixels: coverage within range, objects far too small
    panel = trust_panel(speckle, 0.5, PX, source, 10.0)
    assert any("fragments" in w for w in panel["warnings"])


def test_every_run_reports_its_trust_panel(tiny_config):
    cfg = tiny_config("selection.monitors=[source_val]", "selection.criterion=source_val_iou")
    metrics = run(cfg, progress=False)
    folder = run_dir_for(cfg)
    saved = json.loads((folder / "metrics.json").read_text())
    assert set(saved["trust"]) >= {"target", "source", "coverage_ratio", "warnings"}
    assert saved["trust_warnings"] == len(saved["trust"]["warnings"])
    assert metrics["target_predicted_fraction"] == saved["trust"]["target"]["foreground_fraction"]
    assert "## Trust panel (label-free)" in (folder / "report.md").read_text()
