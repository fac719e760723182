"""Per-mitochondrion measurements in physical units, and a summary of the volume.

One row per label of a uint32 instance volume: volume (µm³), surface area (µm², a
marching-cubes mesh of the lightly smoothed object, in physical spacing), equivalent
diameter (of the ball of the same volume), bounding box (voxels), centroid (µm),
mean solidity over the sections the object crosses (the 2-D shape measure the
reference paper's criterion uses), and elongation (longest over shortest principal
axis of its voxel cloud in µm). The summary holds the count, the density per µm³
and the volume fraction.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import marching_cubes, mesh_surface_area, regionprops

from domadapt.data.atomic import atomic_path

COLUMNS = ("label", "volume_um3", "surface_um2", "equivalent_diameter_um", "z0", "y0", "x0",
           "z1", "y1", "x1", "centroid_z_um", "centroid_y_um", "centroid_x_um",
           "mean_solidity", "elongation")


#: Sections read at a time when a label volume on disk is scanned for its objects.
SLAB = 16


def measure(labels: Any, voxel_size_nm: tuple[float, float, float]) -> list[dict]:
    """One dict per object (see :data:`COLUMNS`), in label order.

    ``labels`` may be an array on disk (zarr, h5py, memmap): it is scanned in slabs of
    :data:`SLAB` sections for the objects' bounding boxes, then each object is read
    alone, so memory is bounded by the largest object's box, not the volume.
    """
    spacing_um = np.asarray(voxel_size_nm, float) / 1000.0
    rows = []
    for label, box in sorted(bounding_boxes(labels).items()):
        obj = np.asarray(labels[box]) == label
        coords = np.argwhere(obj) + [s.start for s in box]
        volume = obj.sum() * float(np.prod(spacing_um))
        centroid = coords.mean(0) * spacing_um
        rows.append({
            "label": label, "volume_um3": volume, "surface_um2": surface_area(obj, spacing_um),
            "equivalent_diameter_um": (6.0 * volume / np.pi) ** (1 / 3),
            **dict(zip(("z0", "y0", "x0"), (s.start for s in box))),
            **dict(zip(("z1", "y1", "x1"), (s.stop for s in box))),
            "centroid_z_um": centroid[0], "centroid_y_um": centroid[1], "centroid_x_um": centroid[2],
            "mean_solidity": mean_section_solidity(obj),
            "elongation": elongation(coords * spacing_um)})
    return rows


def bounding_boxes(labels: Any) -> dict[int, tuple[slice, slice, slice]]:
    """Each label's bounding box, from slabs of sections (the whole array when in memory)."""
    if isinstance(labels, np.ndarray) and not isinstance(labels, np.memmap):
        return {i: box for i, box in enumerate(ndi.find_objects(labels), 1) if box is not None}
    boxes: dict[int, list[int]] = {}
    for z0 in range(0, labels.shape[0], SLAB):
        slab = np.asarray(labels[z0:z0 + SLAB])
        ids = np.unique(slab[slab > 0])
        if not len(ids):
            continue
        compact = np.searchsorted(ids, slab) + 1  # dense ids: find_objects needs no huge list
        compact[slab == 0] = 0
        for label, box in zip(ids.tolist(), ndi.find_objects(compact)):
            lo = [box[0].start + z0, box[1].start, box[2].start]
            hi = [box[0].stop + z0, box[1].stop, box[2].stop]
            old = boxes.get(label)
            boxes[label] = lo + hi if old is None else (
                [min(a, b) for a, b in zip(old[:3], lo)] + [max(a, b) for a, b in zip(old[3:], hi)])
    return {k: tuple(slice(v[i], v[i + 3]) for i in range(3)) for k, v in boxes.items()}


def surface_area(obj: np.ndarray, spacing_um: np.ndarray) -> float:
    """Area of the 0.5 iso-surface of the object smoothed by a 0.75-voxel Gaussian, so the mesh
    follows the shape rather than the voxel staircase (on voxelised balls of radius 5-15
    voxels, anisotropic 3:1 included, and a cylinder: within 3 % of the analytic area)."""
    padded = np.pad(obj.astype(np.float32), 3)
    smooth = ndi.gaussian_filter(padded, 0.75)
    if smooth.max() <= 0.5 or min(obj.shape) < 1:
        return 0.0
    verts, faces, _, _ = marching_cubes(smooth, 0.5, spacing=tuple(spacing_um))
    return float(mesh_surface_area(verts, faces))


def mean_section_solidity(obj: np.ndarray) -> float:
    """Mean over z-sections of area / convex-hull area of the object's largest 2-D part."""
    values = []
    for plane in obj:
        if plane.sum() >= 3:
            parts = regionprops(ndi.label(plane)[0])
            values.append(max(parts, key=lambda p: p.area).solidity)
    return float(np.mean(values)) if values else float("nan")


def elongation(points_um: np.ndarray) -> float:
    """sqrt(largest / smallest eigenvalue) of the covariance of the object's voxel centres
    (1 for a ball; a voxel's own extent is added so thin objects stay finite)."""
    if len(points_um) < 2:
        return 1.0
    cov = np.cov(points_um.T) + np.eye(3) * 1e-6
    eig = np.linalg.eigvalsh(cov)
    return float(np.sqrt(eig[-1] / eig[0]))


def summary(rows: list[dict], labels: Any, voxel_size_nm) -> dict:
    """Count, density (per µm³ of the imaged volume) and volume fraction."""
    total_um3 = int(np.prod(labels.shape)) * float(np.prod(voxel_size_nm)) / 1e9
    occupied = sum(r["volume_um3"] for r in rows)
    return {"count": len(rows), "imaged_volume_um3": total_um3,
            "density_per_um3": len(rows) / total_um3, "volume_fraction": occupied / total_um3}


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """One row per mitochondrion, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def write_labels(labels: np.ndarray, path: str | Path, voxel_size_nm) -> Path:
    """uint32 (Z, Y, X) labels with their voxel size, written atomically: a tif (µm, as Fiji
    and napari read it), or an ``.h5`` / ``.ome.zarr`` by suffix."""
    import tifffile

    from domadapt.data.writers import output_kind, write_volume

    if output_kind(path) != "tif":
        return write_volume(path, np.asarray(labels, np.uint32), voxel_size_nm)
    z, y, x = (float(v) / 1000.0 for v in voxel_size_nm)
    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(labels, np.uint32), resolution=(1.0 / x, 1.0 / y),
                         metadata={"axes": "ZYX", "spacing": z, "unit": "um"})
    return path


def measure_to_files(labels: Any, voxel_size_nm, csv_path: str | Path) -> dict:
    """Measure every object into ``csv_path`` and the summary into ``<csv stem>_summary.json``."""
    import json

    rows = measure(labels, voxel_size_nm)
    write_csv(rows, csv_path)
    result = summary(rows, labels, voxel_size_nm)
    Path(csv_path).with_name(Path(csv_path).stem + "_summary.json").write_text(
        json.dumps(result, indent=1))
    return result
