"""Batch augmentation on the training device, driven by an explicit generator.

Geometric transforms (flips, 90-degree turns, rotation, zoom and a smooth
elastic field) act on image and label maps alike; intensity transforms act on
the image only and widen the range of appearances the network sees, which is
cheap insurance against the contrast, staining and noise shifts between EM
domains. Random numbers are drawn on the CPU from the caller's generator so a
resumed run replays the same augmentations; a transform that is off, or
applied with probability 1, draws nothing, so older recipes keep their stream.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

from domadapt.augment_options import AugmentConfig

CONTROL_POINTS = 4  # per side of the elastic field's grid (smooth at patch scale)
CURVE_KNOTS = 5  # knots of the random intensity curve, evenly spaced on [0, 1]


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _chosen(p: float, n: int, g: torch.Generator) -> torch.Tensor:
    """Which samples a transform of probability ``p`` applies to (no draw when p >= 1)."""
    return torch.ones(n, dtype=torch.bool) if p >= 1 else torch.rand(n, generator=g) < p


def _geometric(batch: dict[str, torch.Tensor], cfg: AugmentConfig, g: torch.Generator) -> None:
    n = batch["image"].shape[0]
    flips = torch.rand(n, 2, generator=g) < 0.5 if cfg.flip else torch.zeros(n, 2, dtype=bool)
    turns = torch.randint(4, (n,), generator=g) if cfg.rot90 else torch.zeros(n, dtype=torch.long)
    for key, tensor in list(batch.items()):
        out = []
        for i in range(n):
            t = tensor[i]
            if flips[i, 0]:
                t = t.flip(-1)
            if flips[i, 1]:
                t = t.flip(-2)
            if turns[i] and t.shape[-1] == t.shape[-2]:
                t = torch.rot90(t, int(turns[i]), dims=(-2, -1))
            out.append(t)
        batch[key] = torch.stack(out)


def _sampling_grid(n: int, h: int, w: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One grid for rotation, zoom and the elastic field, so each sample is resampled once."""
    chosen = _chosen(cfg.deform_p, n, g).float()
    angle = _uniform(n, -cfg.rotate, cfg.rotate, g) * math.pi / 180 * chosen
    zoom = 1 + _uniform(n, -cfg.scale, cfg.scale, g) * chosen
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic > 0:
        shift = (2 * torch.rand(n, 2, CONTROL_POINTS, CONTROL_POINTS, generator=g) - 1) * cfg.elastic
        shift = shift * chosen.view(n, 1, 1, 1) * torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1)
        field = F.interpolate(shift, size=(h, w), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    return grid


def _deform(batch: dict[str, torch.Tensor], cfg: AugmentConfig, g: torch.Generator) -> None:
    n, _, h, w = batch["image"].shape
    grid = _sampling_grid(n, h, w, cfg, g)
    for key, tensor in list(batch.items()):
        is_image = key.endswith("image")
        moved = F.grid_sample(tensor.float(), grid.to(tensor.device), align_corners=False,
                              mode="bilinear" if is_image else "nearest", padding_mode="reflection")
        batch[key] = moved if is_image else moved.to(tensor.dtype)


def _curve(image: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """A random monotone piecewise-linear intensity map (changes the histogram's shape)."""
    n = image.shape[0]
    knots = torch.linspace(0, 1, CURVE_KNOTS)
    values = knots + (2 * torch.rand(n, CURVE_KNOTS, generator=g) - 1) * strength
    values = values.sort(dim=1).values.to(image.device)
    position = image * (CURVE_KNOTS - 1)
    index = position.floor().clamp(0, CURVE_KNOTS - 2).long()
    frac = position - index
    flat = index.view(n, -1)
    low = values.gather(1, flat).view_as(image)
    high = values.gather(1, flat + 1).view_as(image)
    return low + (high - low) * frac


def _gain_field(image: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Multiply by a smooth random field: uneven staining or illumination across the patch."""
    n, _, h, w = image.shape
    amplitude = _uniform(n, 0, strength, g).view(n, 1, 1, 1)
    coarse = (2 * torch.rand(n, 1, CONTROL_POINTS, CONTROL_POINTS, generator=g) - 1) * amplitude
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    return image * (1 + field.to(image.device))


def _where(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen.view(-1, 1, 1, 1).to(old.device), new, old)


def _intensity(image: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    n = image.shape[0]
    shape = (n, 1, 1, 1)
    if cfg.contrast > 0:
        chosen = _chosen(cfg.contrast_p, n, g)
        scale = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(shape).to(image.device)
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        image = _where(chosen, (image - mean) * scale + mean, image)
    if cfg.brightness > 0:
        chosen = _chosen(cfg.brightness_p, n, g)
        shift = _uniform(n, -cfg.brightness, cfg.brightness, g).view(shape).to(image.device)
        image = _where(chosen, image + shift, image)
    if cfg.gamma > 0:
        chosen = _chosen(cfg.gamma_p, n, g)
        gamma = torch.exp(_uniform(n, -cfg.gamma, cfg.gamma, g)).view(shape).to(image.device)
        image = _where(chosen, image.clamp(0, 1.5) ** gamma, image)
    if cfg.curve > 0:
        chosen = _chosen(cfg.curve_p, n, g)
        image = _where(chosen, _curve(image, cfg.curve, g), image)
    if cfg.gain_field > 0:
        chosen = _chosen(cfg.gain_field_p, n, g)
        image = _where(chosen, _gain_field(image, cfg.gain_field, g), image)
    if cfg.blur > 0:
        chosen = _chosen(cfg.blur_p, n, g)
        sigma = _uniform(n, 1e-3, cfg.blur, g).to(image.device)
        size = 2 * int(3 * cfg.blur) + 1
        blurred = kornia.filters.gaussian_blur2d(image, (size, size), sigma[:, None].repeat(1, 2))
        image = _where(chosen, blurred, image)
    if cfg.noise > 0:
        chosen = _chosen(cfg.noise_p, n, g)
        std = _uniform(n, 0, cfg.noise, g).view(shape)
        noise = torch.randn(image.shape, generator=g) * std
        image = _where(chosen, image + noise.to(image.device), image)
    return image


def augment_batch(batch: dict[str, torch.Tensor], cfg: AugmentConfig,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Augment a batch in a new dict (``image`` and optional label maps such as ``mask``)."""
    out = dict(batch)
    if cfg.flip or cfg.rot90:
        _geometric(out, cfg, generator)
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.elastic > 0:
        _deform(out, cfg, generator)
    out["image"] = _intensity(out["image"], cfg, generator)
    return out
