"""A user's own volumes: a path with a voxel size, or a dataset YAML that names the files,
their voxel size and a train/test split along z."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domadapt.data.io import read_image, read_mask
from domadapt.data.volume import AnyVolume, UnlabeledVolume, Volume, check_voxel_size
from domadapt.errors import DataError


def load_user_volume(
    image_path: str | Path,
    voxel_size_nm: Any,
    mask_path: str | Path | None = None,
    key: str | None = None,
    name: str | None = None,
    mask_key: str | None = None,
) -> AnyVolume:
    """A user's own volume (tif/h5/zarr/png folder) with an optional binary mask."""
    if voxel_size_nm is None:
        raise DataError(f"A voxel size (z,y,x in nm) is required for {image_path}.")
    voxel = check_voxel_size(voxel_size_nm, f"voxel size of {image_path}")
    name = name or Path(image_path).stem
    image = read_image(image_path, key)
    if mask_path is None:
        return UnlabeledVolume(image, voxel, name)
    return Volume(image, read_mask(mask_path, mask_key or key), voxel, name)


_YAML_KEYS = ("image", "mask", "voxel_size_nm", "key", "mask_key", "name", "split")


def load_dataset_yaml(path: str | Path) -> dict[str, Any]:
    """Read a dataset YAML; paths in it are relative to the YAML file's folder.

    Keys: ``image`` (required), ``mask``, ``voxel_size_nm`` [z, y, x] (required),
    ``key`` / ``mask_key`` (HDF5/zarr names), ``name``, and ``split``: a mapping
    ``{train: [z0, z1], test: [z0, z1]}`` of half-open slice ranges along z.
    Without ``split`` both train and test are the whole volume.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Dataset file {path} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"Dataset file {path} is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise DataError(f"Dataset file {path} must be a mapping of keys to values.")
    for key in raw:
        if key not in _YAML_KEYS:
            raise DataError(f"Unknown key '{key}' in {path}; allowed: {', '.join(_YAML_KEYS)}.")
    for key in ("image", "voxel_size_nm"):
        if key not in raw:
            raise DataError(f"Dataset file {path} lacks the required key '{key}'.")
    spec = {k: raw.get(k) for k in _YAML_KEYS}
    spec["image"] = path.parent / str(raw["image"])
    spec["mask"] = path.parent / str(raw["mask"]) if raw.get("mask") else None
    spec["voxel_size_nm"] = check_voxel_size(raw["voxel_size_nm"], f"voxel_size_nm in {path}")
    spec["name"] = str(raw.get("name") or path.stem)
    spec["split"] = _check_split(raw.get("split"), path)
    return spec


def _check_split(split: Any, path: Path) -> dict[str, tuple[int, int]] | None:
    if split is None:
        return None
    if not isinstance(split, dict) or set(split) != {"train", "test"}:
        raise DataError(f"'split' in {path} must map exactly train and test to [z0, z1].")
    ranges = {}
    for name, rng in split.items():
        ok = isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) for v in rng)
        if not ok or not 0 <= rng[0] < rng[1]:
            raise DataError(f"split.{name} in {path} must be [z0, z1] with 0 <= z0 < z1.")
        ranges[name] = (rng[0], rng[1])
    return ranges


def from_dataset_yaml(path: Path, split: str, voxel_size: Any, mask: Any) -> AnyVolume:
    """``split`` of the volume a dataset YAML describes; ``voxel_size`` and ``mask`` override it."""
    spec = load_dataset_yaml(path)
    voxel, mask = voxel_size or spec["voxel_size_nm"], mask or spec["mask"]
    name = f"{spec['name']}-{split}"
    vol = load_user_volume(spec["image"], voxel, mask, spec["key"], name, spec["mask_key"])
    if spec["split"] is None:
        return vol
    z0, z1 = spec["split"][split]
    if z1 > vol.shape[0]:
        raise DataError(f"split.{split} [{z0}, {z1}] in {path} exceeds the {vol.shape[0]} slices.")
    if isinstance(vol, Volume):
        return Volume(vol.image[z0:z1], vol.mask[z0:z1], vol.voxel_size_nm, vol.name)
    return UnlabeledVolume(vol.image[z0:z1], vol.voxel_size_nm, vol.name)
