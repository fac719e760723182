"""The dataset registry: real copies under /work/shared/data, archive formats, user data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from domadapt.data.atomic import write_tif
from domadapt.data.registry import (
    dataset_info,
    dataset_names,
    get_spec,
    load_split,
    resolve_dataset,
)
from domadapt.data.user_volumes import load_dataset_yaml, load_user_volume
from domadapt.data.volume import IGNORE_LABEL, UnlabeledVolume, Volume
from domadapt.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LUCCHI = SHARED / "lucchi" / "Lucchi++"
VNC = SHARED / "vnc" / "groundtruth-drosophila-vnc-master" / "stack1"
HAS_SYNTHETIC = importlib.util.find_spec("domadapt.data.synthetic") is not None

needs_lucchi = pytest.mark.skipif(not LUCCHI.is_dir(), reason=f"no Lucchi++ copy at {LUCCHI}")
needs_vnc = pytest.mark.skipif(not VNC.is_dir(), reason=f"no VNC copy at {VNC}")


# ----------------------------------------------------------------- real Lucchi++


@pytest.fixture(scope="module")
def lucchi_train() -> Volume:
    return load_split("lucchi", "train", data_root=SHARED)  # 165 PNGs: load once


@needs_lucchi
def test_lucchi_train_shape_dtype_and_foreground(lucchi_train):
    assert lucchi_train.shape == (165, 768, 1024)
    assert lucchi_train.image.dtype == np.uint8
    counts = np.bincount(lucchi_train.mask.ravel(), minlength=256)  # cheaper than np.unique
    assert counts[0] > 0 and counts[1] > 0 and counts[2:].sum() == 0
    assert lucchi_train.voxel_size_nm == (5.0, 5.0, 5.0)
    assert lucchi_train.foreground_fraction() == pytest.approx(0.07, abs=0.005)


@needs_lucchi
def test_lucchi_train_is_not_swapped_with_test(lucchi_train):
    first = iio.imread(LUCCHI / "Train_In" / "mask0000.png")
    np.testing.assert_array_equal(lucchi_train.image[0], first)
    assert not np.array_equal(lucchi_train.image[0], iio.imread(LUCCHI / "Test_In/mask0000.png"))
    # label N.png pairs with maskNNNN.png: slice 10 must come from 10.png, not from 2.png
    label10 = iio.imread(LUCCHI / "Train_Out" / "10.png")
    np.testing.assert_array_equal(lucchi_train.mask[10], label10 > 0)


@needs_lucchi
def test_lucchi_test_split_reads_rgba_labels():
    vol = load_split("lucchi", "test", data_root=SHARED)
    assert vol.shape == (165, 768, 1024)
    assert vol.foreground_fraction() == pytest.approx(0.067, abs=0.005)


# ----------------------------------------------------------------- real VNC


@pytest.fixture(scope="module")
def vnc_half() -> dict[str, Volume]:
    return {s: load_split("vnc", s, data_root=SHARED) for s in ("train", "test")}


@needs_vnc
def test_vnc_half_split_is_left_and_right_half(vnc_half):
    raw0 = tifffile.imread(VNC / "raw" / "00.tif")
    assert vnc_half["train"].shape == vnc_half["test"].shape == (20, 1024, 512)
    np.testing.assert_array_equal(vnc_half["train"].image[0], raw0[:, :512])
    np.testing.assert_array_equal(vnc_half["test"].image[0], raw0[:, 512:])
    assert vnc_half["train"].voxel_size_nm == (45.0, 4.6, 4.6)


@needs_vnc
def test_vnc_mask_thresholds_anti_aliased_edges(vnc_half):
    label = iio.imread(VNC / "mitochondria" / "00.png")
    assert len(np.unique(label)) > 2  # the real file is anti-aliased
    np.testing.assert_array_equal(vnc_half["train"].mask[0], label[:, :512] > 127)


@needs_vnc
def test_vnc_sections_split_and_bad_option():
    assert load_split("vnc", "test", data_root=SHARED, vnc_split="sections").shape[0] == 4
    with pytest.raises(DataError, match="vnc_split"):
        load_split("vnc", "train", data_root=SHARED, vnc_split="thirds")
    with pytest.raises(DataError, match="stack2"):
        load_split("vnc", "unlabeled", data_root=SHARED)


@needs_vnc
def test_vnc_sections_train_has_16_sections():
    assert load_split("vnc", "train", data_root=SHARED, vnc_split="sections").shape[0] == 16


# ----------------------------------------------------------------- Kasthuri++ archive format


def _write_kasthuri(root: Path) -> Path:
    """Two 2-slice volumes in the Kasthuri++ archive format; Train and Test differ."""
    base = root / "kasthuri" / "Kasthuri++"
    for split, grey in (("Train", 50), ("Test", 200)):
        (base / f"{split}_In").mkdir(parents=True)
        (base / f"{split}_Out").mkdir(parents=True)
        for i in range(2):
            iio.imwrite(base / f"{split}_In" / f"mask{i:04d}.png", np.full((6, 5), grey, np.uint8))
            label = np.full((6, 5, 3), (0, 0, 0), np.uint8)
            label[0, :] = (255, 255, 255)  # mitochondria
            label[1, :] = (2, 2, 2)  # outside tissue
            label[2, :] = (255, 0, 0)  # some other colour: background
            iio.imwrite(base / f"{split}_Out" / f"{i}.png", label)
    return base


def test_kasthuri_archive_format(tmp_path):
    _write_kasthuri(tmp_path)
    train = load_split("kasthuri", "train", data_root=tmp_path)
    test = load_split("kasthuri", "test", data_root=tmp_path)
    assert train.image.max() == 50 and test.image.max() == 200  # not swapped
    assert (train.mask[:, 0] == 1).all() and (train.mask[:, 1] == IGNORE_LABEL).all()
    assert (train.mask[:, 2:] == 0).all()
    assert train.foreground_fraction() == pytest.approx(5 / 25)


def test_pairing_counts_must_match(tmp_path):
    base = _write_kasthuri(tmp_path)
    (base / "Train_Out" / "1.png").unlink()
    with pytest.raises(DataError, match="2 images but .* 1 labels"):
        load_split("kasthuri", "train", data_root=tmp_path)


def test_dataset_info_reads_statistics_or_says_where_it_looked(tmp_path):
    absent = dataset_info("kasthuri", data_root=tmp_path)
    assert absent["data_present"] is False
    assert absent["looked_in"] == str(tmp_path / "kasthuri" / "Kasthuri++")
    _write_kasthuri(tmp_path)
    info = dataset_info("kasthuri", data_root=tmp_path)
    assert info["splits"]["test"] == {
        "shape": [2, 6, 5],
        "dtype": "uint8",
        "foreground_fraction": 0.2,
    }
    assert "Casser" in info["citation"] and info["voxel_size_nm"] == [30.0, 3.0, 3.0]


# ----------------------------------------------------------------- names and errors


def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError, match="lucchi, kasthuri, vnc"):
        get_spec("lucci")
    assert {"lucchi", "kasthuri", "vnc"} <= set(dataset_names())


def test_missing_files_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_split("lucchi", "train", data_root=tmp_path)
    assert str(tmp_path / "lucchi" / "Lucchi++" / "Train_In") in str(err.value)
    assert "domadapt datasets download lucchi" in str(err.value)


def test_unknown_split_and_option(tmp_path):
    with pytest.raises(DataError, match="no split 'val'"):
        load_split("lucchi", "val", data_root=tmp_path)
    with pytest.raises(DataError, match="no option 'vnc_split'"):
        load_split("lucchi", "train", data_root=tmp_path, vnc_split="half")


@pytest.mark.skipif(not HAS_SYNTHETIC, reason="domadapt.data.synthetic not written yet")
def test_synthetic_entries_need_no_download(tmp_path):
    from domadapt.data import synthetic

    name = synthetic.domain_names()[0]
    spec = get_spec(name)
    assert spec.citation == "domadapt synthetic" and spec.synthetic
    assert spec.voxel_size_nm == tuple(synthetic.get_domain(name).geometry.voxel_size_nm)
    vol = load_split(name, "train", data_root=tmp_path, shape=(2, 32, 32))
    assert isinstance(vol, Volume) and vol.shape == (2, 32, 32)


# ----------------------------------------------------------------- user data


@pytest.fixture
def user_files(tmp_path) -> Path:
    write_tif(tmp_path / "img.tif", np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6))
    write_tif(tmp_path / "mask.tif", (np.arange(120).reshape(4, 5, 6) % 2 * 255).astype(np.uint8))
    write_tif(tmp_path / "small.tif", np.zeros((4, 5, 5), np.uint8))
    return tmp_path


@pytest.mark.parametrize("bad", [None, (4, 4), (30, -4, 4), "abc"])
def test_user_volume_needs_a_valid_voxel_size(user_files, bad):
    with pytest.raises(DataError, match="voxel size"):
        load_user_volume(user_files / "img.tif", bad)


def test_user_volume_with_and_without_mask(user_files):
    vol = load_user_volume(user_files / "img.tif", (30, 4, 4), user_files / "mask.tif")
    assert isinstance(vol, Volume) and vol.foreground_fraction() == 0.5
    unlabeled = load_user_volume(user_files / "img.tif", [30, 4, 4])
    assert isinstance(unlabeled, UnlabeledVolume) and not hasattr(unlabeled, "mask")


def test_user_mask_shape_mismatch_names_both_shapes(user_files):
    with pytest.raises(DataError, match=r"\(4, 5, 5\).*\(4, 5, 6\)"):
        load_user_volume(user_files / "img.tif", (30, 4, 4), user_files / "small.tif")


def _yaml(folder: Path, text: str) -> Path:
    sub = folder / "conf"
    sub.mkdir(exist_ok=True)
    (sub / "ds.yaml").write_text(text)
    return sub / "ds.yaml"


def test_dataset_yaml_relative_paths_and_split(user_files):
    path = _yaml(
        user_files,
        "image: ../img.tif\nmask: ../mask.tif\nvoxel_size_nm: [30, 4, 4]\n"
        "split: {train: [0, 3], test: [3, 4]}\n",
    )
    spec = load_dataset_yaml(path)
    assert spec["image"].resolve() == (user_files / "img.tif").resolve()
    assert resolve_dataset(str(path), "train").shape == (3, 5, 6)
    assert resolve_dataset(str(path), "test").shape == (1, 5, 6)


def test_dataset_yaml_without_split_uses_whole_volume(user_files):
    path = _yaml(user_files, "image: ../img.tif\nvoxel_size_nm: [30, 4, 4]\n")
    vol = resolve_dataset(str(path), "test")
    assert isinstance(vol, UnlabeledVolume) and vol.shape == (4, 5, 6)


def test_dataset_yaml_unknown_key_is_named(user_files):
    path = _yaml(user_files, "image: ../img.tif\nvoxel_size_nm: [30, 4, 4]\nvoxelsize: 3\n")
    with pytest.raises(DataError, match="'voxelsize'"):
        load_dataset_yaml(path)


def test_resolve_raw_path_needs_voxel_size(user_files):
    with pytest.raises(DataError, match="--source-voxel-size"):
        resolve_dataset(str(user_files / "img.tif"), "train")
    vol = resolve_dataset(
        str(user_files / "img.tif"), "test", voxel_size=(30, 4, 4), mask=user_files / "mask.tif"
    )
    assert isinstance(vol, Volume) and vol.shape == (4, 5, 6)
    with pytest.raises(DataError, match="neither a registered dataset"):
        resolve_dataset(str(user_files / "nope.tif"), "train")


def test_an_ome_zarr_target_brings_its_own_voxel_size(tmp_path):
    from domadapt.data.writers import write_volume

    image = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    write_volume(tmp_path / "cell.ome.zarr", image, (40.0, 8.0, 8.0))
    vol = resolve_dataset(str(tmp_path / "cell.ome.zarr"), "test")
    assert vol.voxel_size_nm == (40.0, 8.0, 8.0) and np.array_equal(vol.image, image)
