"""In-memory volumes and the split vocabulary shared by the whole package.

A labeled :class:`Volume` carries its mask; an :class:`UnlabeledVolume` has no
mask attribute at all, so code that receives a target volume cannot reach its
labels even by accident (``hasattr(target, "mask")`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domadapt.errors import DataError

#: Mask value for pixels that carry no label (e.g. Kasthuri++ outside-tissue).
#: Excluded from every loss, metric and morphology statistic.
IGNORE_LABEL = 255

#: The four splits of a run, used in code, configs and logs alike.
SPLITS = ("source_train", "source_val", "target_train", "target_test")


#: Plausible voxel sizes in nm: below is sub-atomic (often micrometres typed as nm),
#: above is no longer electron microscopy. Outside it resampling yields garbage.
VOXEL_NM_RANGE = (0.1, 10000.0)


def check_voxel_size(voxel_size_nm: object, what: str = "voxel size") -> tuple[float, float, float]:
    """Return a (z, y, x) voxel size in nm as three plausible floats or raise DataError.

    An implausible size is refused rather than resampled, since it zooms every
    slice to a few pixels (or millions) and the prediction becomes constant.
    """
    try:
        values = tuple(float(v) for v in voxel_size_nm)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(
            f"The {what} must be three positive numbers z,y,x in nm, got {voxel_size_nm!r}."
        )
    low, high = VOXEL_NM_RANGE
    if not all(low <= v <= high for v in values):
        raise DataError(_implausible_voxel_size(values, what))
    return values  # type: ignore[return-value]


def _implausible_voxel_size(values: tuple[float, ...], what: str) -> str:
    """The refusal sentence, with a micrometre hint when every value is below the range."""
    low, high = VOXEL_NM_RANGE
    shown = ",".join(f"{v:g}" for v in values)
    message = f"The {what} is in nanometres and each value must lie in [{low:g}, {high:g}] nm, got {shown}"
    if all(v < low for v in values):
        scaled = ",".join(f"{v * 1000:g}" for v in values)
        message += f", which looks like micrometres (did you mean {scaled}?)"
    return message + "."


def check_finite(image: np.ndarray, name: str, z_offset: int = 0) -> None:
    """Raise DataError if a float image holds NaN or infinite voxels.

    One such voxel turns the intensity statistics into NaN, and the network
    then predicts 0 everywhere without any error; refusing names the culprit.
    ``z_offset`` is the z index of ``image[0]`` (or of a 2D ``image``), so a
    slice read on its own reports its position in the whole volume.
    """
    if not np.issubdtype(image.dtype, np.floating):
        return
    if np.isfinite(np.sum(image, dtype=np.float64)):
        return
    bad = ~np.isfinite(image)
    count = int(np.count_nonzero(bad))
    if count == 0:  # the sum overflowed on huge but finite values
        return
    first = np.unravel_index(int(np.argmax(bad)), bad.shape)
    z, y, x = (0, *first) if bad.ndim == 2 else first[-3:]
    raise DataError(
        f"Volume '{name}' holds {count} NaN or infinite voxel(s), the first at "
        f"(z={z + z_offset}, y={y}, x={x}); replace them (e.g. with the volume's median) "
        f"before segmenting."
    )


@dataclass
class UnlabeledVolume:
    """A (Z, Y, X) image stack with its physical voxel size and no labels."""

    image: np.ndarray
    voxel_size_nm: tuple[float, float, float]
    name: str = "volume"

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        if self.image.ndim != 3:
            raise DataError(
                f"Volume '{self.name}' must be a 2D image or a 3D stack, "
                f"got an array of shape {self.image.shape}."
            )
        if self.image.size == 0:
            raise DataError(f"Volume '{self.name}' is empty (shape {self.image.shape}).")
        check_finite(self.image, self.name)
        self.voxel_size_nm = check_voxel_size(self.voxel_size_nm, f"voxel size of '{self.name}'")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


@dataclass
class Volume:
    """A labeled (Z, Y, X) image stack.

    ``mask`` is uint8 with 0 = background, 1 = mitochondria and
    :data:`IGNORE_LABEL` for pixels without a label.
    """

    image: np.ndarray
    mask: np.ndarray
    voxel_size_nm: tuple[float, float, float]
    name: str = "volume"
    # Several labeled volumes stacked into this one (see :func:`stack_volumes`): samplers
    # draw from each part equally; the stack serves statistics, priors and monitors.
    parts: list[Volume] | None = None

    def __post_init__(self) -> None:
        if self.image.ndim == 2:
            self.image = self.image[None]
        if self.mask.ndim == 2:
            self.mask = self.mask[None]
        UnlabeledVolume(self.image, self.voxel_size_nm, self.name)  # same checks
        self.voxel_size_nm = check_voxel_size(self.voxel_size_nm, f"voxel size of '{self.name}'")
        if self.mask.shape != self.image.shape:
            raise DataError(
                f"Mask shape {self.mask.shape} differs from image shape {self.image.shape} "
                f"in '{self.name}'."
            )
        values = _distinct_values(self.mask)
        if not values <= {0, 1, IGNORE_LABEL}:
            raise DataError(
                f"Mask of '{self.name}' must hold only 0, 1 and {IGNORE_LABEL} (ignore), "
                f"found values {sorted(values)[:10]}."
            )
        self.mask = self.mask.astype(np.uint8, copy=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    def without_labels(self) -> UnlabeledVolume:
        """The same image with the labels stripped off (what a strategy sees of a target)."""
        return UnlabeledVolume(self.image, self.voxel_size_nm, self.name)

    def foreground_fraction(self) -> float:
        """Fraction of labeled pixels that are mitochondria (ignore pixels excluded)."""
        labeled = self.mask != IGNORE_LABEL
        n = int(labeled.sum())
        return float((self.mask == 1).sum() / n) if n else 0.0


def _distinct_values(mask: np.ndarray) -> set[int]:
    """Distinct mask values; a bincount is ~10x faster than np.unique on uint8 volumes."""
    if mask.dtype == np.uint8:
        return set(np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist())
    return set(np.unique(mask).tolist())


def stack_volumes(parts: list[Volume], name: str) -> Volume:
    """Volumes of different y/x sizes as one z-stack, padded to the largest size.

    Padding mirrors the image (so intensity statistics stay those of real
    tissue) and is labeled :data:`IGNORE_LABEL` (so no loss, metric or
    morphology statistic counts it). The parts are kept for balanced sampling.
    """
    if len(parts) == 1:
        return parts[0]
    height = max(p.shape[1] for p in parts)
    width = max(p.shape[2] for p in parts)

    def pad(part: Volume) -> tuple[np.ndarray, np.ndarray]:
        widths = ((0, 0), (0, height - part.shape[1]), (0, width - part.shape[2]))
        return (np.pad(part.image, widths, mode="symmetric"),
                np.pad(part.mask, widths, constant_values=IGNORE_LABEL))

    padded = [pad(p) for p in parts]
    return Volume(np.concatenate([i for i, _ in padded]), np.concatenate([m for _, m in padded]),
                  parts[0].voxel_size_nm, name, parts=list(parts))


#: A labeled or an unlabeled volume, as the registry and the loaders return them.
AnyVolume = Volume | UnlabeledVolume
