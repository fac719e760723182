"""Tiled, slice-by-slice inference of a 2D segmentation model on (Z, Y, X) volumes.

A full EM slice (e.g. 2048 x 2048) does not fit a network's training tile and a
whole volume does not fit in memory, so inference works one z-slice at a time:

1. read one slice (``image[z]`` works on numpy arrays, memmaps and h5py datasets),
2. normalise it with the volume's intensity statistics,
3. resample it from the volume's pixel size to the model's pixel size,
4. predict it in overlapping tiles whose outputs are blended with smooth weights
   (tile borders, where a CNN lacks context, count little, so no seams appear),
5. resample the probabilities back to the slice's original grid.

Memory is thus bounded by one slice (plus one batch of tiles), whatever the
volume depth. The model contract: a ``torch.nn.Module`` mapping float input
(B, 1, H, W) to logits (B, 1, H, W); tiles are ``tile x tile`` with ``tile`` a
multiple of 16, so any U-Net with four poolings accepts them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from domadapt.data.atomic import atomic_path
from domadapt.data.transforms import intensity_stats, normalize, resample_image, scale_factor
from domadapt.data.volume import check_finite, check_voxel_size
from domadapt.errors import NO_SPACE_ERRNOS, ConfigError, DataError, write_failure
from domadapt.models.inference_copy import autocast_for, inference_copy, prepare_input
from domadapt.tta import tta_views, with_tta

#: Tile side length must be a multiple of this (a U-Net with four 2x poolings).
TILE_MULTIPLE = 16


def blend_window(tile: int, overlap: int,
                 taper: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> np.ndarray:
    """(tile, tile) float32 blending weights: Hann ramps over ``overlap`` pixels, 1 inside.

    The ramp ``sin^2(pi (i + 0.5) / (2 overlap))`` rises from ~0 to ~1 over
    the first ``overlap`` pixels (mirrored at the far side); two tiles that
    overlap by exactly ``overlap`` pixels therefore sum to one there (a
    partition of unity), and the tile borders, where a CNN's zero padding
    corrupts its output, carry almost no weight next to the neighbour's ~1.
    The weights are never exactly 0. ``taper`` (top, bottom, left, right)
    turns a side's ramp off: tiles touching the image edge keep full weight
    there, since no neighbour exists to take over.
    """
    _check_tiling(tile, overlap)
    top, bottom, left, right = taper
    return np.outer(_ramp(tile, overlap, top, bottom),
                    _ramp(tile, overlap, left, right)).astype(np.float32)


def _ramp(tile: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D profile of :func:`blend_window`: 1 with optional Hann ramps at either end."""
    ramp = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        i = np.arange(overlap, dtype=np.float64)
        rise = np.sin(np.pi * (i + 0.5) / (2 * overlap)) ** 2
        if at_start:
            ramp[:overlap] = np.minimum(ramp[:overlap], rise)
        if at_end:
            ramp[tile - overlap:] = np.minimum(ramp[tile - overlap:], rise[::-1])
    return ramp


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` every ``stride`` pixels covering ``length``.

    The last tile is placed flush with the end (so it may overlap its
    neighbour by more than ``tile - stride``); an axis shorter than the tile
    gets a single tile at 0 and must be padded by the caller.
    """
    if stride <= 0 or tile <= 0:
        raise ConfigError(f"Tile ({tile}) and stride ({stride}) must be positive.")
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def predict_slice(
    model: torch.nn.Module,
    image2d: np.ndarray,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    amp: bool = False,
    tta: str = "none",
) -> np.ndarray:
    """Foreground probabilities (H, W) float32 of one normalised, resampled slice.

    ``image2d`` must already be at the model's pixel size and normalised (see
    :func:`predict_volume`). A slice smaller than ``tile`` along an axis is
    reflect-padded to ``tile`` and the result cropped back. ``overlap`` (pixels)
    is how much neighbouring tiles share; it should exceed the depth to which
    the network's border effects reach. ``amp`` enables float16 autocast on
    CUDA (ignored on CPU). ``tta`` averages every tile over flipped and turned views
    (:mod:`domadapt.tta`). The model must already be in eval mode on ``device``
    (:func:`predict_volume` takes care of both).
    """
    run = with_tta(lambda batch: _run_model(model, batch, device, amp), tta)
    return blend_tiles(run, image2d, tile, overlap, batch_size)


def blend_tiles(fn: Callable[[np.ndarray], np.ndarray], image2d: np.ndarray, tile: int = 256,
                overlap: int = 32, batch_size: int = 8) -> np.ndarray:
    """Apply a tile-to-tile map to a whole slice in overlapping, smoothly blended tiles.

    ``fn`` maps a (B, tile, tile) float32 batch to (B, tile, tile) outputs
    (probabilities of a segmenter, or images of a translator); blending with
    :func:`blend_window` keeps seams out of both.
    """
    _check_tiling(tile, overlap)
    image2d = np.asarray(image2d, dtype=np.float32)
    if image2d.ndim != 2:
        raise DataError(f"Tiled inference needs a 2D image, got shape {image2d.shape}.")
    height, width = image2d.shape
    padded = _pad_to_tile(image2d, tile)
    out_sum = np.zeros(padded.shape, dtype=np.float32)
    weight_sum = np.zeros(padded.shape, dtype=np.float32)
    ys = tile_starts(padded.shape[0], tile, tile - overlap)
    xs = tile_starts(padded.shape[1], tile, tile - overlap)
    corners = [(y, x) for y in ys for x in xs]
    windows: dict[tuple[bool, ...], np.ndarray] = {}  # at most 9 distinct tapers
    for first in range(0, len(corners), batch_size):
        batch_corners = corners[first:first + batch_size]
        batch = np.stack([padded[y:y + tile, x:x + tile] for y, x in batch_corners])
        outputs = fn(batch)
        for (y, x), output in zip(batch_corners, outputs):
            taper = (y != ys[0], y != ys[-1], x != xs[0], x != xs[-1])
            if taper not in windows:
                windows[taper] = blend_window(tile, overlap, taper)
            window = windows[taper]
            out_sum[y:y + tile, x:x + tile] += output * window
            weight_sum[y:y + tile, x:x + tile] += window
    return (out_sum / weight_sum)[:height, :width]


def predict_volume(
    model: torch.nn.Module,
    image: Any,
    *,
    voxel_size_nm: tuple[float, float, float],
    model_pixel_nm: float,
    norm_stats: dict | None = None,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    amp: bool = False,
    progress: bool = False,
    name: str = "input",
    cpu_bf16: bool = False,
    slices: Sequence[int] | None = None,
    tta: str = "none",
) -> Iterator[np.ndarray]:
    """Yield float32 probability maps, one per z-slice, on the input's original (Y, X) grid.

    ``slices`` limits the prediction to those z indices, in that order (a resumed
    output predicts only what is missing; normalisation still uses the whole volume).

    ``image`` is any (Z, Y, X) array-like indexable by ``image[z]`` (numpy
    array, ``np.memmap``, h5py dataset); a 2D image is treated as one slice.
    Only one slice is read and held at a time, so memory does not grow with
    the depth. ``voxel_size_nm`` (z, y, x in nm) and ``model_pixel_nm`` (nm)
    set the in-plane zoom applied before the model and undone after it.
    ``norm_stats`` defaults to :func:`~domadapt.data.transforms.intensity_stats`
    of the volume (a subsample, cheap on memmaps); pass the statistics used in
    training to reproduce validation exactly. The model is moved to ``device``
    (in place, as ``Module.to`` does) but otherwise left as it is (its train/eval
    mode included): prediction runs on an eval-mode
    :func:`~domadapt.models.inference_copy.inference_copy` (``cpu_bf16``: bfloat16
    on CPUs that compute it natively; ``tta``: test-time views averaged, see
    :mod:`domadapt.tta`). NaN or infinite voxels raise
    DataError naming ``name``: up front when the volume's own statistics
    reveal them, otherwise when their slice is reached.
    """
    _check_tiling(tile, overlap)
    tta_views(tta)
    voxel_size = check_voxel_size(voxel_size_nm)
    if not model_pixel_nm or model_pixel_nm <= 0:
        raise ConfigError(f"The model pixel size must be positive (nm), got {model_pixel_nm!r}.")
    if len(image.shape) not in (2, 3):
        raise DataError(f"Inference needs a 2D image or a (Z, Y, X) stack, "
                        f"got shape {image.shape}.")
    stack = image if len(image.shape) == 3 else np.asarray(image)[None]
    stats = norm_stats if norm_stats is not None else _volume_stats(stack, name)
    factor = scale_factor(voxel_size, model_pixel_nm)
    model.to(device)
    # Validation above runs eagerly; the slices are produced lazily below.
    todo = range(stack.shape[0]) if slices is None else list(slices)
    return _iter_slices(model, stack, stats, factor, progress,
                        (tile, overlap, batch_size, device, amp, tta), name, cpu_bf16, todo)


def _volume_stats(stack: Any, name: str) -> dict:
    """Intensity statistics of the volume, refusing it up front if they reveal NaN/inf voxels.

    Every slice would be normalised to NaN and predicted as garbage before the
    per-slice check in :func:`_iter_slices` reached the bad one.
    """
    stats = intensity_stats(stack)
    if not np.isfinite(list(stats.values())).all():
        for z in range(stack.shape[0]):
            check_finite(np.asarray(stack[z]), name, z_offset=z)
    return stats


def _iter_slices(model: torch.nn.Module, stack: Any, stats: dict, factor: float,
                 progress: bool, slice_args: tuple, name: str,
                 cpu_bf16: bool, todo: Sequence[int]) -> Iterator[np.ndarray]:
    """The generator behind :func:`predict_volume` (one slice read and held at a time)."""
    fast = inference_copy(model, slice_args[3], cpu_bf16)  # an eval-mode copy: model untouched
    for z in _progress(todo, progress):
        slice_yx = np.asarray(stack[z])
        check_finite(slice_yx, name, z_offset=z)
        model_input = resample_image(normalize(slice_yx, stats)[None], factor)[0]
        prob = predict_slice(fast, model_input, *slice_args)
        back = resample_image(prob[None], 1.0 / factor, size=slice_yx.shape)[0]
        yield np.clip(back, 0.0, 1.0, out=back)


def predict_to_array(model: torch.nn.Module, image: Any, **kwargs: Any) -> np.ndarray:
    """Collect :func:`predict_volume` into one float32 (Z, Y, X) array (small volumes only).

    Takes the same keyword arguments as :func:`predict_volume`.
    """
    depth = image.shape[0] if len(image.shape) == 3 else 1
    out = np.empty((depth, *image.shape[-2:]), dtype=np.float32)
    for z, prob in enumerate(predict_volume(model, image, **kwargs)):
        out[z] = prob
    return out


def predict_to_tif(
    model: torch.nn.Module,
    image: Any,
    out_path: str | os.PathLike,
    *,
    binary: bool = False,
    threshold: float = 0.5,
    **kwargs: Any,
) -> Path:
    """Write the prediction of a volume as a uint8 (Z, Y, X) tif, slice by slice; return its path.

    Pixel values are ``round(probability * 255)`` or, with ``binary=True``,
    255 where probability >= ``threshold`` and 0 elsewhere (viewable as is,
    and read back by :func:`domadapt.metrics.segmentation_scores` with the
    same threshold). Each slice is written as soon as it is predicted, so
    memory stays bounded by one slice. The file is written to a partial file
    beside ``out_path`` and renamed on success; on any failure, Ctrl-C
    included, the partial file is deleted, so an existing ``out_path`` is
    always a complete prediction. Other keyword arguments go to
    :func:`predict_volume`.
    """
    out_path = Path(out_path)
    shape = (image.shape[0] if len(image.shape) == 3 else 1, *image.shape[-2:])
    probs = predict_volume(model, image, **kwargs)
    pages = (_to_uint8(prob, binary, threshold) for prob in probs)
    big = int(np.prod(shape)) > 2**32 - 2**26
    try:
        with atomic_path(out_path) as partial, tifffile.TiffWriter(partial, bigtiff=big) as writer:
            writer.write(pages, shape=shape, dtype=np.uint8, photometric="minisblack",
                         metadata={"axes": "ZYX"})
    except BaseException as exc:
        probs.close()  # stops the generator now, not at garbage collection
        if isinstance(exc, OSError) and (exc.errno in NO_SPACE_ERRNOS or exc.errno is None):
            raise write_failure(out_path, exc) from None  # tifffile: "N requested and M written"
        raise
    return out_path


def predict_to_writer(model: torch.nn.Module, image: Any, writer: Any, *, binary: bool = False,
                      threshold: float = 0.5, **kwargs: Any) -> Path:
    """Predict the slices a resumable writer (:mod:`domadapt.data.writers`) still lacks, write
    each as soon as it is done (uint8 as :func:`predict_to_tif`), and complete the output.

    A kill loses at most the slice in flight; the rerun starts where this one stopped.
    """
    todo = writer.pending()
    probs = predict_volume(model, image, slices=todo, **kwargs) if todo else iter(())
    for z, prob in zip(todo, probs):
        writer.write(z, _to_uint8(prob, binary, threshold))
    return writer.finish()


def _to_uint8(prob: np.ndarray, binary: bool, threshold: float) -> np.ndarray:
    """One probability slice as uint8: 0/255 when ``binary``, else rounded prob * 255."""
    if binary:
        return np.where(prob >= threshold, np.uint8(255), np.uint8(0))
    return np.rint(prob * 255.0).astype(np.uint8)


def _check_tiling(tile: int, overlap: int) -> None:
    """Raise ConfigError unless tile is a positive multiple of 16 and 0 <= overlap < tile."""
    if tile <= 0 or tile % TILE_MULTIPLE:
        raise ConfigError(f"The inference tile must be a positive multiple of {TILE_MULTIPLE}, "
                          f"got {tile}.")
    if not 0 <= overlap < tile:
        raise ConfigError(f"The tile overlap must be in [0, tile={tile}), got {overlap}.")


def _pad_to_tile(image2d: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the bottom/right of a slice so both sides are at least ``tile``."""
    pad_y, pad_x = max(0, tile - image2d.shape[0]), max(0, tile - image2d.shape[1])
    if not (pad_y or pad_x):
        return image2d
    mode = "reflect" if min(image2d.shape) > 1 else "edge"
    return np.pad(image2d, ((0, pad_y), (0, pad_x)), mode=mode)


def _run_model(model: torch.nn.Module, batch: np.ndarray, device: str | torch.device,
               amp: bool) -> np.ndarray:
    """Sigmoid probabilities (B, tile, tile) float32 of a (B, tile, tile) batch of tiles."""
    device = torch.device(device)
    tensor = prepare_input(model, torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(device))
    with torch.inference_mode(), autocast_for(model, device, amp):
        logits = model(tensor)
    return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


def _progress(items: Sequence[int], enabled: bool) -> Any:
    """Wrap ``items`` in a tqdm bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="predict", unit="slice")


def harmonize_image(module: torch.nn.Module, image: np.ndarray, cfg: Any,
                    device: torch.device) -> np.ndarray:
    """A whole normalised (Z, Y, X) volume through an image-to-image ``module`` (a harmonizer),
    slice by slice, in tiles blended like prediction (``cfg.inference``'s tile and overlap)."""
    module = module.to(device).eval()
    inf = cfg.inference

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch))[:, None].to(device))
        return out[:, 0].float().cpu().numpy()

    return np.stack([blend_tiles(run, np.asarray(plane, np.float32), inf.tile, inf.overlap,
                                 inf.batch_size) for plane in image]).astype(np.float32)
