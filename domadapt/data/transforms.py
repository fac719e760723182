"""Intensity normalisation and resampling to a common pixel size.

Source and target volumes come at different pixel sizes (Lucchi++ 5 nm,
Kasthuri++ 3 nm, VNC 4.6 nm); the network only generalises across them when a
mitochondrion spans the same number of pixels in both. Every volume is thus
resampled in y/x to ``pixel_size_nm`` before training and inference; z is left
alone because the models are 2D.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from domadapt.data.volume import IGNORE_LABEL

#: Percentiles mapped to 0 and 1 by :func:`normalize`.
LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.0


def intensity_stats(image: np.ndarray, max_samples: int = 2_000_000, seed: int = 0,
                    max_slices: int = 32) -> dict:
    """Robust intensity statistics of a volume from a seeded subsample.

    Large volumes (``image`` may be a memmap, an h5py or zarr dataset) are
    read one z-slice at a time, at most ``max_slices`` of them, and each slice
    is subsampled, so memory stays bounded by one slice; the percentiles this
    estimates are stable to well under one grey level.
    """
    shape = tuple(image.shape)
    if int(np.prod(shape)) <= max_samples:
        sample = np.asarray(image, dtype=np.float32).ravel()
    else:
        rng = np.random.default_rng(seed)
        depth = shape[0] if len(shape) == 3 else 1
        slices = np.sort(rng.choice(depth, size=min(depth, max_slices), replace=False))
        per_slice = max(1, max_samples // len(slices))
        parts = []
        for z in slices:
            plane = np.asarray(image[z] if len(shape) == 3 else image, dtype=np.float32).ravel()
            take = rng.choice(plane.size, size=min(per_slice, plane.size), replace=False)
            parts.append(plane[take])
        sample = np.concatenate(parts)
    low, high = np.percentile(sample, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        high = low + 1.0
    return {"low": float(low), "high": float(high), "mean": float(sample.mean()),
            "std": float(sample.std())}


#: How every volume is normalised (its own percentiles), as checkpoints record it.
NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.0}


def normalize(image: np.ndarray, stats: dict) -> np.ndarray:
    """Map the volume's 1st/99th percentiles to 0/1 (float32), clipping far outliers."""
    scaled = (np.asarray(image, dtype=np.float32) - stats["low"]) / (stats["high"] - stats["low"])
    return np.clip(scaled, -0.5, 1.5, out=scaled)


def scale_factor(voxel_size_nm: tuple[float, float, float], pixel_size_nm: float) -> float:
    """In-plane zoom factor that brings a volume's y/x pixel size to ``pixel_size_nm``."""
    return float(voxel_size_nm[2]) / float(pixel_size_nm)


def resized_shape(shape_yx: tuple[int, int], factor: float) -> tuple[int, int]:
    """Shape of a slice after zooming by ``factor`` (at least one pixel per side)."""
    return max(1, round(shape_yx[0] * factor)), max(1, round(shape_yx[1] * factor))


def resample_image(image: np.ndarray, factor: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """Zoom the y/x axes of a float (Z, Y, X) stack; area averaging when shrinking.

    ``size`` forces an exact output (Y, X), used to return predictions to the
    input grid.
    """
    if size is None:
        if abs(factor - 1.0) < 1e-6:
            return np.asarray(image, dtype=np.float32)
        size = resized_shape(image.shape[-2:], factor)
    if tuple(size) == tuple(image.shape[-2:]):
        return np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
    shrinking = size[0] < image.shape[-2]
    if shrinking:
        out = F.interpolate(tensor, size=size, mode="area")
    else:
        out = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def resample_mask(mask: np.ndarray, factor: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """Zoom a uint8 {0, 1, IGNORE} mask: foreground where its area fraction is >= 0.5.

    Interpolating the foreground and ignore indicators separately keeps thin
    mitochondria that nearest-neighbour subsampling would drop, and keeps
    ignore regions ignored.
    """
    if size is None and abs(factor - 1.0) < 1e-6:
        return mask
    foreground = resample_image((mask == 1).astype(np.float32), factor, size)
    ignore = resample_image((mask == IGNORE_LABEL).astype(np.float32), factor, size)
    out = (foreground >= 0.5).astype(np.uint8)
    out[ignore >= 0.5] = IGNORE_LABEL
    return out
