"""bioimage.io export: the package validates, bioimage.io runs it, and it predicts as domadapt does."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import domadapt
from domadapt.cli import cli
from domadapt.errors import DataError

pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from domadapt.config import build_config
    from domadapt.pipeline import run, run_dir_for

    out = tmp_path_factory.mktemp("export")
    cfg = build_config(profile="smoke", overrides=["train.threads=1"], flags={"out": str(out)})
    run(cfg, progress=False)
    folder = run_dir_for(cfg)
    result = CliRunner().invoke(cli, ["export", str(folder), str(out / "model.zip"),
                                      "--author", "A. Researcher"])
    assert result.exit_code == 0, result.output
    return folder, out / "model.zip"


def _tensor(package, name: str) -> np.ndarray:
    return np.load(io.BytesIO(zipfile.ZipFile(package).read(name)))


def test_package_is_valid_and_bioimageio_runs_its_test(exported):
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    _, package = exported
    descr = load_description(package)
    assert descr.validation_summary.status == "valid-format"
    assert test_model(package).status == "passed"
    axes = {str(a.id): a for a in descr.inputs[0].axes}
    assert axes["y"].unit == "nanometer"
    assert descr.authors[0].name == "A. Researcher"


def test_test_output_is_what_domadapt_predict_gives(exported):
    folder, package = exported
    model = domadapt.load_model(folder)
    image, expected = _tensor(package, "test_input.npy"), _tensor(package, "test_output.npy")
    assert image.shape[-1] == model.settings["tile"]  # one tile: no blending to differ
    ours = model.predict(image[0], voxel_size=(model.pixel_size_nm,) * 3, device="cpu")
    assert np.abs(ours - expected[0]).max() <= 1 / 255


def test_package_records_the_label_free_choice(exported):
    folder, package = exported
    rdf = zipfile.ZipFile(package).read("rdf.yaml").decode()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert f"selection_criterion: {metrics['selection_criterion']}" in rdf
    assert "README.md" in zipfile.ZipFile(package).namelist()


def test_export_refuses_a_name_that_is_not_a_zip(exported, tmp_path):
    from domadapt.export import export_bioimageio

    folder, _ = exported
    with pytest.raises(DataError, match=r"\.zip"):
        export_bioimageio(folder, tmp_path / "model.yaml")


def test_a_style_transfer_model_carries_its_harmonizer(tmp_path):
    from bioimageio.core import test_model

    from domadapt.config import build_config
    from domadapt.export import export_bioimageio
    from domadapt.pipeline import run, run_dir_for

    cfg = build_config(profile="smoke", method="style_transfer", overrides=["train.threads=1"],
                       flags={"out": str(tmp_path)})
    run(cfg, progress=False)
    model = domadapt.load_model(run_dir_for(cfg))
    assert model.harmonized
    package = export_bioimageio(run_dir_for(cfg), tmp_path / "style.zip")
    assert test_model(package).status == "passed"
    image, expected = _tensor(package, "test_input.npy"), _tensor(package, "test_output.npy")
    ours = model.predict(image[0], voxel_size=(model.pixel_size_nm,) * 3, device="cpu")
    assert np.abs(ours - expected[0]).max() <= 1 / 255  # predict harmonizes: so did the package
    import torch

    from domadapt.export import normalise_like_bioimageio

    with torch.no_grad():  # the U-Net alone, without the harmonizer in front, predicts otherwise
        x = torch.from_numpy(normalise_like_bioimageio(image[0, 0]))[None, None]
        bare = torch.sigmoid(model.net[1](x))
    assert np.abs(bare.numpy()[0, 0] - expected[0, 0]).max() > 1 / 255
    assert "harmonizer" in zipfile.ZipFile(package).read("README.md").decode()
