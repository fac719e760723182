"""The dataset registry: every dataset by name, with its provenance and its loader.

One entry per dataset carries what a paper needs (citation, licence, voxel
size, split definition) and what a machine needs (URL, sha256, folder layout,
loader). Each loader reads the files exactly as the official archive unpacks
under ``<data root>/<name>/``, so ``domadapt datasets download`` and a hand
placed copy work the same. Users' own volumes (tif/h5/zarr/png folder, or a
small dataset YAML) are first-class too: :func:`resolve_dataset` accepts a
registered name or a path wherever a dataset is expected.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.data.download import data_root as _data_root
from domadapt.data.download import extract_zip, fetch
from domadapt.data.io import (
    check_pairs,
    collapse_channels,
    list_slices,
    read_slices,
    stored_voxel_size,
)
from domadapt.data.user_volumes import from_dataset_yaml, load_user_volume
from domadapt.data.volume import IGNORE_LABEL, AnyVolume, UnlabeledVolume, Volume, check_voxel_size
from domadapt.errors import DataError

Loader = Callable[["DatasetSpec", Path, str, dict[str, Any]], AnyVolume]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one dataset; ``load`` reads one split of it."""

    name: str
    description: str
    voxel_size_nm: tuple[float, float, float]
    citation: str
    licence: str
    loader: Loader
    url: str | None = None
    sha256: str | None = None
    archive_name: str | None = None
    folder: str = ""
    splits: tuple[str, ...] = ("train", "test")
    split_note: str = ""
    ignore_note: str = "No pixels are ignored."
    options: tuple[str, ...] = ()

    @property
    def synthetic(self) -> bool:
        """Generated on the fly: nothing to download, always present."""
        return self.url is None

    def dataset_dir(self, root: Path) -> Path:
        """The folder the official archive unpacks to, under ``<root>/<name>/``."""
        return Path(root) / self.name / self.folder

    def load(self, root: Path, split: str, options: dict[str, Any]) -> AnyVolume:
        """Read ``split`` from the files under ``root``; DataError on bad split or option."""
        if split not in self.splits:
            raise DataError(f"Dataset '{self.name}' has no split '{split}'; use {self.splits}.")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise DataError(
                f"Dataset '{self.name}' has no option {unknown[0]!r}; "
                f"accepted options: {list(self.options) or 'none'}."
            )
        return self.loader(self, Path(root), split, options)


# --------------------------------------------------------------------------- helpers


def _folder(spec: DatasetSpec, root: Path, *parts: str) -> Path:
    """A folder of the dataset's layout, or a DataError saying where it was looked for."""
    folder = spec.dataset_dir(root).joinpath(*parts)
    if not folder.is_dir():
        raise DataError(
            f"Dataset '{spec.name}' not found: looked for {folder}; run `domadapt datasets "
            f"download {spec.name}` or unpack {spec.archive_name} ({spec.url}) so that "
            f"{spec.dataset_dir(root)} exists."
        )
    return folder


def _grey_over_127(arr: np.ndarray, colour: bool, path: Path) -> np.ndarray:
    """Lucchi++ / VNC label rule: grey or R=G=B(+alpha) labels, mitochondria where > 127."""
    return (collapse_channels(arr, colour, "equal", path) > 127).astype(np.uint8)


def _kasthuri_label(arr: np.ndarray, colour: bool, path: Path) -> np.ndarray:
    """Kasthuri++ label colours: white = mitochondria, (2,2,2) = outside tissue (ignored)."""
    rgb = arr[..., :3] if colour else arr[..., None]
    mask = np.zeros(rgb.shape[:2], dtype=np.uint8)
    mask[(rgb == 255).all(axis=-1)] = 1
    mask[(rgb == 2).all(axis=-1)] = IGNORE_LABEL
    return mask


# --------------------------------------------------------------------------- loaders


def _load_casser(spec: DatasetSpec, root: Path, split: str, options: dict[str, Any]) -> Volume:
    """Lucchi++ / Kasthuri++ layout: ``{Train,Test}_{In,Out}`` folders of PNG slices."""
    prefix = {"train": "Train", "test": "Test"}[split]  # explicit: never swap train and test
    images = list_slices(_folder(spec, root, f"{prefix}_In"))
    labels = list_slices(_folder(spec, root, f"{prefix}_Out"))
    check_pairs(images, labels)
    rule = _kasthuri_label if spec.name == "kasthuri" else _grey_over_127
    mask = read_slices(labels, convert=rule)
    return Volume(read_slices(images), mask, spec.voxel_size_nm, f"{spec.name}-{split}")


def _load_vnc(spec: DatasetSpec, root: Path, split: str, options: dict[str, Any]) -> AnyVolume:
    """Gerhard et al. 2013 stack1 with a fixed split (``vnc_split``: "half" or "sections")."""
    name = f"{spec.name}-{split}"
    if split == "unlabeled":
        folder = spec.dataset_dir(root) / "stack2" / "raw"
        if not folder.is_dir():
            raise DataError(f"The unlabeled VNC stack2 is absent: looked for {folder}.")
        return UnlabeledVolume(read_slices(list_slices(folder)), spec.voxel_size_nm, name)
    mode = options.get("vnc_split", "half")
    if mode not in ("half", "sections"):
        raise DataError(f"vnc_split must be 'half' or 'sections', got {mode!r}.")
    images = list_slices(_folder(spec, root, "stack1", "raw"))
    labels = list_slices(_folder(spec, root, "stack1", "mitochondria"))
    check_pairs(images, labels)
    if mode == "sections":
        chosen = slice(0, 16) if split == "train" else slice(16, None)
        images, labels = images[chosen], labels[chosen]
    image, mask = read_slices(images), read_slices(labels, convert=_grey_over_127)
    if mode == "half":
        mid = image.shape[2] // 2
        cols = slice(0, mid) if split == "train" else slice(mid, None)
        image, mask = image[:, :, cols].copy(), mask[:, :, cols].copy()
    return Volume(image, mask, spec.voxel_size_nm, name)


def _load_synthetic(spec: DatasetSpec, root: Path, split: str, options: dict[str, Any]) -> Volume:
    from domadapt.data import synthetic

    return synthetic.make_volume(
        spec.name, split, shape=options.get("shape"), seed=int(options.get("seed", 0))
    )


_CASSER = (
    "Casser, Kang, Pfister, Haehn 2018, 'Fast mitochondria segmentation for connectomics', "
    "arXiv:1812.06024 (MIDL 2020)"
)
_VNC_URL = "https://github.com/unidesigner/groundtruth-drosophila-vnc/archive/refs/heads/master.zip"
_REAL = (
    DatasetSpec(
        name="lucchi",
        description="Lucchi++: mouse CA1 hippocampus, FIB-SEM, with labels corrected by Casser.",
        voxel_size_nm=(5.0, 5.0, 5.0),
        citation=f"Lucchi et al. 2012, IEEE TMI 31(2):474-486; {_CASSER}.",
        licence="Not stated in the archive; see the EPFL CVLab EM dataset page.",
        loader=_load_casser,
        url="http://www.casser.io/files/lucchi_pp.zip",
        sha256="770ce9e98fc6f29c1b1a250c637e6c5125f2b5f1260e5a7687b55a79e2e8844d",
        archive_name="lucchi_pp.zip",
        folder="Lucchi++",
        split_note="train = Train_In/Train_Out (165 slices), test = Test_In/Test_Out (165).",
    ),
    DatasetSpec(
        name="kasthuri",
        description="Kasthuri++: mouse somatosensory cortex, ATUM-SEM, relabelled by Casser "
        "(voxel size as published for Kasthuri 2015; verify against the archive).",
        voxel_size_nm=(30.0, 3.0, 3.0),
        citation=f"Kasthuri et al. 2015, Cell 162(3):648-661; {_CASSER}.",
        licence="Not stated in the archive; see the Kasthuri++ / Casser dataset page.",
        loader=_load_casser,
        url="http://www.casser.io/files/kasthuri_pp.zip",
        sha256="bbb78fd205ec9b57feb8f93ebbdf1666261cbc3e0305e7f11583ab5157a3d792",
        archive_name="kasthuri_pp.zip",
        folder="Kasthuri++",
        split_note="train = Train_In/Train_Out, test = Test_In/Test_Out.",
        ignore_note=f"Label colour (2,2,2) = outside tissue -> {IGNORE_LABEL} (ignored).",
    ),
    DatasetSpec(
        name="vnc",
        description="Drosophila larva ventral nerve cord, serial-section TEM (stack1, 20 slices).",
        voxel_size_nm=(45.0, 4.6, 4.6),
        citation="Gerhard, Funke, Martel, Cardona, Fetter 2013, 'Segmented anisotropic ssTEM "
        "dataset of neural tissue', figshare, doi:10.6084/m9.figshare.856713.",
        licence="CC BY-NC-SA 3.0 (non-commercial).",
        loader=_load_vnc,
        url=_VNC_URL,
        sha256="f7bd0db03c86b64440a16b60360ad60c0a4411f89e2c021c7ee2c8d6af3d7e86",
        archive_name="groundtruth-drosophila-vnc-master.zip",
        folder="groundtruth-drosophila-vnc-master",
        splits=("train", "test", "unlabeled"),
        split_note="No official split. vnc_split='half' (default): columns 0-511 of every "
        "section train, 512-1023 test; vnc_split='sections': sections 0-15 train, 16-19 test. "
        "'unlabeled' = stack2/raw when present.",
        ignore_note="Masks are anti-aliased: value > 127 is mitochondria; no ignore label.",
        options=("vnc_split",),
    ),
)


def _synthetic_specs() -> list[DatasetSpec]:
    try:
        synthetic = importlib.import_module("domadapt.data.synthetic")
    except ModuleNotFoundError as exc:  # only tolerate the module itself being absent
        if exc.name != "domadapt.data.synthetic":
            raise
        return []
    specs = []
    for name in synthetic.domain_names():
        domain = synthetic.get_domain(name)
        specs.append(
            DatasetSpec(
                name=name,
                description=str(domain.description),
                voxel_size_nm=check_voxel_size(domain.geometry.voxel_size_nm),
                citation="domadapt synthetic",
                licence="Generated by domadapt (same licence as the package).",
                loader=_load_synthetic,
                split_note="train and test are independent draws of the same domain.",
                ignore_note="Exact masks; no pixels are ignored.",
                options=("shape", "seed"),
            )
        )
    return specs


def _specs() -> dict[str, DatasetSpec]:
    return {spec.name: spec for spec in (*_REAL, *_synthetic_specs())}


# --------------------------------------------------------------------------- public API


def dataset_names() -> list[str]:
    """All registered dataset names: real datasets first, then synthetic domains."""
    return list(_specs())


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; DataError listing the valid names when it is unknown."""
    specs = _specs()
    if name not in specs:
        raise DataError(f"Unknown dataset '{name}'; valid names: {', '.join(specs)}.")
    return specs[name]


def load_split(
    name: str, split: str, data_root: str | Path | None = None, **options: Any
) -> AnyVolume:
    """Load ``split`` ("train", "test", ...) of a registered dataset from the data root."""
    return get_spec(name).load(_data_root(data_root), split, options)


def download_dataset(name: str, data_root: str | Path | None = None) -> Path:
    """Fetch and unpack a dataset into its layout; return its folder (no-op when present)."""
    spec = get_spec(name)
    root = _data_root(data_root)
    target = spec.dataset_dir(root)
    if spec.synthetic or target.is_dir():
        return target
    archive = fetch(spec.url, spec.sha256, root / name / spec.archive_name)  # type: ignore[arg-type]
    extract_zip(archive, root / name)
    if not target.is_dir():
        raise DataError(f"Archive {archive} did not unpack to the expected folder {target}.")
    return target


def dataset_info(name: str, data_root: str | Path | None = None) -> dict[str, Any]:
    """Provenance of a dataset and, when its files are present, per-split statistics."""
    spec = get_spec(name)
    root = _data_root(data_root)
    info: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "voxel_size_nm": list(spec.voxel_size_nm),
        "citation": spec.citation,
        "licence": spec.licence,
        "url": spec.url,
        "splits_note": spec.split_note,
        "ignore_note": spec.ignore_note,
        "data_present": spec.synthetic or spec.dataset_dir(root).is_dir(),
    }
    if not spec.synthetic:
        info["looked_in"] = str(spec.dataset_dir(root))
    if info["data_present"]:
        info["splits"] = {split: _split_stats(spec, root, split) for split in spec.splits}
    return info


def _split_stats(spec: DatasetSpec, root: Path, split: str) -> dict[str, Any]:
    try:
        vol = spec.load(root, split, {})
    except DataError as exc:
        return {"available": False, "reason": str(exc)}
    stats: dict[str, Any] = {"shape": list(vol.shape), "dtype": str(vol.image.dtype)}
    if isinstance(vol, Volume):
        stats["foreground_fraction"] = round(vol.foreground_fraction(), 5)
    return stats


def resolve_dataset(
    ref: str,
    split: str,
    data_root: str | Path | None = None,
    voxel_size: Any = None,
    mask: str | Path | None = None,
    **options: Any,
) -> AnyVolume:
    """Load ``split`` of a registered name, a dataset YAML, or a volume path.

    For a YAML, ``voxel_size`` and ``mask`` override its entries. For a raw
    volume path ``voxel_size`` is required and both splits are the whole volume.
    """
    if ref in _specs():
        return load_split(ref, split, data_root, **options)
    if split not in ("train", "test"):
        raise DataError(f"User datasets have splits 'train' and 'test', not '{split}'.")
    path = Path(ref).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        return from_dataset_yaml(path, split, voxel_size, mask)
    if not path.exists():
        raise DataError(
            f"'{ref}' is neither a registered dataset ({', '.join(_specs())}) nor an existing path."
        )
    if voxel_size is None:  # an OME-Zarr's scale or an h5's element_size_um, if it has one
        voxel_size = stored_voxel_size(path, options.get("key"))
    if voxel_size is None:
        raise DataError(
            f"The voxel size of {path} is unknown; pass --source-voxel-size/--target-voxel-size "
            "as z,y,x in nm."
        )
    unknown = sorted(set(options) - {"key", "mask_key"})
    if unknown:
        raise DataError(f"Option {unknown[0]!r} does not apply to a volume path ({path}).")
    return load_user_volume(path, voxel_size, mask, name=f"{path.stem}-{split}", **options)
