"""From dataset references to the four prepared splits of a run.

Every volume is normalised with its own intensity statistics and resampled in
y/x to the common pixel size. Target labels are split off here, into
:class:`TargetLabels`, which only the pipeline's final scoring step receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from domadapt.config import RunConfig, dataset_refs
from domadapt.data.registry import resolve_dataset
from domadapt.data.transforms import (
    intensity_stats,
    normalize,
    resample_image,
    resample_mask,
    scale_factor,
)
from domadapt.data.volume import UnlabeledVolume, Volume, stack_volumes
from domadapt.errors import DataError


@dataclass
class TargetTest:
    """The original target test volume (its own grid) and, if known, its labels."""

    image: UnlabeledVolume
    labels: np.ndarray | None
    stats: dict | None = None  # its intensity statistics, computed once in prepare_data


@dataclass
class PreparedData:
    source_train: Volume
    source_val: Volume | None
    target_train: UnlabeledVolume
    target_test: UnlabeledVolume
    target_test_original: TargetTest


def dataset_options(cfg: RunConfig, ref: str) -> dict[str, Any]:
    """Registry options of the run that apply to ``ref`` (a registered name or a path)."""
    from domadapt.data.registry import dataset_names, get_spec

    if ref not in dataset_names():
        return {}
    accepted = get_spec(ref).options
    options = {"vnc_split": cfg.data.vnc_split, "shape": cfg.data.synthetic_shape, "seed": 0}
    return {k: (tuple(v) if isinstance(v, list) else v)
            for k, v in options.items() if k in accepted and v is not None}


def _limit(volume, max_slices: int | None):
    if max_slices is None or volume.shape[0] <= max_slices:
        return volume
    if isinstance(volume, Volume):
        return Volume(volume.image[:max_slices], volume.mask[:max_slices],
                      volume.voxel_size_nm, volume.name)
    return UnlabeledVolume(volume.image[:max_slices], volume.voxel_size_nm, volume.name)


def prepare_image(volume: UnlabeledVolume | Volume, pixel_size_nm: float) -> tuple[np.ndarray, dict]:
    """Normalised float32 image at the common pixel size, and the statistics used."""
    stats = intensity_stats(volume.image)
    factor = scale_factor(volume.voxel_size_nm, pixel_size_nm)
    return resample_image(normalize(volume.image, stats), factor), stats


def _resampled_voxel(volume, pixel_size_nm: float) -> tuple[float, float, float]:
    return (volume.voxel_size_nm[0], pixel_size_nm, pixel_size_nm)


def prepare_labeled(volume: Volume, pixel_size_nm: float) -> tuple[Volume, dict]:
    image, stats = prepare_image(volume, pixel_size_nm)
    mask = resample_mask(volume.mask, scale_factor(volume.voxel_size_nm, pixel_size_nm),
                         size=image.shape[-2:])
    return Volume(image, mask, _resampled_voxel(volume, pixel_size_nm), volume.name), stats


def prepare_unlabeled(volume: UnlabeledVolume | Volume, pixel_size_nm: float) -> UnlabeledVolume:
    image, _ = prepare_image(volume, pixel_size_nm)
    return UnlabeledVolume(image, _resampled_voxel(volume, pixel_size_nm), volume.name)


def split_source(volume: Volume, fraction: float) -> tuple[Volume, Volume | None]:
    """Hold out the last z-slices as source_val (a contiguous block limits leakage)."""
    depth = volume.shape[0]
    n_val = int(round(fraction * depth))
    if fraction > 0 and depth > 1:
        n_val = min(max(1, n_val), depth - 1)
    if n_val == 0:
        return volume, None
    train = Volume(volume.image[:-n_val], volume.mask[:-n_val], volume.voxel_size_nm,
                   f"{volume.name}:source_train")
    val = Volume(volume.image[-n_val:], volume.mask[-n_val:], volume.voxel_size_nm,
                 f"{volume.name}:source_val")
    return train, val


def source_refs(cfg: RunConfig) -> list[str]:
    """The source datasets of a run: ``source`` may list several, comma-separated."""
    return dataset_refs(cfg.source)


def load_source(cfg: RunConfig, ref: str | None = None) -> Volume:
    """One labeled source: its ``data.source_splits`` stacked along z (train first)."""
    d = cfg.data
    ref = ref or source_refs(cfg)[0]
    parts = []
    for split in d.source_splits:
        source = resolve_dataset(ref, split, d.data_root, d.source_voxel_size,
                                 d.source_mask, **dataset_options(cfg, ref))
        if not isinstance(source, Volume):
            raise DataError(
                f"The source '{ref}' has no labels in its {split} split; a source needs "
                "a mask (--source-mask)."
            )
        parts.append(_limit(source, d.max_slices))
    return _stack(parts, ref)


def prepare_sources(cfg: RunConfig) -> tuple[Volume, Volume | None]:
    """Train and val splits of every source, each normalised on its own, then stacked.

    Several sources are stacked with :func:`~domadapt.data.volume.stack_volumes`
    (their samplers stay balanced).
    """
    trains, vals = [], []
    for ref in source_refs(cfg):
        volume, _ = prepare_labeled(load_source(cfg, ref), cfg.data.pixel_size_nm)
        train, val = split_source(volume, cfg.data.source_val_fraction)
        trains.append(train)
        vals.append(val)
    name = "+".join(source_refs(cfg))
    val = None if any(v is None for v in vals) else stack_volumes(vals, f"{name}:source_val")
    return stack_volumes(trains, f"{name}:source_train"), val


def _stack(parts: list[Volume], name: str) -> Volume:
    if len(parts) == 1:
        return parts[0]
    if len({p.shape[1:] for p in parts}) > 1 or len({p.voxel_size_nm for p in parts}) > 1:
        raise DataError(f"The splits of the source '{name}' differ in y/x shape or voxel size "
                        f"({', '.join(str(p.shape) for p in parts)}); they cannot be stacked.")
    return Volume(np.concatenate([p.image for p in parts]), np.concatenate([p.mask for p in parts]),
                  parts[0].voxel_size_nm, f"{name}:" + "+".join(p.name for p in parts))


def load_target(cfg: RunConfig, split: str):
    d = cfg.data
    mask = d.target_mask if split == "test" else None
    volume = resolve_dataset(cfg.target, split, d.data_root, d.target_voxel_size, mask,
                             **dataset_options(cfg, cfg.target))
    return _limit(volume, d.max_slices)


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Load, split, normalise and resample everything a run needs."""
    px = cfg.data.pixel_size_nm
    source_train, source_val = prepare_sources(cfg)
    target_train = prepare_unlabeled(load_target(cfg, "train"), px)
    test = load_target(cfg, "test")
    labels = test.mask if isinstance(test, Volume) else None
    original = UnlabeledVolume(test.image, test.voxel_size_nm, test.name)
    test_image, test_stats = prepare_image(original, px)
    target_test = UnlabeledVolume(test_image, _resampled_voxel(original, px), original.name)
    return PreparedData(source_train, source_val, target_train, target_test,
                        TargetTest(original, labels, test_stats))
