"""Inputs that once gave silent garbage: NaN voxels, implausible voxel sizes, short tif
stacks tagged as planar RGB, and h5/zarr key messages that named a flag run lacks."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
import tifffile
import torch

from domadapt.cli import _voxel_size
from domadapt.data.io import lazy_image, read_image, read_mask
from domadapt.data.volume import UnlabeledVolume, Volume, check_finite, check_voxel_size
from domadapt.errors import DataError
from domadapt.inference import predict_to_tif
from domadapt.models.unet import build_unet
from tests.conftest import run_cli

RNG = np.random.default_rng(0)

#: tifffile warns that it stores (3|4, Y, X) arrays as planar RGB by default; that default is the point.
PLANAR_DEFAULT = pytest.mark.filterwarnings("ignore:.*separate component planes:DeprecationWarning")


def _write_planar(path, data: np.ndarray) -> None:
    """What ``tifffile.imwrite(path, data)`` does today with a (3|4, Y, X) array, spelled out
    so the tests keep checking this layout if tifffile changes its default."""
    extra = {"extrasamples": ["unspecified"]} if data.shape[0] == 4 else {}
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate", **extra)


def _axes(path) -> str:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes


def _float_volume(z: int = 3, y: int = 8, x: int = 9) -> np.ndarray:
    return RNG.random((z, y, x), dtype=np.float32)


# ----------------------------------------------------------------- NaN / inf voxels


def test_check_finite_names_volume_count_and_first_position():
    image = _float_volume()
    image[2, 5, 5] = np.nan
    image[2, 6, 1] = np.inf
    with pytest.raises(DataError, match=r"'x.tif' holds 2 NaN or infinite voxel\(s\), "
                                        r"the first at \(z=2, y=5, x=5\)"):
        check_finite(image, "x.tif")
    with pytest.raises(DataError, match=r"\(z=7, y=5, x=5\)"):
        check_finite(image[2], "x.tif", z_offset=7)
    check_finite(_float_volume(), "clean")
    check_finite(np.zeros((2, 3, 3), np.uint8), "integers")


def test_volumes_refuse_non_finite_images():
    image = _float_volume()
    image[1, 0, 0] = -np.inf
    with pytest.raises(DataError, match="'t.tif' holds 1 NaN"):
        UnlabeledVolume(image, (30, 4, 4), "t.tif")
    with pytest.raises(DataError, match="'s.tif' holds 1 NaN"):
        Volume(image, np.zeros(image.shape, np.uint8), (30, 4, 4), "s.tif")


@pytest.mark.parametrize("norm_stats", [None, {"low": 0.0, "high": 1.0, "mean": 0.5, "std": 0.3}])
def test_streamed_prediction_refuses_nan_slice_and_leaves_no_file(tmp_path, norm_stats):
    torch.manual_seed(0)
    image = _float_volume(3, 16, 16)
    image[1, 3, 4] = np.nan
    out = tmp_path / "pred.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN may reach the model or the uint8 cast
        with pytest.raises(DataError, match=r"'vol.tif' holds 1 NaN.*\(z=1, y=3, x=4\)"):
            predict_to_tif(build_unet("unet", 4, 2, "batch"), image, out, voxel_size_nm=(5, 5, 5),
                           model_pixel_nm=5, tile=16, overlap=4, norm_stats=norm_stats,
                           name="vol.tif")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_predict_cli_refuses_nan_volume(monkeypatch, capsys, tmp_path):
    image = _float_volume()
    image[0, 1, 1] = np.nan
    tifffile.imwrite(tmp_path / "in.tif", image, photometric="minisblack")
    monkeypatch.setattr("domadapt.api.checkpoint_of", lambda ref: ref)  # no checkpoint file needed
    monkeypatch.setattr("domadapt.predict.model_from_checkpoint", lambda _: (
        build_unet("unet", 4, 2, "batch").eval(), {"pixel_size_nm": 5.0}))
    code, _, err = run_cli(monkeypatch, capsys, "predict", "--checkpoint", "c.pt", "--input",
                           str(tmp_path / "in.tif"), "--output", str(tmp_path / "out.tif"),
                           "--device", "cpu", "--quiet")
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err
    assert not (tmp_path / "out.tif").exists()


# ----------------------------------------------------------------- voxel sizes


@pytest.mark.parametrize("bad", [(1e-9, 1e-9, 1e-9), (1e9, 1e9, 1e9), (30, 0.05, 4)])
def test_implausible_voxel_sizes_are_refused(bad):
    with pytest.raises(DataError, match=r"in nanometres.*\[0.1, 10000\] nm"):
        check_voxel_size(bad)
    with pytest.raises(DataError, match="in nanometres"):
        UnlabeledVolume(_float_volume(), bad, "v")


def test_micrometre_voxel_size_gets_a_hint_and_edges_pass():
    with pytest.raises(DataError, match=r"looks like micrometres \(did you mean 30,4,4\?\)"):
        check_voxel_size((0.03, 0.004, 0.004))
    with pytest.raises(DataError) as excinfo:
        check_voxel_size((30, 0.05, 4))
    assert "micrometres" not in str(excinfo.value)
    assert check_voxel_size((0.1, 10000, 5)) == (0.1, 10000.0, 5.0)


def test_cli_voxel_size_shares_the_library_rule():
    assert _voxel_size("30, 4,4") == [30.0, 4.0, 4.0]
    with pytest.raises(DataError, match="did you mean 30,4,4"):
        _voxel_size("0.03,0.004,0.004")
    with pytest.raises(DataError, match="in nanometres"):
        _voxel_size("1e9,1e9,1e9")
    for bad in ("3,3", "3,-3,3", "a,b,c", "nan,3,3"):
        with pytest.raises(DataError, match="three positive numbers"):
            _voxel_size(bad)


# ----------------------------------------------------------------- short tif stacks


@PLANAR_DEFAULT
@pytest.mark.parametrize("depth", [3, 4])
def test_planar_tif_of_three_or_four_planes_is_a_z_stack(tmp_path, depth):
    data = RNG.integers(0, 255, size=(depth, 8, 9), dtype=np.uint8)
    mask = (data > 127).astype(np.uint8)
    _write_planar(tmp_path / "img.tif", data)
    _write_planar(tmp_path / "mask.tif", mask)
    assert _axes(tmp_path / "img.tif") == "SYX"
    with pytest.warns(UserWarning, match=f"stores {depth} planes tagged as planar RGB, "
                                         f"read as {depth} z-slices"):
        image = read_image(tmp_path / "img.tif")
    np.testing.assert_array_equal(image, data)
    with pytest.warns(UserWarning, match="planar RGB"):
        np.testing.assert_array_equal(read_mask(tmp_path / "mask.tif"), mask)
    with pytest.warns(UserWarning, match="planar RGB"):
        lazy = lazy_image(tmp_path / "img.tif")
    assert lazy.shape == image.shape == (depth, 8, 9)
    np.testing.assert_array_equal(lazy[1], data[1])


@PLANAR_DEFAULT
def test_planar_tif_warns_once_per_read(tmp_path):
    _write_planar(tmp_path / "img.tif", RNG.integers(0, 255, size=(3, 8, 9), dtype=np.uint8))
    for read in (read_image, lazy_image):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read(tmp_path / "img.tif")
        assert len(caught) == 1, read


def test_contiguous_colour_tif_stays_one_grey_slice(tmp_path):
    colour = np.zeros((8, 9, 3), np.uint8)
    colour[..., 0] = 255  # pure red -> luminance 0.299 * 255
    tifffile.imwrite(tmp_path / "c.tif", colour)
    assert _axes(tmp_path / "c.tif") == "YXS"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, lazy = read_image(tmp_path / "c.tif"), lazy_image(tmp_path / "c.tif")
    assert image.shape == lazy.shape == (1, 8, 9) and image[0, 0, 0] == 76
    grey = np.stack([np.full((8, 9), 255, np.uint8)] * 3, axis=-1)
    tifffile.imwrite(tmp_path / "m.tif", grey)
    assert read_mask(tmp_path / "m.tif").shape == (1, 8, 9)


@PLANAR_DEFAULT
def test_planar_tif_in_a_folder_of_slices_is_one_colour_slice(tmp_path):
    plane = RNG.integers(0, 255, size=(8, 9), dtype=np.uint8)
    _write_planar(tmp_path / "0.tif", np.stack([plane] * 3))
    tifffile.imwrite(tmp_path / "1.tif", plane)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stack = read_image(tmp_path)
    np.testing.assert_array_equal(stack, np.stack([plane, plane]))


# ----------------------------------------------------------------- h5 / zarr keys


def test_ambiguous_h5_message_names_predict_flag_and_yaml_key(tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((2, 4, 4), np.uint8)
        f["b"] = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(DataError) as excinfo:
        read_image(tmp_path / "two.h5")
    message = str(excinfo.value)
    assert "['a', 'b']" in message and "domadapt predict --key NAME" in message
    assert "`key: NAME` in a dataset YAML for domadapt run" in message
    assert "pass the one to use as key" not in message


def test_ambiguous_zarr_message_names_predict_flag_and_yaml_key(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(2, 4, 4), dtype=np.uint8)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the one to use "
                                        r"\(domadapt predict --key NAME, or `key: NAME`"):
        read_image(tmp_path / "g.zarr")
