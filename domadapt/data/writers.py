"""Chunked, resumable volume outputs chosen by suffix: HDF5 and OME-Zarr.

A prediction of a volume of hundreds of GB runs for hours; a kill must not throw
that away. Slices are written into ``<out>.partial`` and each finished slice is
recorded in ``<out>.progress.json`` (replaced atomically), so a rerun with the same
settings predicts only what is missing; the output appears under its own name only
when complete. OME-Zarr gets a resolution pyramid and its voxel size written by the
``ome-zarr`` library, HDF5 the ``element_size_um`` attribute that ilastik and Fiji read.
Tif outputs stay in :mod:`domadapt.inference` (pages must be written in order).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from domadapt.errors import DataError

H5_OUTPUT = (".h5", ".hdf5")
#: Dataset inside an HDF5 output.
H5_KEY = "prediction"
#: In-plane chunk side of HDF5 and OME-Zarr outputs (one z slice deep: slices are the unit).
CHUNK = 512
#: Pyramid levels of an OME-Zarr output stop once a level's in-plane side is below this.
PYRAMID_MIN_SIDE = 256


def output_kind(path: str | Path) -> str:
    """"tif", "h5" or "zarr" from the output's suffix; anything else is refused in one sentence."""
    name = str(path).lower().rstrip("/")
    if name.endswith((".tif", ".tiff")):
        return "tif"
    if name.endswith(H5_OUTPUT):
        return "h5"
    if name.endswith(".zarr"):
        return "zarr"
    raise DataError(f"Output {path} has no known suffix; use .tif, .h5 or .ome.zarr.")


class ResumableWriter:
    """Writes (Y, X) slices of a (Z, Y, X) volume into ``<out>.partial``, resumably.

    ``fingerprint`` names everything the slices depend on (model, input, settings); a
    partial output left by a run with another fingerprint is discarded, never mixed in.
    """

    def __init__(self, out: str | Path, shape: tuple[int, int, int], dtype: Any,
                 voxel_size_nm: tuple[float, float, float], fingerprint: dict) -> None:
        self.out = Path(out)
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.voxel_size_nm = tuple(float(v) for v in voxel_size_nm)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.progress = self.out.with_name(self.out.name + ".progress.json")
        self.fingerprint = {**fingerprint, "shape": list(self.shape), "dtype": self.dtype.str}
        self.done: set[int] = self._resume()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if not self.done:
            self._discard()
            self._create()

    def _resume(self) -> set[int]:
        if not (self.progress.is_file() and self.partial.exists()):
            return set()
        try:
            state = json.loads(self.progress.read_text())
        except (OSError, ValueError):
            return set()
        if state.get("fingerprint") != self.fingerprint:
            return set()
        return {int(z) for z in state.get("done", [])}

    def pending(self) -> list[int]:
        """Slices still to write, in order."""
        return [z for z in range(self.shape[0]) if z not in self.done]

    def write(self, z: int, slice_yx: np.ndarray) -> None:
        self._write(z, np.asarray(slice_yx, self.dtype))
        self.done.add(int(z))
        tmp = self.progress.with_name(self.progress.name + ".tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "done": sorted(self.done)}))
        os.replace(tmp, self.progress)

    def finish(self) -> Path:
        """Complete the output (metadata, pyramid) and move it to its own name."""
        missing = self.pending()
        if missing:
            raise DataError(f"{len(missing)} slices of {self.out} were never written.")
        self._close()
        if self.out.is_dir():
            shutil.rmtree(self.out)
        elif self.out.exists():
            self.out.unlink()
        os.replace(self.partial, self.out)
        self.progress.unlink(missing_ok=True)
        return self.out

    def _discard(self) -> None:
        if self.partial.is_dir():
            shutil.rmtree(self.partial)
        else:
            self.partial.unlink(missing_ok=True)
        self.progress.unlink(missing_ok=True)

    def _create(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self, z: int, slice_yx: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Finalise the partial output before it is renamed."""


class H5Writer(ResumableWriter):
    """One chunked, compressed dataset ``prediction`` with the voxel size as attributes."""

    def _create(self) -> None:
        import h5py

        with h5py.File(self.partial, "w") as f:
            f.create_dataset(H5_KEY, shape=self.shape, dtype=self.dtype, compression="gzip",
                             compression_opts=1, chunks=_chunks(self.shape))

    def _write(self, z: int, slice_yx: np.ndarray) -> None:
        import h5py

        with h5py.File(self.partial, "r+") as f:  # closed after every slice: a kill leaves it valid
            f[H5_KEY][z] = slice_yx

    def _close(self) -> None:
        import h5py

        with h5py.File(self.partial, "r+") as f:
            f[H5_KEY].attrs["element_size_um"] = [v / 1000.0 for v in self.voxel_size_nm]
            f[H5_KEY].attrs["voxel_size_nm"] = list(self.voxel_size_nm)
            f[H5_KEY].attrs["axes"] = "zyx"


class OmeZarrWriter(ResumableWriter):
    """OME-Zarr image: level 0 written slice by slice, then a 2x in-plane pyramid."""

    def _create(self) -> None:
        import zarr

        root = zarr.open_group(str(self.partial), mode="w")
        root.create_array("0", shape=self.shape, chunks=_chunks(self.shape), dtype=self.dtype,
                          fill_value=0)

    def _write(self, z: int, slice_yx: np.ndarray) -> None:
        import zarr

        zarr.open_array(str(self.partial / "0"), mode="r+")[z] = slice_yx

    def _close(self) -> None:
        import zarr
        from ome_zarr.writer import write_multiscales_metadata

        root = zarr.open_group(str(self.partial), mode="r+")
        levels = [root["0"]]
        while min(levels[-1].shape[1:]) >= 2 * PYRAMID_MIN_SIDE:
            levels.append(self._downsample(root, levels[-1], len(levels)))
        vz, vy, vx = self.voxel_size_nm
        datasets = [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [vz, vy * 2**k, vx * 2**k]}]} for k in range(len(levels))]
        write_multiscales_metadata(root, datasets, axes=[
            {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"], name=self.out.name)

    def _downsample(self, root: Any, src: Any, level: int) -> Any:
        """Next level, slice by slice: nearest for labels (no invented ids), mean otherwise."""
        z, y, x = src.shape
        dst = root.create_array(str(level), shape=(z, y // 2, x // 2), dtype=self.dtype, overwrite=True,
                                chunks=_chunks((z, y // 2, x // 2)), fill_value=0)
        for k in range(z):
            s = np.asarray(src[k])[: y // 2 * 2, : x // 2 * 2]
            if np.issubdtype(self.dtype, np.integer) and self.dtype.itemsize > 1:
                dst[k] = s[::2, ::2]
            else:
                dst[k] = s.reshape(y // 2, 2, x // 2, 2).mean((1, 3)).round().astype(self.dtype)
        return dst


def _chunks(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (1, min(shape[1], CHUNK), min(shape[2], CHUNK))


def open_writer(out: str | Path, shape: tuple[int, int, int], dtype: Any,
                voxel_size_nm: tuple[float, float, float], fingerprint: dict) -> ResumableWriter:
    """The resumable writer for an ``.h5`` or ``.zarr`` output."""
    kind = output_kind(out)
    if kind == "zarr":
        _require("zarr", "ome_zarr")
        return OmeZarrWriter(out, shape, dtype, voxel_size_nm, fingerprint)
    if kind == "h5":
        return H5Writer(out, shape, dtype, voxel_size_nm, fingerprint)
    raise DataError(f"{out} is a tif: it is written in one pass, not by a resumable writer.")


def _require(*modules: str) -> None:
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in modules):
        raise DataError("OME-Zarr output needs the optional packages zarr and ome-zarr: "
                        "pip install 'domadapt[zarr]'.")


def write_volume(out: str | Path, volume: np.ndarray, voxel_size_nm) -> Path:
    """A whole in-memory volume (e.g. instance labels) into an ``.h5`` or ``.zarr`` output."""
    writer = open_writer(out, volume.shape, volume.dtype, voxel_size_nm,
                         {"volume": "in memory", "nonce": os.urandom(8).hex()})
    for z in writer.pending():
        writer.write(z, volume[z])
    return writer.finish()
