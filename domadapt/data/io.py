"""Read EM volumes: multi-page tifs, folders of slices, HDF5, zarr and OME-Zarr.

Every reader returns a (Z, Y, X) array (2D inputs become (1, Y, X)) and every
failure a user can cause (missing path, corrupt file, ragged slices, unknown
format) is one :class:`DataError` sentence naming the file, never a raw
traceback from the imaging library underneath. Writing lives in
:mod:`domadapt.data.atomic` (whole files) and :mod:`domadapt.data.writers`
(resumable chunked outputs).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.errors import DataError

TIF_SUFFIXES = (".tif", ".tiff")
SLICE_SUFFIXES = (".png", ".tif", ".tiff")
H5_SUFFIXES = (".h5", ".hdf5")
SUPPORTED = "a .tif/.tiff stack, a .png image, a folder of .png/.tif slices, .h5/.hdf5 or .zarr"

#: How colour slices become one channel: "grey" converts with luminance weights,
#: "equal" requires R=G=B (masks), "keep" returns the channels untouched.
ChannelMode = str
SliceConverter = Callable[[np.ndarray, bool, Path], np.ndarray]


def natural_key(path: str | Path) -> list[Any]:
    """Sort key that orders ``mask2.png`` before ``mask10.png`` (digits compared as numbers)."""
    name = Path(path).name
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_slices(folder: str | Path) -> list[Path]:
    """The .png/.tif files of ``folder`` in natural order; DataError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Folder {folder} does not exist.")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES]
    if not files:
        raise DataError(f"Folder {folder} holds no .png or .tif slices.")
    return sorted(files, key=natural_key)


def _number(path: Path) -> int | None:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def check_pairs(images: list[Path], labels: list[Path]) -> None:
    """Check that the i-th image and i-th label (natural order) belong together.

    Counts must match, and where both names carry a number (``mask0007.png``
    and ``7.png``) the numbers must agree, so a plain lexical sort (which puts
    ``10.png`` before ``2.png``) can never silently misalign labels.
    """
    if len(images) != len(labels):
        raise DataError(
            f"{images[0].parent} holds {len(images)} images but {labels[0].parent} holds "
            f"{len(labels)} labels."
        )
    for img, lab in zip(images, labels):
        if None not in (_number(img), _number(lab)) and _number(img) != _number(lab):
            raise DataError(f"Image {img} pairs with label {lab} by order but not by number.")


def _read_2d_file(path: Path) -> tuple[np.ndarray, bool]:
    """One image file as an array and whether its last axis holds colour channels.

    A file in a folder of slices is one slice by contract, so planes tagged as
    planar RGB(A) are colour channels here (unlike in a lone stack, see :func:`_read_tif`).
    """
    if path.suffix.lower() in TIF_SUFFIXES:
        return _channels_last(*_read_tif_file(path))
    try:
        import imageio.v3 as iio

        arr = np.asarray(iio.imread(path))
    except Exception as exc:  # the imaging libraries raise many unrelated types
        raise DataError(f"Could not read image file {path} ({_short(exc)}).") from None
    return arr, arr.ndim == 3 and arr.shape[-1] in (3, 4)


def _read_tif_file(path: Path) -> tuple[np.ndarray, str]:
    """A tif's first series and its axes string (e.g. "ZYX", "YXS", "SYX")."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tif.asarray(), tif.series[0].axes
    except Exception as exc:  # tifffile raises many unrelated types on a bad file
        raise DataError(f"Could not read image file {path} ({_short(exc)}).") from None


def _channels_last(arr: np.ndarray, axes: str) -> tuple[np.ndarray, bool]:
    """Colour samples, possibly stored as separate planes, moved to the last axis."""
    if "S" in axes:
        return np.moveaxis(arr, axes.index("S"), -1), True
    return arr, False


def _planes_as_slices(axes: str, shape: tuple[int, ...], path: Path) -> bool:
    """Whether a tif's leading planar RGB(A) samples are z-slices, warning when they are.

    tifffile stores any (3, Y, X) or (4, Y, X) array as planar RGB(A) unless told
    otherwise, while colour EM images are saved contiguous ("YXS"): leading samples
    are far more likely a short stack, and reading them as colour would silently
    collapse a target to a single slice.
    """
    if not (axes.startswith("S") and shape[0] in (3, 4)):
        return False
    warnings.warn(
        f"{path} stores {shape[0]} planes tagged as planar RGB, read as {shape[0]} z-slices; "
        f"convert a real colour image to grey first.", stacklevel=2,
    )
    return True


def _short(exc: BaseException) -> str:
    """The exception's type and first line, for a one-sentence error message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


def read_slices(
    files: list[Path], channels: ChannelMode = "grey", convert: SliceConverter | None = None
) -> np.ndarray:
    """Stack 2D slice files into (Z, Y, X), or (Z, Y, X, C) with ``channels="keep"``.

    ``convert(array, is_colour, path)`` replaces the channel rule with a
    per-slice conversion (e.g. an RGB label code to a mask), so a colour label
    stack never has to sit in memory with its channels.
    """
    if not files:
        raise DataError("No slice files were given.")
    stack: np.ndarray | None = None
    for z, path in enumerate(files):
        arr, colour = _read_2d_file(path)
        if arr.ndim != 2 + colour:
            raise DataError(f"Slice {path} is not a 2D image (shape {arr.shape}).")
        if convert is not None:
            arr = convert(arr, colour, path)
        elif channels != "keep":
            arr = collapse_channels(arr, colour, channels, path)
        if stack is None:
            stack = np.empty((len(files),) + arr.shape, dtype=arr.dtype)
            first = path
        elif arr.shape != stack.shape[1:]:
            raise DataError(
                f"Slices differ in shape: {first} is {stack.shape[1:]} but {path} is {arr.shape}."
            )
        stack[z] = arr
    return stack  # type: ignore[return-value]


def collapse_channels(arr: np.ndarray, colour: bool, mode: ChannelMode, path: Path) -> np.ndarray:
    """Reduce a trailing RGB(A) axis to one channel (alpha is dropped)."""
    if not colour:
        return arr
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    if mode == "equal":
        raise DataError(f"Mask {path} is a colour image with R, G and B differing; expected grey.")
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        grey = np.clip(np.rint(grey), np.iinfo(arr.dtype).min, np.iinfo(arr.dtype).max)
    return grey.astype(arr.dtype)


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"Path {path} does not exist.")


def _read_tif(path: Path) -> tuple[np.ndarray, bool]:
    arr, axes = _read_tif_file(path)
    planar = _planes_as_slices(axes, arr.shape, path)
    arr, colour = (arr, False) if planar else _channels_last(arr, axes)
    if arr.ndim - colour not in (2, 3):
        raise DataError(f"Tif {path} must hold a 2D image or a 3D stack, got shape {arr.shape}.")
    return arr, colour


#: How to choose among several arrays, for both verbs that read user volumes.
_NAME_ONE = ("name the one to use (domadapt predict --key NAME, or `key: NAME` in a dataset YAML "
             "for domadapt run)")


def _pick_h5_key(h5file: Any, path: Path, key: str | None) -> str:
    import h5py

    names: list[str] = []
    h5file.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    if key is not None:
        if key not in names:
            raise DataError(f"HDF5 file {path} has no dataset '{key}'; it holds {names}.")
        return key
    if len(names) != 1:
        raise DataError(f"HDF5 file {path} holds datasets {names}; {_NAME_ONE}.")
    return names[0]


def _open_h5(path: Path, key: str | None) -> Any:
    """The h5py dataset (not loaded) at ``key`` in ``path``."""
    import h5py

    try:
        h5file = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"Could not read HDF5 file {path} ({_short(exc)}).") from None
    try:
        return h5file[_pick_h5_key(h5file, path, key)]
    except DataError:
        h5file.close()
        raise


def _open_zarr(path: Path, key: str | None) -> Any:
    """The zarr array (not loaded) in ``path``, inside a group at ``key`` if needed."""
    try:
        import zarr
    except ImportError:
        raise DataError(
            f"Reading {path} needs the optional zarr package: pip install 'domadapt[zarr]'."
        ) from None
    try:
        node = zarr.open(str(path), mode="r")
        if key is not None:
            node = node[key]
    except KeyError:
        raise DataError(f"Zarr store {path} has no array '{key}'.") from None
    except Exception as exc:
        raise DataError(f"Could not read zarr store {path} ({_short(exc)}).") from None
    if not hasattr(node, "shape"):
        multiscales = _multiscales(node)
        if multiscales:  # OME-Zarr image: its full-resolution level
            return node[multiscales[0]["datasets"][0]["path"]]
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) != 1:
            raise DataError(f"Zarr group {path} holds arrays {arrays}; {_NAME_ONE}.")
        node = node[arrays[0]]
    return node


def _multiscales(group: Any) -> list:
    """The OME-Zarr multiscales list of a group (format 0.4 or 0.5), empty when there is none."""
    attrs = dict(group.attrs)
    return attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales") or []


#: Length units of OME-Zarr axes, in nm.
_UNIT_NM = {"nanometer": 1.0, "micrometer": 1000.0, "angstrom": 0.1, "millimeter": 1e6}


def stored_voxel_size(path: str | Path, key: str | None = None) -> tuple[float, float, float] | None:
    """The (z, y, x) voxel size in nm a volume file declares, or None.

    OME-Zarr: the scale of the full-resolution level, in its axes' units (none
    without units: a bare number is not a length). HDF5: an ``element_size_um``
    attribute (ilastik, Fiji). Other formats carry none that domadapt trusts.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return _ome_zarr_voxel(path, key)
    if suffix in H5_SUFFIXES:
        dataset = _open_h5(path, key)
        try:
            size = dataset.attrs.get("element_size_um")
            return None if size is None or len(size) != 3 else tuple(float(v) * 1000 for v in size)
        finally:
            dataset.file.close()
    return None


def _ome_zarr_voxel(path: Path, key: str | None) -> tuple[float, float, float] | None:
    import zarr

    group = zarr.open(str(path), mode="r")
    if key is not None or hasattr(group, "shape"):
        return None
    multiscales = _multiscales(group)
    if not multiscales:
        return None
    axes = multiscales[0].get("axes", [])
    transforms = multiscales[0]["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None or len(axes) != len(scale):
        return None
    space = [(a, s) for a, s in zip(axes, scale) if isinstance(a, dict) and a.get("type") == "space"]
    if len(space) != 3 or any(a.get("unit") not in _UNIT_NM for a, _ in space):
        return None
    return tuple(float(s) * _UNIT_NM[a["unit"]] for a, s in space)


def _as_zyx(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise DataError(f"{path} must hold a 2D image or a 3D (Z, Y, X) stack, got {arr.shape}.")
    return arr


def _read_any(path: str | Path, key: str | None, channels: ChannelMode) -> np.ndarray:
    path = Path(path)
    _require_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return _as_zyx(np.asarray(_open_zarr(path, key)[...]), path)
    if path.is_dir():
        return read_slices(list_slices(path), channels)
    if suffix in H5_SUFFIXES:
        dataset = _open_h5(path, key)
        with dataset.file:
            return _as_zyx(np.asarray(dataset[()]), path)
    if suffix in TIF_SUFFIXES:
        arr, colour = _read_tif(path)
        return _as_zyx(collapse_channels(arr, colour, channels, path), path)
    if suffix == ".png":
        return read_slices([path], channels)
    raise DataError(f"Unknown file type '{suffix}' for {path}; supported: {SUPPORTED}.")


def read_image(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read an image volume as (Z, Y, X); colour slices are converted to grey."""
    return _read_any(path, key, "grey")


def read_mask(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a binary mask as uint8 in {0, 1}; stored values may be {0, 1} or {0, 255}.

    Registered datasets with other conventions (anti-aliased edges, ignore
    colours) use their own rules in the registry, not this function.
    """
    return binarize_mask(_read_any(path, key, "equal"), Path(path))


def binarize_mask(arr: np.ndarray, path: Path) -> np.ndarray:
    """Map a {0,1} or {0,255} array to uint8 {0,1}; any other value set is a DataError."""
    values = np.unique(arr)
    if values.size > 2 or not set(values.tolist()) <= {0, 1, 255}:
        shown = ", ".join(str(v) for v in values[:8].tolist())
        raise DataError(
            f"Mask {path} must be binary (0/1 or 0/255) but holds {values.size} values: {shown}."
        )
    return (arr > 0).astype(np.uint8)


def lazy_image(path: str | Path, key: str | None = None) -> Any:
    """A (Z, Y, X) array-like that reads from disk on indexing, for volumes too big for memory.

    Uncompressed tifs are memory-mapped, HDF5 and zarr arrays are returned
    unloaded; anything else (and 2D data) is read with :func:`read_image`.
    """
    path = Path(path)
    _require_exists(path)
    suffix = path.suffix.lower()
    lazy: Any = None
    if suffix in TIF_SUFFIXES and path.is_file():
        lazy = _try_memmap(path)
    elif suffix in H5_SUFFIXES:
        lazy = _open_h5(path, key)
    elif suffix == ".zarr":
        lazy = _open_zarr(path, key)
    if lazy is not None and len(lazy.shape) == 3:
        return lazy
    if suffix in H5_SUFFIXES:
        lazy.file.close()
    return read_image(path, key)


def _try_memmap(path: Path) -> np.ndarray | None:
    """A memmap of an uncompressed grey (Z, Y, X) tif, or None to fall back to a full read.

    Colour tifs are not mapped: their samples axis would pass for a z or x axis.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            axes, shape = tif.series[0].axes, tif.series[0].shape
        lazy = tifffile.memmap(path, mode="r")
    except Exception:  # compressed, tiled or not a tif: fall back to a full read
        return None
    if "S" in axes and not (lazy.ndim == 3 and _planes_as_slices(axes, shape, path)):
        return None
    return lazy
