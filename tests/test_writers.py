"""Resumable HDF5 and OME-Zarr outputs: slices survive a kill, metadata is what viewers read."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from domadapt.data.io import lazy_image, stored_voxel_size
from domadapt.data.writers import H5_KEY, open_writer, output_kind, write_volume
from domadapt.errors import DataError

VOXEL = (40.0, 8.0, 8.0)


def _volume(shape=(5, 64, 48)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


@pytest.mark.parametrize("name", ["pred.h5", "pred.ome.zarr"])
def test_a_killed_output_resumes_where_it_stopped(tmp_path, name):
    volume, out = _volume(), tmp_path / name
    first = open_writer(out, volume.shape, np.uint8, VOXEL, {"run": 1})
    for z in first.pending()[:3]:
        first.write(z, volume[z])
    del first  # killed here: nothing finished
    assert not out.exists() and (tmp_path / (name + ".partial")).exists()
    again = open_writer(out, volume.shape, np.uint8, VOXEL, {"run": 1})
    assert again.pending() == [3, 4]
    for z in again.pending():
        again.write(z, volume[z])
    assert again.finish() == out
    assert np.array_equal(np.asarray(lazy_image(out)[:]), volume)
    assert not (tmp_path / (name + ".partial")).exists()
    assert not (tmp_path / (name + ".progress.json")).exists()
    assert stored_voxel_size(out) == pytest.approx(VOXEL)


def test_other_settings_start_over_instead_of_mixing(tmp_path):
    volume, out = _volume(), tmp_path / "pred.h5"
    first = open_writer(out, volume.shape, np.uint8, VOXEL, {"threshold": 0.5})
    first.write(0, volume[0])
    other = open_writer(out, volume.shape, np.uint8, VOXEL, {"threshold": 0.7})
    assert other.pending() == list(range(5))
    with h5py.File(tmp_path / "pred.h5.partial", "r") as f:
        assert not f[H5_KEY][0].any()  # the other run's slice was discarded


def test_h5_output_carries_the_voxel_size_fiji_and_ilastik_read(tmp_path):
    out = write_volume(tmp_path / "labels.h5", _volume().astype(np.uint32), VOXEL)
    with h5py.File(out, "r") as f:
        assert f[H5_KEY].dtype == np.uint32
        assert list(f[H5_KEY].attrs["element_size_um"]) == pytest.approx([0.04, 0.008, 0.008])


def test_ome_zarr_output_is_a_multiscale_image(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    volume = np.zeros((2, 1100, 1030), np.uint32)
    volume[:, 100:300, 200:400] = 7
    out = write_volume(tmp_path / "labels.ome.zarr", volume, VOXEL)
    node = next(n for n in Reader(parse_url(str(out)))() if n.specs and isinstance(n.specs[0], Multiscales))
    levels = [np.asarray(level) for level in node.data]
    assert [lv.shape for lv in levels] == [(2, 1100, 1030), (2, 550, 515), (2, 275, 257)]
    assert set(np.unique(levels[2]).tolist()) == {0, 7}  # labels are subsampled, never averaged
    scales = [t[0]["scale"] for t in node.metadata["coordinateTransformations"]]
    assert scales[1] == pytest.approx([40.0, 16.0, 16.0])
    assert stored_voxel_size(out) == pytest.approx(VOXEL)
    assert lazy_image(out).shape == volume.shape  # read back as its full-resolution level


def test_unknown_output_suffix_is_one_sentence(tmp_path):
    assert output_kind("a.TIF") == "tif" and output_kind("a.ome.zarr/") == "zarr"
    with pytest.raises(DataError, match=r"use \.tif, \.h5 or \.ome\.zarr"):
        output_kind(tmp_path / "pred.png")


def test_a_kill_while_the_pyramid_is_built_finishes_on_the_rerun(tmp_path):
    volume, out = np.zeros((2, 1030, 1030), np.uint8), tmp_path / "pred.ome.zarr"
    first = open_writer(out, volume.shape, np.uint8, VOXEL, {"run": 1})
    for z in first.pending():
        first.write(z, volume[z])
    first._close()  # the pyramid was written, then the process died before the rename
    again = open_writer(out, volume.shape, np.uint8, VOXEL, {"run": 1})
    assert again.pending() == []
    assert again.finish() == out and lazy_image(out).shape == volume.shape
