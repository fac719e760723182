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
