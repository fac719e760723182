"""Classical intensity harmonizers between EM domains, fitted once and applied per tile.

Each harmonizer is a ``torch.nn.Module`` mapping normalised (B, 1, H, W) tiles
to tiles, so one object serves the tiled prediction, the target monitor and
the checkpoint that ``domadapt predict`` reloads. The pointwise ones
(histogram matching, mean/std, equalisation) are lookup tables fitted on whole
volumes: a pixel gets the same value whatever tile it falls in, so tiling adds
no seams and no tile sees a different mapping than its neighbour. Fourier
domain adaptation (FDA) is not pointwise; it works on tiles of one fixed size,
whose low-frequency amplitude spectrum it replaces with the reference
domain's mean spectrum at that size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from domadapt.errors import ConfigError

#: Knots of a fitted lookup table (enough for float intensities after resampling).
LUT_KNOTS = 2048


def intensity_sample(image: np.ndarray, n: int = 200_000, seed: int = 0) -> np.ndarray:
    """A seeded subsample of a volume's intensities (float32, 1D)."""
    flat = np.asarray(image, dtype=np.float32).ravel()
    if flat.size <= n:
        return flat.copy()
    return flat[np.random.default_rng(seed).choice(flat.size, size=n, replace=False)]


class IntensityMap(nn.Module):
    """A monotone piecewise-linear map y = f(x), constant beyond its first and last knot."""

    def __init__(self, xp: np.ndarray | torch.Tensor, fp: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        xp, fp = torch.as_tensor(xp, dtype=torch.float32), torch.as_tensor(fp, dtype=torch.float32)
        if xp.ndim != 1 or xp.shape != fp.shape or len(xp) < 2:
            raise ConfigError("An intensity map needs two matching 1D knot arrays of length >= 2.")
        self.register_buffer("xp", xp.contiguous())
        self.register_buffer("fp", fp.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.searchsorted(self.xp, x.contiguous()).clamp(1, len(self.xp) - 1)
        x0, x1 = self.xp[idx - 1], self.xp[idx]
        y0, y1 = self.fp[idx - 1], self.fp[idx]
        t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
        return y0 + t * (y1 - y0)


def _thin(xp: np.ndarray, fp: np.ndarray, knots: int = LUT_KNOTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``knots`` knots, spread evenly over the (sorted, unique) inputs."""
    if len(xp) <= knots:
        return xp, fp
    keep = np.unique(np.linspace(0, len(xp) - 1, knots).round().astype(int))
    return xp[keep], fp[keep]


def _distinct(values: np.ndarray) -> np.ndarray:
    if np.unique(values).size < 2:
        raise ConfigError("Cannot fit an intensity harmonizer on a constant image.")
    return values


def histogram_matching(moving: np.ndarray, reference: np.ndarray) -> IntensityMap:
    """The map that gives ``moving`` intensities the histogram of ``reference`` (scikit-image).

    ``match_histograms`` matches the two cumulative distributions of the samples;
    recording its output for every distinct input value turns it into a lookup
    table that can then be applied tile by tile.
    """
    from skimage.exposure import match_histograms

    moving, reference = _distinct(intensity_sample(moving)), intensity_sample(reference, seed=1)
    matched = match_histograms(moving, reference)
    xp, first = np.unique(moving, return_index=True)
    return IntensityMap(*_thin(xp, np.maximum.accumulate(matched[first])))


def equalization(image: np.ndarray, nbins: int = 1024) -> IntensityMap:
    """Global histogram equalisation of one domain (its own cumulative distribution)."""
    from skimage.exposure import cumulative_distribution

    cdf, centers = cumulative_distribution(_distinct(intensity_sample(image)), nbins=nbins)
    return IntensityMap(centers, cdf)


def mean_std_matching(moving: np.ndarray, reference: np.ndarray) -> IntensityMap:
    """The affine map giving ``moving`` the mean and standard deviation of ``reference``."""
    moving, reference = _distinct(intensity_sample(moving)), intensity_sample(reference, seed=1)
    scale = reference.std() / max(float(moving.std()), 1e-6)
    low, high = -0.5, 1.5  # the normalised range (transforms.normalize clips to it)
    xp = np.array([low, high], dtype=np.float32)
    return IntensityMap(xp, (xp - moving.mean()) * scale + reference.mean())


class FourierAmplitudeSwap(nn.Module):
    """FDA (Yang & Soatto, CVPR 2020): low-frequency amplitudes from the reference domain.

    The low frequencies carry what differs most between EM domains (overall
    brightness, contrast and shading) while the phase carries the structure,
    so the tile keeps its own phase and high frequencies. ``beta`` is the
    half-side of the swapped square, as a share of the tile side.
    """

    def __init__(self, amplitude: np.ndarray | torch.Tensor, beta: float) -> None:
        super().__init__()
        amplitude = torch.as_tensor(amplitude, dtype=torch.float32)
        if amplitude.ndim != 2 or amplitude.shape[0] != amplitude.shape[1]:
            raise ConfigError("FDA needs a square reference amplitude spectrum.")
        if not 0.0 <= beta < 0.5:
            raise ConfigError(f"Config key 'style.fda_beta' must be in [0, 0.5), got {beta}.")
        self.beta = float(beta)
        self.register_buffer("amplitude", amplitude)
        self.register_buffer("low", _low_frequency_mask(amplitude.shape[0], beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.amplitude.shape):
            raise ConfigError(f"FDA was fitted on {self.amplitude.shape[0]} px tiles and cannot "
                              f"harmonize {tuple(x.shape[-2:])} tiles; use inference.tile="
                              f"{self.amplitude.shape[0]}.")
        spectrum = torch.fft.fft2(x.float())
        amplitude = torch.where(self.low, self.amplitude, spectrum.abs())
        return torch.fft.ifft2(torch.polar(amplitude, spectrum.angle())).real.to(x.dtype)


def _low_frequency_mask(size: int, beta: float) -> torch.Tensor:
    """Boolean (size, size) mask of frequencies within ``beta * size`` of zero (unshifted layout)."""
    half = int(np.floor(beta * size))
    k = torch.arange(size)
    low = (k <= half) | (k >= size - half)
    return low[:, None] & low[None, :]


def mean_amplitude(image: np.ndarray, tile: int, n_tiles: int = 64, seed: int = 0) -> np.ndarray:
    """Mean FFT amplitude of ``n_tiles`` random ``tile``-sized crops of a (Z, Y, X) volume."""
    image = np.asarray(image, dtype=np.float32)
    pad_y, pad_x = max(0, tile - image.shape[1]), max(0, tile - image.shape[2])
    if pad_y or pad_x:
        image = np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode="reflect")
    rng = np.random.default_rng(seed)
    crops = np.stack([
        image[z, y:y + tile, x:x + tile]
        for z, y, x in zip(rng.integers(0, image.shape[0], n_tiles),
                           rng.integers(0, image.shape[1] - tile + 1, n_tiles),
                           rng.integers(0, image.shape[2] - tile + 1, n_tiles))])
    return np.abs(np.fft.fft2(crops)).mean(axis=0).astype(np.float32)


def fda(reference: np.ndarray, tile: int, beta: float, seed: int = 0) -> FourierAmplitudeSwap:
    """An FDA harmonizer toward ``reference``'s mean spectrum on ``tile``-sized tiles."""
    return FourierAmplitudeSwap(mean_amplitude(reference, tile, seed=seed), beta)
