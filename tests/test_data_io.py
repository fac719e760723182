"""Readers and writers of domadapt.data.io: formats, colour rules and one-sentence errors."""

from __future__ import annotations

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from domadapt.data.atomic import TifStackWriter, write_tif, write_tif_slices
from domadapt.data.io import lazy_image, natural_key, read_image, read_mask
from domadapt.errors import DataError

RNG = np.random.default_rng(0)


def _stack(z: int = 3, y: int = 8, x: int = 6) -> np.ndarray:
    return RNG.integers(0, 255, size=(z, y, x), dtype=np.uint8)


# ----------------------------------------------------------------- tif / png


def test_tif_round_trip_is_atomic(tmp_path):
    data = _stack()
    path = write_tif(tmp_path / "out" / "vol.tif", data)
    np.testing.assert_array_equal(read_image(path), data)
    assert sorted(p.name for p in path.parent.iterdir()) == ["vol.tif"]  # no .partial left


def test_2d_files_become_one_slice(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _stack()[0])
    iio.imwrite(tmp_path / "b.png", _stack()[0])
    assert read_image(tmp_path / "a.tif").shape == (1, 8, 6)
    assert read_image(tmp_path / "b.png").shape == (1, 8, 6)


def test_png_folder_is_sorted_naturally(tmp_path):
    for i in (10, 2, 1):
        iio.imwrite(tmp_path / f"mask{i}.png", np.full((4, 5), i, np.uint8))
    assert read_image(tmp_path)[:, 0, 0].tolist() == [1, 2, 10]
    assert sorted(["mask10.png", "mask2.png"], key=natural_key) == ["mask2.png", "mask10.png"]


def test_rgb_image_equal_channels_taken_unequal_converted_to_grey(tmp_path):
    grey = _stack(1)[0]
    iio.imwrite(tmp_path / "g.png", np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[0], grey)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 255  # pure red -> luminance 0.299 * 255
    iio.imwrite(tmp_path / "c.png", colour)
    assert read_image(tmp_path / "c.png")[0, 0, 0] == 76


def test_slices_of_different_shapes(tmp_path):
    iio.imwrite(tmp_path / "0.png", np.zeros((4, 4), np.uint8))
    iio.imwrite(tmp_path / "1.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match="differ in shape"):
        read_image(tmp_path)


def test_corrupt_tif_names_the_file(tmp_path):
    bad = tmp_path / "x.tif"
    bad.write_bytes(b"this is not a tif at all")
    with pytest.raises(DataError, match="x.tif"):
        read_image(bad)


def test_empty_folder_missing_path_unknown_extension(tmp_path):
    with pytest.raises(DataError, match="no .png or .tif"):
        read_image(tmp_path)
    with pytest.raises(DataError, match="nowhere.tif"):
        read_image(tmp_path / "nowhere.tif")
    (tmp_path / "v.nii").write_bytes(b"x")
    with pytest.raises(DataError, match="supported"):
        read_image(tmp_path / "v.nii")


# ----------------------------------------------------------------- masks


@pytest.mark.parametrize("high", [1, 255])
def test_read_mask_accepts_0_1_and_0_255(tmp_path, high):
    mask = (_stack() > 128).astype(np.uint8) * high
    write_tif(tmp_path / "m.tif", mask)
    out = read_mask(tmp_path / "m.tif")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask > 0)


def test_read_mask_accepts_a_single_value_and_rgba(tmp_path):
    write_tif(tmp_path / "zeros.tif", np.zeros((2, 3, 3), np.uint8))
    assert read_mask(tmp_path / "zeros.tif").max() == 0
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, :3] = 255
    rgba[..., 3] = 255
    iio.imwrite(tmp_path / "m.png", rgba)
    assert read_mask(tmp_path / "m.png")[0].sum() == 8


def test_read_mask_rejects_three_values_naming_them(tmp_path):
    write_tif(tmp_path / "m.tif", np.array([[[0, 1, 7]]], np.uint8))
    with pytest.raises(DataError, match="0, 1, 7"):
        read_mask(tmp_path / "m.tif")


def test_read_mask_rejects_colour(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    iio.imwrite(tmp_path / "m.png", rgb)
    with pytest.raises(DataError, match="colour"):
        read_mask(tmp_path / "m.png")


# ----------------------------------------------------------------- h5 / zarr


def test_h5_with_key_single_dataset_and_ambiguous(tmp_path):
    data = _stack()
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["raw"] = data
        f["labels/mito"] = data > 100
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["raw"] = data
    np.testing.assert_array_equal(read_image(tmp_path / "two.h5", key="raw"), data)
    np.testing.assert_array_equal(read_image(tmp_path / "one.h5"), data)
    with pytest.raises(DataError, match="labels/mito"):
        read_image(tmp_path / "two.h5")
    with pytest.raises(DataError, match="no dataset 'nope'"):
        read_image(tmp_path / "two.h5", key="nope")


def test_zarr_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    data = _stack()
    arr = zarr.open(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, dtype=data.dtype)
    arr[...] = data
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=data.shape, dtype=data.dtype)[...] = data
    np.testing.assert_array_equal(read_image(tmp_path / "a.zarr"), data)
    np.testing.assert_array_equal(read_image(tmp_path / "g.zarr", key="raw"), data)
    np.testing.assert_array_equal(lazy_image(tmp_path / "g.zarr")[1:2], data[1:2])


# ----------------------------------------------------------------- lazy / streaming


def test_lazy_image_memmaps_tif_and_keeps_h5_on_disk(tmp_path):
    data = _stack()
    write_tif(tmp_path / "v.tif", data)
    lazy = lazy_image(tmp_path / "v.tif")
    assert isinstance(lazy, np.memmap)
    np.testing.assert_array_equal(lazy[1], data[1])
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = data
    lazy_h5 = lazy_image(tmp_path / "v.h5")
    assert isinstance(lazy_h5, h5py.Dataset)
    np.testing.assert_array_equal(lazy_h5[2], data[2])
    lazy_h5.file.close()


def test_write_tif_slices_streams_one_stack(tmp_path):
    data = _stack(4)
    path = write_tif_slices(tmp_path / "pred.tif", (s for s in data))
    np.testing.assert_array_equal(read_image(path), data)
    assert lazy_image(path).shape == data.shape


def test_interrupted_stack_leaves_nothing(tmp_path):
    def slices():
        yield np.zeros((4, 4), np.uint8)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_tif_slices(tmp_path / "pred.tif", slices())
    with pytest.raises(DataError, match="No slices"):
        with TifStackWriter(tmp_path / "empty.tif"):
            pass
    assert list(tmp_path.iterdir()) == []
