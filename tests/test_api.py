"""The Python API: load_model on a run folder or checkpoint, predict arrays and files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import domadapt
from domadapt.data.prepare import prepare_data
from domadapt.errors import RunFolderError
from domadapt.pipeline import run, run_dir_for


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from domadapt.config import build_config

    out = tmp_path_factory.mktemp("api")
    cfg = build_config(profile="smoke", overrides=["train.threads=1"], flags={"out": str(out)})
    run(cfg, progress=False)
    return cfg, run_dir_for(cfg)


def test_load_model_predicts_what_the_run_predicted(finished):
    cfg, folder = finished
    model = domadapt.load_model(folder)
    assert model.source.name.startswith("best-") and model.pixel_size_nm == cfg.data.pixel_size_nm
    test = prepare_data(cfg).target_test_original.image
    probs = model.predict(test.image, voxel_size=test.voxel_size_nm)
    written = tifffile.imread(folder / "predictions" / "target_test_prob.tif").reshape(probs.shape)
    assert probs.dtype == np.float32 and probs.shape == test.image.shape
    assert np.abs(np.round(probs * 255) - written.astype(float)).max() <= 1


def test_predict_file_writes_the_same_probabilities(finished, tmp_path):
    _, folder = finished
    model = domadapt.load_model(folder)
    volume = np.random.default_rng(0).integers(0, 255, (3, 96, 80), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    out = model.predict_file(tmp_path / "in.tif", tmp_path / "out.tif", progress=False)
    written = tifffile.imread(out)
    assert written.shape == volume.shape and written.dtype == np.uint8
    assert np.abs(np.round(model.predict(volume) * 255) - written.astype(float)).max() <= 1
    binary = model.predict_file(tmp_path / "in.tif", tmp_path / "bin.tif", binary=True, progress=False)
    assert set(np.unique(tifffile.imread(binary))) <= {0, 255}


def test_load_model_names_what_is_missing(tmp_path):
    with pytest.raises(RunFolderError, match="no such run folder or checkpoint"):
        domadapt.load_model(tmp_path / "nope")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(RunFolderError, match="not a finished"):
        domadapt.load_model(tmp_path / "unfinished")


def test_predict_file_writes_h5_and_ome_zarr_that_resume_after_a_kill(finished, tmp_path, monkeypatch):
    from domadapt.data import writers
    from domadapt.data.io import lazy_image, stored_voxel_size

    _, folder = finished
    model = domadapt.load_model(folder)
    volume = np.random.default_rng(1).integers(0, 255, (4, 80, 72), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    reference = tifffile.imread(model.predict_file(tmp_path / "in.tif", tmp_path / "ref.tif",
                                                   progress=False))
    h5 = model.predict_file(tmp_path / "in.tif", tmp_path / "out.h5", progress=False)
    assert np.array_equal(np.asarray(lazy_image(h5)[:]), reference)

    real_write, written = writers.ResumableWriter.write, []

    def killed_after_two(self, z, slice_yx):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(z)
        real_write(self, z, slice_yx)

    monkeypatch.setattr(writers.ResumableWriter, "write", killed_after_two)
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(KeyboardInterrupt):
        model.predict_file(tmp_path / "in.tif", out, progress=False)
    assert not out.exists()
    monkeypatch.setattr(writers.ResumableWriter, "write", real_write)
    asked = []
    real_predict = domadapt.inference.predict_volume
    monkeypatch.setattr(domadapt.inference, "predict_volume",
                        lambda *a, **k: asked.append(k["slices"]) or real_predict(*a, **k))
    model.predict_file(tmp_path / "in.tif", out, progress=False)
    assert asked == [[2, 3]]  # only the slices the kill left undone
    assert np.array_equal(np.asarray(lazy_image(out)[:]), reference)
    assert stored_voxel_size(out) == pytest.approx((model.pixel_size_nm,) * 3)


def test_an_ome_zarr_input_brings_its_voxel_size(finished, tmp_path):
    from domadapt.data.writers import write_volume

    _, folder = finished
    model = domadapt.load_model(folder)
    volume = np.random.default_rng(2).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    write_volume(tmp_path / "in.ome.zarr", volume, (50.0, 20.0, 20.0))
    implicit = model.predict_file(tmp_path / "in.ome.zarr", tmp_path / "a.tif", progress=False)
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    explicit = model.predict_file(tmp_path / "in.tif", tmp_path / "b.tif", progress=False,
                                  voxel_size=(50.0, 20.0, 20.0))
    assert np.array_equal(tifffile.imread(implicit), tifffile.imread(explicit))
    assert not np.array_equal(tifffile.imread(implicit), tifffile.imread(
        model.predict_file(tmp_path / "in.tif", tmp_path / "c.tif", progress=False)))
