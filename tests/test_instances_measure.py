"""Mitochondria instances (watershed split of touching objects) and their measurements."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from domadapt.instances import instances
from domadapt.morphometrics import measure, summary

ISO = (10.0, 10.0, 10.0)


def _ball(shape, centre, radius_nm, voxel):
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * v) ** 2 for g, c, v in zip(grid, centre, voxel))
    return d2 <= radius_nm ** 2


def _touching_pairs(voxel=ISO, pairs=8, seed=0):
    """Pairs of mitochondria-sized balls (radii r ~ 150 nm and 0.8 r) whose centres are 1.6 r
    apart: one connected component with a neck each, two objects."""
    rng = np.random.default_rng(seed)
    shape = (int(400 / voxel[0]), 90, 300)
    mask = np.zeros(shape, bool)
    for i in range(pairs):
        r = float(rng.uniform(135, 165))
        centre = (shape[0] / 2, 22 + (i % 2) * 45, 20 + (i // 2) * 70)
        mask |= _ball(shape, centre, r, voxel)
        mask |= _ball(shape, (centre[0], centre[1], centre[2] + 1.6 * r / voxel[2]), 0.8 * r, voxel)
    return mask


def test_touching_mitochondria_are_split_at_their_necks():
    from scipy import ndimage as ndi

    for voxel in (ISO, (30.0, 10.0, 10.0)):
        mask = _touching_pairs(voxel)
        assert ndi.label(mask)[1] <= 8  # components alone merge each pair
        labels = instances(mask, voxel)
        assert labels.dtype == np.uint32 and abs(int(labels.max()) - 16) <= 1.6  # within 10 %
        assert not np.any(labels[~mask])


def test_small_objects_are_removed_and_labels_are_consecutive():
    mask = np.zeros((10, 60, 60), bool)
    mask[2:8, 5:25, 5:25] = True  # 2400 voxels = 0.0024 µm³
    mask[5, 50, 50] = True  # one voxel of noise
    labels = instances(mask, ISO, min_volume_um3=0.001)
    assert sorted(np.unique(labels)) == [0, 1]


@pytest.mark.parametrize("voxel", [ISO, (30.0, 10.0, 10.0)])
def test_a_ball_measures_its_analytic_volume_and_surface(voxel):
    radius = 300.0  # nm
    shape = tuple(int(2 * radius / v) + 8 for v in voxel)
    ball = _ball(shape, [s / 2 for s in shape], radius, voxel).astype(np.uint32)
    row = measure(ball, voxel)[0]
    r_um = radius / 1000
    assert row["volume_um3"] == pytest.approx(4 / 3 * np.pi * r_um ** 3, rel=0.05)
    assert row["surface_um2"] == pytest.approx(4 * np.pi * r_um ** 2, rel=0.05)
    assert row["equivalent_diameter_um"] == pytest.approx(2 * r_um, rel=0.05)
    assert row["elongation"] == pytest.approx(1.0, abs=0.1)
    assert row["centroid_y_um"] == pytest.approx(shape[1] / 2 * voxel[1] / 1000, abs=0.01)


def test_a_cylinder_measures_its_analytic_volume_surface_and_elongation():
    z, y, x = np.indices((30, 30, 80))
    cylinder = (((z - 14.5) ** 2 + (y - 14.5) ** 2 <= 100) & (x >= 10) & (x < 70)).astype(np.uint32)
    row = measure(cylinder, ISO)[0]
    r, length = 0.1, 0.6  # µm
    assert row["volume_um3"] == pytest.approx(np.pi * r * r * length, rel=0.05)
    assert row["surface_um2"] == pytest.approx(2 * np.pi * r * length + 2 * np.pi * r * r, rel=0.05)
    assert row["elongation"] > 3  # long along x
    assert row["mean_solidity"] > 0.95  # rectangular sections are convex


def test_summary_counts_density_and_volume_fraction():
    labels = np.zeros((10, 100, 100), np.uint32)
    labels[:, :50, :50], labels[:, 60:, 60:] = 1, 2
    s = summary(measure(labels, ISO), labels, ISO)
    assert s["count"] == 2
    assert s["volume_fraction"] == pytest.approx((2500 + 1600) / 10000)
    assert s["density_per_um3"] == pytest.approx(2 / (10 * 100 * 100 * 1e-6))


def test_measure_verb_writes_one_row_per_mitochondrion(tmp_path, monkeypatch, capsys):
    from conftest import run_cli

    mask = _touching_pairs()
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8) * 255)
    code, out, err = run_cli(monkeypatch, capsys, "measure", str(tmp_path / "mask.tif"),
                             "--voxel-size", "10,10,10", "--from-mask")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "mask_mito.csv").open()))
    assert len(rows) == 16 and float(rows[0]["volume_um3"]) > 0
    assert json.loads((tmp_path / "mask_mito_summary.json").read_text())["count"] == 16
    code, _, err = run_cli(monkeypatch, capsys, "measure", str(tmp_path / "mask.tif"),
                           "--voxel-size", "10,10,10")
    assert code == 0  # uint8 0/255 is read as integer labels: one object per value
    tifffile.imwrite(tmp_path / "prob.tif", mask.astype(np.float32))
    code, _, err = run_cli(monkeypatch, capsys, "measure", str(tmp_path / "prob.tif"),
                           "--voxel-size", "10,10,10")
    assert code == 2 and "--from-mask" in err


def test_predict_instances_writes_uint32_labels_with_voxel_size_and_a_table(tmp_path, monkeypatch,
                                                                            capsys):
    from conftest import run_cli

    from domadapt.config import build_config

    cfg = build_config(profile="smoke", overrides=["train.threads=1"],
                       flags={"out": str(tmp_path / "runs")})
    from domadapt.pipeline import run, run_dir_for

    run(cfg, progress=False)
    volume = (np.random.default_rng(0).random((4, 96, 96)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    code, out, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint",
                             str(run_dir_for(cfg) / "checkpoints/segmentation/last.pt"),
                             "--input", str(tmp_path / "in.tif"), "--output", str(tmp_path / "lab.tif"),
                             "--voxel-size", "30,10,10", "--instances", "--measure",
                             str(tmp_path / "mito.csv"), "--quiet")
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "lab.tif") as tif:
        labels = tif.asarray()
        assert labels.dtype == np.uint32 and labels.shape == volume.shape
        assert tif.pages[0].tags["XResolution"].value[0] > 0
        assert tif.shaped_metadata[0]["spacing"] == pytest.approx(0.03)
    assert (tmp_path / "mito.csv").is_file() and (tmp_path / "mito_summary.json").is_file()
    assert not (tmp_path / "lab.tif.binary.tif").exists()


def test_labels_on_disk_are_measured_object_by_object_like_in_memory(tmp_path, monkeypatch, capsys):
    from conftest import run_cli

    from domadapt.data.io import lazy_image
    from domadapt.data.writers import write_volume

    labels = np.zeros((40, 64, 64), np.uint32)
    labels[_ball(labels.shape, (15, 20, 20), 120, ISO)] = 1_000_000  # crosses a slab border
    labels[_ball(labels.shape, (30, 45, 40), 90, ISO)] = 7
    labels[2:5, 50:60, 2:12] = 3
    write_volume(tmp_path / "labels.ome.zarr", labels, ISO)
    on_disk = lazy_image(tmp_path / "labels.ome.zarr")
    assert not isinstance(on_disk, np.ndarray)
    assert measure(on_disk, ISO) == measure(labels, ISO)
    assert [r["label"] for r in measure(on_disk, ISO)] == [3, 7, 1_000_000]
    code, out, err = run_cli(monkeypatch, capsys, "measure", str(tmp_path / "labels.ome.zarr"),
                             "--out", str(tmp_path / "m.csv"))  # its voxel size is in its metadata
    assert code == 0, err
    assert len(list(csv.DictReader((tmp_path / "m.csv").open()))) == 3
